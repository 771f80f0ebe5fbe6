"""The recommender: a rankfm factorization machine with its training epoch compiled (``kernel``),
training in an isolated process (``training``) and folding new users' histories in (``foldin``);
user and item IDs are integers or strings, as the data had them (``ids``).

Scoring needs NumPy only; training imports rankfmc and numba when it starts.
"""

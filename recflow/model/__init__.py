"""The recommender: a rankfm factorization machine with its training epoch compiled (``kernel``),
training in an isolated process (``training``) and folding new users' histories in (``foldin``).

Scoring needs NumPy only; training imports rankfmc and numba when it starts.
"""

"""How many complete trials a study runs: ``n_trials``, a count or "auto".

In: the requested ``n_trials`` and the size of the training split the trials train on. Out: the
count, which the hpo step logs as ``study.n_trials`` and names its run with.
"""

from __future__ import annotations

from recflow.hpo.fidelity import AUTO, parse_count

# n_trials "auto": TRIALS complete trials, or SMALL_DATA_TRIALS while the (possibly sampled)
# training split has fewer than SMALL_DATA_ROWS rows, where a trial takes seconds. A default
# `main` with 40 trials against 20 at the choosing split seeds (test NDCG@10 over EASE's, what is
# served): real ML-1M users 1-1500 (174k training rows) 1.018x to 1.027x and 1.033x to 1.033x,
# real ML-100K random split 1.031x to 1.033x, 1.022x and 1.032x unchanged; never worse, for
# about 1.5x the time of `main` (ML-1M users 1-1500: 215-236 s to 320-385 s, two runs at once).
# ML-1M itself (~0.7M rows) keeps 20: its default `main` stays within 6 minutes.
TRIALS = 20
SMALL_DATA_TRIALS = 40
SMALL_DATA_ROWS = 300_000


def parse_trials(value: str) -> str | int:
    """'auto' or a positive integer; anything else is a one-line error."""
    return parse_count("n_trials", value, (AUTO,), minimum=1)


def auto_trials(n_train_rows: int) -> int:
    """The complete trials n_trials "auto" means for a training split of ``n_train_rows`` rows."""
    return SMALL_DATA_TRIALS if n_train_rows < SMALL_DATA_ROWS else TRIALS

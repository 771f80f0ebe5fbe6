"""Metric names: what users type (``ndcg@10``) and what is logged (``ndcg_at_10``)."""

from __future__ import annotations

from recflow.errors import UserError

METRICS = ("precision", "recall", "ndcg", "hit_rate", "mrr")


def metric_names(k: int) -> list[str]:
    """Names as logged to MLflow, e.g. ``ndcg_at_10``; ``@`` is not allowed in metric keys."""
    return [key(m, k) for m in METRICS]


def metric_key(name: str) -> str:
    """The logged key of a metric the user gave as ``ndcg@10`` (or as ``ndcg_at_10``)."""
    try:
        return key(*parse_metric(name))
    except ValueError as e:
        raise UserError(str(e)) from e


def key(base: str, k: int) -> str:
    """The logged key of ``base`` at ``k``: ``ndcg_at_10``."""
    return f"{base}_at_{k}"


def parse_metric(name: str) -> tuple[str, int]:
    """``"ndcg@10"`` or ``"ndcg_at_10"`` -> ("ndcg", 10)."""
    base, sep, k = name.replace("_at_", "@").partition("@")
    if base not in METRICS or not sep or not k.isdigit() or int(k) < 1:
        raise ValueError(
            f"unknown metric {name!r}; use <metric>@<k> with metric one of {', '.join(METRICS)}"
        )
    return base, int(k)

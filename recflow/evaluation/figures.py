"""train_best's pictures for the MLflow UI: the tested model beside the popularity baseline.

In: train_best's test ``Report`` and, if there is one, the tuned configuration's validation
curve. Out: PNG files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recflow.constants import (
    BASELINES,
    DEFAULT_K,
    EASE_PREFIX,
    POPULARITY_PREFIX,
    RANKFM_PREFIX,
    TEST_PREFIX,
)
from recflow.evaluation.report import CURVE_K, Report

SERIES = {
    TEST_PREFIX: ("model", "tab:blue"),
    RANKFM_PREFIX: (BASELINES[RANKFM_PREFIX], "tab:green"),  # when the model is a blend
    EASE_PREFIX: (BASELINES[EASE_PREFIX], "tab:orange"),  # when it was fitted
    POPULARITY_PREFIX: (BASELINES[POPULARITY_PREFIX], "tab:gray"),
}


def _series(report: Report) -> list[tuple[str, tuple[str, str]]]:
    return [(prefix, style) for prefix, style in SERIES.items() if prefix in report.tallies]


def save_figures(
    report: Report,
    folder: Path,
    curve: list[tuple[int, float]] | None = None,
    tuned_epochs: int = 0,
    objective: str = "objective",
) -> list[Path]:
    """Accuracy at k = 1..CURVE_K, exposure by popularity decile and, given ``curve`` (epoch,
    validation value), the tuned configuration's learning curve; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    drawn = {
        "accuracy_at_k": _accuracy_at_k(plt, report),
        "exposure_by_popularity_decile": _exposure_by_decile(plt, report),
    }
    if curve:
        drawn["tuned_learning_curve"] = _learning_curve(plt, curve, tuned_epochs, objective)
    return [save_png(fig, folder, name) for name, fig in drawn.items()]


def save_png(fig, folder: Path, name: str) -> Path:
    """Write a matplotlib figure as ``folder/name.png`` and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _accuracy_at_k(plt, report: Report):
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), sharex=True)
    ks = np.arange(1, CURVE_K + 1)
    for ax, (metric, title) in zip(
        axes,
        [("precision", "Precision@k"), ("recall", "Recall@k"), ("ndcg", "NDCG@k")],
        strict=True,
    ):
        for prefix, (label, color) in _series(report):
            tally = report.tallies[prefix]
            values = [tally.metrics(k)[f"{metric}_at_{k}"] for k in ks]
            ax.plot(ks, values, marker="o", markersize=3, label=label, color=color)
        ax.set_title(title)
        ax.set_xlabel("k (list length)")
        ax.set_xticks([1, 5, 10, 15, 20])
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("Test set: the model against its baselines")
    return fig


def _exposure_by_decile(plt, report: Report):
    # Items from most to least popular in training, cut into ten equal groups.
    order = np.argsort(-report.popularity, kind="stable")
    decile = np.empty(order.size, dtype=int)
    decile[order] = np.arange(order.size) * 10 // order.size
    fig, ax = plt.subplots(figsize=(9, 4.5))
    series = _series(report)
    width = 0.8 / len(series)
    for j, (prefix, (label, color)) in enumerate(series):
        shown = report.tallies[prefix].shown(DEFAULT_K)
        share = np.bincount(decile, weights=shown, minlength=10) / shown.sum()
        percent = 100 * share
        bars = ax.bar(
            np.arange(10) + (j - (len(series) - 1) / 2) * width, percent, width, label=label,
            color=color,
        )  # fmt: skip
        # The tail is where the story is, and too short to read off the axis: print it.
        ax.bar_label(bars, [f"{v:.1f}" if v >= 0.05 else "" for v in percent], fontsize=7)
    ax.set_xticks(np.arange(10), [f"{10 * d}-{10 * d + 10}%" for d in range(10)], fontsize=8)
    ax.set_xlabel("items by training popularity (most popular 10% on the left)")
    ax.set_ylabel(f"share of top-{DEFAULT_K} recommendations (%)")
    ax.set_title("Long-tail exposure: where recommendations fall in the popularity ranking")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return fig


def _learning_curve(plt, curve: list[tuple[int, float]], tuned_epochs: int, objective: str):
    fig, ax = plt.subplots(figsize=(8, 4.5))
    epochs, values = zip(*curve, strict=True)
    ax.plot(epochs, values, marker="o", markersize=3, color="tab:blue")
    if tuned_epochs:
        ax.axvline(
            tuned_epochs, color="tab:red", linestyle="--", label=f"trained for {tuned_epochs}"
        )
        ax.legend()
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {objective}")
    ax.set_title("The tuned configuration's learning curve (its hpo trial)")
    ax.grid(alpha=0.3)
    return fig

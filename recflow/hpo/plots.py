"""Pictures of a study for the MLflow UI, legible at hundreds of trials.

In: a study. Out: PNG files of the optimization history, parameter importances, parallel
coordinates and learning curves (intermediate values), and ``study.html``: optuna's interactive
plotly versions of the same four (zoom, hover for a trial's number and parameters, brush the
parallel-coordinate axes), which MLflow's artifact viewer shows in place.

The PNGs stay readable at 100+ trials because they do not draw one legend entry or one colour per
trial: the learning curves name only the best ``BEST_SHOWN`` trials (legend outside the axes) and
draw the rest as grey and light-blue context; the parallel coordinates put each parameter on its
search-space scale (log where sampled so), label each axis with a few values beside it, and colour
lines by their rank with the best drawn on top.

``study.html`` embeds plotly.js once (about 4.8 MB) for all four figures: MLflow shows HTML
artifacts from a blob URL, so a script beside the file (``include_plotlyjs="directory"``) is never
found; a CDN link breaks on offline tracking servers and downloaded artifacts, and one file per
figure would embed the library four times.
"""

from __future__ import annotations

import html
import logging
import math
import warnings
from pathlib import Path

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from recflow.evaluation.figures import save_png
from recflow.hpo import attrs

log = logging.getLogger(__name__)

PNG_PLOTS = (
    "optimization_history",
    "param_importances",
    "parallel_coordinate",
    "intermediate_values",
)
HTML_PLOTS = "study"  # study.html: the interactive versions of PNG_PLOTS
BEST_SHOWN = 8  # learning curves named in intermediate_values.png's legend
# Parameter importances (fANOVA: a random forest fitted on the trials) from fewer complete trials
# than this are noise, and short studies (tests, quick checks) would pay for scikit-learn's import
# (2 s) to draw them.
IMPORTANCES_FROM = 10
# What a plot raises when the study cannot feed it, e.g. parallel coordinates need two complete
# trials.
_CANNOT_DRAW = (ValueError, RuntimeError, ZeroDivisionError)


def save_plots(study: optuna.Study, folder: Path) -> list[Path]:
    """Write the four PNGs (each that the study can feed) and ``study.html``; returns the files."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # optuna flags its plot functions as experimental on every call: noise in a step's log.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        written = [p for name in PNG_PLOTS if (p := _png(study, folder, name)) is not None]
        page = _html(study, folder)
    return written + ([page] if page else [])


def _png(study: optuna.Study, folder: Path, name: str) -> Path | None:
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    draw = {
        "optimization_history": lambda s: _figure(
            ovm.plot_optimization_history(s, target_name=_objective(s))
        ),
        "param_importances": lambda s: _figure(
            ovm.plot_param_importances(_enough_for_importances(s), target_name=_objective(s))
        ),
        "parallel_coordinate": _parallel_coordinate,
        "intermediate_values": _intermediate_values,
    }[name]
    # optuna's plots switch the process to ggplot style for good; draw all four in it, and only here.
    with plt.style.context("ggplot"):
        try:
            fig = draw(study)
        except _CANNOT_DRAW as e:
            log.warning("skipping plot %s: %s", name, e)
            return None
        return save_png(fig, folder, name)


def _figure(ax):
    fig = (ax.flat[0] if hasattr(ax, "flat") else ax).get_figure()
    fig.set_size_inches(10, 6)
    return fig


def _enough_for_importances(study: optuna.Study) -> optuna.Study:
    """``study``, if it has ``IMPORTANCES_FROM`` complete trials; else ValueError."""
    n = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if n < IMPORTANCES_FROM:
        raise ValueError(f"{n} complete trials; importances are drawn from {IMPORTANCES_FROM}")
    return study


def _objective(study: optuna.Study) -> str:
    return study.user_attrs.get(attrs.STUDY_METRIC, "objective value")


def _ranked(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials, best first."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return sorted(done, key=lambda t: t.value, reverse=maximize)


def _intermediate_values(study: optuna.Study):
    import matplotlib.pyplot as plt

    states = (TrialState.COMPLETE, TrialState.PRUNED)
    trials = [t for t in study.get_trials(deepcopy=False, states=states) if t.intermediate_values]
    if not trials:
        raise ValueError("no trial reported intermediate values")
    best = [t for t in _ranked(study) if t.intermediate_values][:BEST_SHOWN]
    named = {t.number for t in best}
    fig, ax = plt.subplots(figsize=(11, 6))
    context = {
        TrialState.PRUNED: ("pruned", "0.2"),
        TrialState.COMPLETE: ("other complete", "tab:blue"),
    }
    for state, (label, color) in context.items():
        rest = [t for t in trials if t.state == state and t.number not in named]
        for i, t in enumerate(rest):
            steps, values = zip(*sorted(t.intermediate_values.items()), strict=True)
            ax.plot(
                steps,
                values,
                color=color,
                alpha=0.25,
                linewidth=0.8,
                label=f"{label} ({len(rest)})" if i == 0 else None,
            )
    colors = plt.get_cmap("tab10")
    for i, t in enumerate(best):
        steps, values = zip(*sorted(t.intermediate_values.items()), strict=True)
        ax.plot(
            steps,
            values,
            color=colors(i % 10),
            linewidth=1.8,
            marker="o",
            markersize=2.5,
            label=f"#{t.number}: {t.value:.4g}",
            zorder=3 + BEST_SHOWN - i,
        )
    ax.legend(
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
        fontsize=9,
        title=f"best {len(best)} of {len(trials)}",
        title_fontsize=9,
    )
    ax.set_xlabel("step (epoch)")
    ax.set_ylabel(_objective(study))
    ax.set_title("Learning curves: the best trials named, the others for context")
    ax.grid(alpha=0.3)
    return fig


def _parallel_coordinate(study: optuna.Study):
    import matplotlib.pyplot as plt

    ranked = _ranked(study)
    if len(ranked) < 2:
        raise ValueError("fewer than two complete trials")
    names = sorted({p for t in ranked for p in t.params})
    dists = {p: next(t.distributions[p] for t in ranked if p in t.params) for p in names}
    values = np.array([t.value for t in ranked])
    lo, hi = values.min(), values.max()
    span = hi - lo or 1.0
    # Rows: trials; columns: the objective, then each parameter on [0, 1]; NaN where unset.
    table = np.full((len(ranked), len(names) + 1), np.nan)
    table[:, 0] = (values - lo) / span
    for j, p in enumerate(names, start=1):
        table[:, j] = [
            _position(dists[p], t.params[p]) if p in t.params else np.nan for t in ranked
        ]
    unset = -0.12  # where a trial that never sampled a (conditional) parameter crosses its axis
    table = np.where(np.isnan(table), unset, table)
    fig, ax = plt.subplots(figsize=(max(10.0, 1.25 * (len(names) + 1) + 2), 6))
    cmap = plt.get_cmap("viridis")
    # Colour by rank, not value: one outlier would otherwise paint every other trial alike.
    shade = 1 - np.arange(len(ranked)) / (len(ranked) - 1)  # best 1, worst 0
    x = np.arange(len(names) + 1)
    for row, c in reversed(list(zip(table, shade, strict=True))):
        ax.plot(x, row, color=cmap(c), alpha=0.35 + 0.6 * c, linewidth=0.6 + 1.4 * c)
    ticks = [_ticks_of_values(lo, hi)] + [_ticks(dists[p]) for p in names]
    for xi, marks in zip(x, ticks, strict=True):
        ax.axvline(xi, color="0.25", linewidth=0.8)
        for y, text in marks:
            ax.text(
                xi + 0.04,
                y,
                text,
                fontsize=8,
                va="center",
                ha="left",
                bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8},
            )
    if any(p not in t.params for t in ranked for p in names):
        ax.axhline(unset, color="0.6", linewidth=0.6, linestyle=":")
        ax.text(-0.15, unset, "unset", fontsize=8, va="center", ha="right", color="0.4")
    ax.set_xticks(x, [_objective(study)] + names, rotation=25, ha="right", fontsize=9)
    ax.set_xlim(-0.3, len(names) + 0.6)
    ax.set_ylim(unset - 0.06, 1.04)
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    bar = fig.colorbar(plt.cm.ScalarMappable(cmap=cmap), ax=ax, pad=0.01, fraction=0.03)
    at = [0.0, 0.25, 0.5, 0.75, 1.0]
    bar.set_ticks(at, labels=[f"{values[round((1 - f) * (len(ranked) - 1))]:.4g}" for f in at])
    bar.set_label(f"{_objective(study)} (colour by rank)")
    ax.set_title(f"Parallel coordinates of {len(ranked)} complete trials (best drawn on top)")
    return fig


def _position(dist, value) -> float:
    """``value`` on its axis, 0 at the low end of the search space and 1 at the high end."""
    if isinstance(dist, CategoricalDistribution):
        n = len(dist.choices)
        return dist.choices.index(value) / (n - 1) if n > 1 else 0.5
    if dist.low == dist.high:
        return 0.5
    if dist.log:
        return math.log(value / dist.low) / math.log(dist.high / dist.low)
    return (value - dist.low) / (dist.high - dist.low)


def _ticks(dist) -> list[tuple[float, str]]:
    if isinstance(dist, CategoricalDistribution):
        return [(_position(dist, c), str(c)) for c in dist.choices]
    lo, hi = dist.low, dist.high
    between = [math.sqrt(lo * hi) if dist.log else (lo + hi) / 2]
    if dist.log and hi / lo > 30:
        between = [lo * (hi / lo) ** (1 / 3), lo * (hi / lo) ** (2 / 3)]
    if isinstance(lo, int) and isinstance(hi, int):
        return [(_position(dist, round(v)), f"{round(v)}") for v in [lo, *between, hi]]
    return [(_position(dist, v), f"{v:.3g}") for v in [lo, *between, hi]]


def _ticks_of_values(lo: float, hi: float) -> list[tuple[float, str]]:
    return [(f, f"{lo + f * (hi - lo):.4g}") for f in (0.0, 0.25, 0.5, 0.75, 1.0)]


def _html(study: optuna.Study, folder: Path) -> Path | None:
    """The interactive figures in one page that embeds plotly.js once (see the module docs)."""
    from optuna import visualization as ov

    named = {"target_name": _objective(study)}
    draw = {
        "optimization history": (ov.plot_optimization_history, named),
        "parameter importances": (
            lambda s, **kw: ov.plot_param_importances(_enough_for_importances(s), **kw),
            named,
        ),
        "parallel coordinates": (ov.plot_parallel_coordinate, named),
        "learning curves (intermediate values)": (ov.plot_intermediate_values, {}),
    }
    parts = []
    for title, (plot, kwargs) in draw.items():
        try:
            fig = plot(study, **kwargs)
        except _CANNOT_DRAW as e:
            log.warning("skipping interactive plot %s: %s", title, e)
            continue
        fig.update_layout(height=600)
        body = fig.to_html(full_html=False, include_plotlyjs=not parts)
        parts.append(f"<h2>{html.escape(title)}</h2>\n{body}")
    if not parts:
        return None
    name = html.escape(study.study_name)
    page = (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{name}</title></head>'
        f'<body style="font-family:sans-serif"><h1>Study {name}</h1>\n'
        + "\n".join(parts)
        + "\n</body></html>\n"
    )
    path = folder / f"{HTML_PLOTS}.html"
    path.write_text(page, encoding="utf-8")
    return path

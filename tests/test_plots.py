"""The hpo step's plots at real study sizes (issue 26: after a 91-trial study the learning-curve
legend was cut off and the parallel-coordinate labels overlapped), built in process from a
synthetic 120-trial study."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import matplotlib
import mlflow
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from recflow.constants import PLOTS_DIR
from recflow.hpo import attrs, plots
from recflow.hpo.space import DEFAULT_SPACE, load_space
from recflow.hpo.tune import TuneResult, log_result

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

N_TRIALS = 120
EPOCHS = 40
# The shape of the packaged search space: log scales, categoricals and conditional parameters.
SPACE = {
    "factors": IntDistribution(8, 64, log=True),
    "max_samples": IntDistribution(5, 50, log=True),
    "alpha": FloatDistribution(1e-4, 0.02, log=True),
    "sigma": FloatDistribution(0.01, 0.3, log=True),
    "learning_rate": FloatDistribution(0.025, 0.15, log=True),
    "learning_schedule": CategoricalDistribution(["constant", "invscaling"]),
    "learning_exponent": FloatDistribution(0.1, 0.75),
    "rank_weight": FloatDistribution(0.25, 1.0),
    "features": CategoricalDistribution(["none", "item"]),
    "beta": FloatDistribution(0.01, 1.0, log=True),
}


def _trial(i: int) -> optuna.trial.FrozenTrial:
    u = [((i * 7919 + j * 104729) % 1000) / 1000 for j in range(len(SPACE))]
    params = {}
    for (name, dist), x in zip(SPACE.items(), u, strict=True):
        if name == "learning_exponent" and params["learning_schedule"] != "invscaling":
            continue
        if name == "beta" and params["features"] != "item":
            continue
        if isinstance(dist, CategoricalDistribution):
            params[name] = dist.choices[int(x * len(dist.choices))]
        elif dist.log:
            v = dist.low * (dist.high / dist.low) ** x
            params[name] = round(v) if isinstance(dist, IntDistribution) else v
        else:
            params[name] = dist.low + x * (dist.high - dist.low)
    top = 0.55 - 0.2 * abs(math.log(params["learning_rate"] / 0.08)) - 5 * params["alpha"]
    curve = {e: top * (1 - math.exp(-e / 6)) for e in range(1, EPOCHS + 1)}
    pruned = i % 3 == 1
    if pruned:
        curve = {e: v for e, v in curve.items() if e <= 3 + i % 10}
    return create_trial(
        state=TrialState.PRUNED if pruned else TrialState.COMPLETE,
        value=None if pruned else max(curve.values()),
        params=params,
        distributions={p: SPACE[p] for p in params},
        intermediate_values=curve,
        user_attrs={attrs.TRIAL_RUN: f"run-{i}", attrs.BEST_EPOCH: EPOCHS},
    )


@pytest.fixture(scope="module")
def study() -> optuna.Study:
    study = optuna.create_study(direction="maximize", study_name="big")
    study.set_user_attr(attrs.STUDY_METRIC, "ndcg@10")
    study.add_trials([_trial(i) for i in range(N_TRIALS)])
    return study


def test_plots_of_a_120_trial_study_are_written_without_layout_warnings(
    study: optuna.Study, tmp_path: Path
) -> None:
    with warnings.catch_warnings():
        # "Tight layout not applied" was the sign of the cut-off legend; any warning now fails.
        warnings.simplefilter("error")
        written = plots.save_plots(study, tmp_path)
    expected = [f"{name}.png" for name in plots.PNG_PLOTS] + [f"{plots.HTML_PLOTS}.html"]
    assert [p.name for p in written] == expected
    for path in written:
        assert path.parent == tmp_path and path.stat().st_size > 10_000


def _boxes(fig, texts) -> list:
    renderer = fig.canvas.get_renderer()
    return [t.get_window_extent(renderer) for t in texts if t.get_text() and t.get_visible()]


def test_learning_curves_name_only_the_best_trials_in_a_legend_inside_the_picture(
    study: optuna.Study,
) -> None:
    fig = plots._intermediate_values(study)
    fig.tight_layout()
    ax = fig.axes[0]
    legend = ax.get_legend()
    labels = [t.get_text() for t in legend.get_texts()]
    best = plots._ranked(study)[: plots.BEST_SHOWN]
    n_pruned = sum(t.state == TrialState.PRUNED for t in study.trials)
    assert labels == [
        f"pruned ({n_pruned})",
        f"other complete ({N_TRIALS - n_pruned - plots.BEST_SHOWN})",
        *[f"#{t.number}: {t.value:.4g}" for t in best],
    ]
    whole = fig.bbox
    box = legend.get_window_extent(fig.canvas.get_renderer())
    assert whole.x0 <= box.x0 and box.x1 <= whole.x1 and whole.y0 <= box.y0 and box.y1 <= whole.y1
    assert not box.overlaps(ax.get_window_extent()), "the legend covers the curves"
    plt.close(fig)


def test_parallel_coordinate_labels_do_not_overlap(study: optuna.Study) -> None:
    fig = plots._parallel_coordinate(study)
    fig.tight_layout()
    ax = fig.axes[0]
    for group in (ax.get_xticklabels(), ax.texts):
        boxes = _boxes(fig, group)
        assert len(boxes) > len(SPACE)
        clashes = [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :] if a.overlaps(b)]
        assert not clashes
    plt.close(fig)


def test_the_interactive_page_holds_the_four_figures_and_plotly_once(
    study: optuna.Study, tmp_path: Path
) -> None:
    page = plots._html(study, tmp_path).read_text()
    assert page.count("Plotly.newPlot(") == len(plots.PNG_PLOTS)
    # Embedded, not linked: the page works offline and from MLflow's blob-URL viewer.
    assert page.count("plotly.js v") == 1 and "<script src=" not in page


@pytest.mark.filterwarnings("ignore:The number of trials is too small")
def test_a_one_trial_study_still_gets_what_it_can_feed(tmp_path: Path) -> None:
    small = optuna.create_study(direction="maximize")
    small.add_trial(_trial(0))
    names = {p.name for p in plots.save_plots(small, tmp_path)}
    assert {"optimization_history.png", "intermediate_values.png", "study.html"} <= names
    assert "parallel_coordinate.png" not in names  # needs two complete trials


def test_importances_wait_for_enough_complete_trials(tmp_path: Path) -> None:
    short = optuna.create_study(direction="maximize")
    short.add_trials([_trial(i) for i in range(3 * plots.IMPORTANCES_FROM // 2)][:-1])
    assert len(plots._ranked(short)) == plots.IMPORTANCES_FROM - 1
    names = {p.name for p in plots.save_plots(short, tmp_path)}
    assert names == {f"{n}.png" for n in plots.PNG_PLOTS if n != "param_importances"} | {
        f"{plots.HTML_PLOTS}.html"
    }
    page = (tmp_path / f"{plots.HTML_PLOTS}.html").read_text()
    assert page.count("Plotly.newPlot(") == len(plots.PNG_PLOTS) - 1
    assert "parameter importances" not in page


def test_hpo_logs_the_pngs_and_the_interactive_page(tracking: str) -> None:
    small = optuna.create_study(direction="maximize")
    small.add_trials([_trial(i) for i in range(15)])  # 10 complete: enough for importances
    counts = {"n_complete": 10, "n_pruned": 5, "n_fail": 0}
    with mlflow.start_run() as run:
        log_result(TuneResult(small, counts), "ndcg@10", "upstream", load_space(DEFAULT_SPACE))
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, PLOTS_DIR)}
    assert logged == {f"{PLOTS_DIR}/{n}.png" for n in plots.PNG_PLOTS} | {
        f"{PLOTS_DIR}/{plots.HTML_PLOTS}.html"
    }

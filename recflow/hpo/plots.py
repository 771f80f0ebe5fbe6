"""Pictures of a study for the MLflow UI.

In: a study. Out: PNG files of the optimization history, parameter importances, parallel
coordinates and learning curves.
"""

from __future__ import annotations

import logging
from pathlib import Path

import optuna

from recflow.evaluation.figures import save_png

log = logging.getLogger(__name__)


def save_plots(study: optuna.Study, folder: Path) -> list[Path]:
    """Optimization history, parameter importances, parallel coordinates and learning curves."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    from optuna.visualization import matplotlib as ovm

    plots = {
        "optimization_history": ovm.plot_optimization_history,
        "param_importances": ovm.plot_param_importances,
        "parallel_coordinate": ovm.plot_parallel_coordinate,
        "intermediate_values": ovm.plot_intermediate_values,
    }
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, plot in plots.items():
        try:
            ax = plot(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as e:
            # e.g. importances need two complete trials with varied parameters.
            log.warning("skipping plot %s: %s", name, e)
            continue
        fig = (ax.flat[0] if hasattr(ax, "flat") else ax).get_figure()
        fig.set_size_inches(10, 6)
        written.append(save_png(fig, folder, name))
    return written

"""The whole pipeline: download -> preprocess -> hpo -> train_best -> register, with a step cache."""

from __future__ import annotations

import time

import click
import mlflow
import yaml
from mlflow.exceptions import ExecutionException
from mlflow.tracking import MlflowClient

from recflow import constants as C
from recflow.errors import UserError
from recflow.tracking import PROJECT_ROOT, code_version, find_reusable_run, setup_logging, step_run


def entry_point_defaults() -> dict[str, dict[str, str]]:
    """Each step's declared parameters with their MLproject defaults, as strings."""
    spec = yaml.safe_load((PROJECT_ROOT / "MLproject").read_text())
    out = {}
    for name, ep in spec["entry_points"].items():
        params = ep.get("parameters", {})
        out[name] = {
            k: "" if not isinstance(v, dict) or v.get("default") is None else str(v["default"])
            for k, v in params.items()
        }
    return out


def run_step(
    step: str, params: dict[str, str], experiment_id: str, version: str | None
) -> tuple[str, bool, float]:
    """Reuse a finished run of ``step`` with these params (MLproject defaults filled in) and code
    ``version``, or run it (always when ``version`` is None); return (run ID, reused, seconds)."""
    start = time.monotonic()
    if version is not None:
        cached = find_reusable_run(experiment_id, step, params, version)
        if cached is not None:
            return cached.info.run_id, True, time.monotonic() - start
    try:
        submitted = mlflow.run(
            str(PROJECT_ROOT), entry_point=step, parameters=params, env_manager="local",
            experiment_id=experiment_id, synchronous=True,
        )  # fmt: skip
    except ExecutionException as e:
        raise UserError(f"step {step} failed (its error is printed above): {e}") from e
    # mlflow.run() inside an active run makes the step run its child (mlflow.parentRunId).
    return submitted.run_id, False, time.monotonic() - start


@click.command(
    help="Run the five steps in order, reusing finished runs with the same parameters, upstream "
    "runs and code version (--force true re-runs all).\n\nWrites: a parent run tagged with each "
    "step's run ID (recflow.run.<step>); the summary on stdout."
)
@click.option("--dataset", default="ml-1m", show_default=True)
@click.option("--data_url", default="")
@click.option("--checksum", default="")
@click.option("--n_trials", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--metric", default="ndcg@10", show_default=True)
@click.option("--seed", default=C.DEFAULT_SEED, show_default=True)
@click.option("--model_name", default="movielens-rankfm", show_default=True)
@click.option("--force", default="false", show_default=True, type=click.Choice(["true", "false"]))
def main(
    dataset: str, data_url: str, checksum: str, n_trials: int, metric: str, seed: int,
    model_name: str, force: str,
) -> None:  # fmt: skip
    setup_logging()
    params = {k: v for k, v in locals().items()}
    with step_run("main", params) as run:
        exp = run.info.experiment_id
        # Read once: the code and the MLproject defaults do not change during the run.
        version = None if force == "true" else code_version()
        defaults = entry_point_defaults()
        summary: list[tuple[str, str, bool, float]] = []

        def step(name: str, **p: object) -> str:
            full = defaults[name] | {k: str(v) for k, v in p.items()}
            run_id, reused, secs = run_step(name, full, exp, version)
            mlflow.set_tag(f"recflow.run.{name}", run_id)
            summary.append((name, run_id, reused, secs))
            return run_id

        raw = step("download", dataset=dataset, data_url=data_url, checksum=checksum)
        prep = step("preprocess", raw_run_id=raw, seed=seed)
        tuned = step("hpo", preprocess_run_id=prep, n_trials=n_trials, metric=metric, seed=seed)
        trained = step("train_best", preprocess_run_id=prep, hpo_run_id=tuned, seed=seed)
        step("register", train_run_id=trained, model_name=model_name)

        client = MlflowClient()
        for name, run_id, reused, secs in summary:
            click.echo(f"{name:<11} {'reused' if reused else 'ran':<6} {run_id}  {secs:7.1f}s")
        tags = client.get_run(summary[-1][1]).data.tags
        version = tags.get("recflow.model_version")
        click.echo(f"registry: {tags.get('recflow.promotion_reason', '')}")
        test = client.get_run(trained).data.metrics
        shown = ", ".join(
            f"{k.removeprefix('test_')}={v:.4f}"
            for k, v in sorted(test.items())
            if k.startswith("test_")
        )
        click.echo(f"model {model_name} version {version}: {shown}")
        mlflow.log_metric("n_reused", sum(r for _, _, r, _ in summary))


if __name__ == "__main__":
    main()

"""What every step shares: logging, its MLflow run, its upstream runs and the data folder.

A step's problems the user can fix (``UserError``) become a one-line ``Error:`` message and exit
code 1, with the step's run marked FAILED.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from mlflow.entities import Run

from recflow import disk
from recflow.constants import UPSTREAM
from recflow.errors import UserError
from recflow.tracking import runs, space
from recflow.tracking.cache import entry_point_defaults
from recflow.tracking.store import prepare_store

F = TypeVar("F", bound=Callable[..., Any])

# Seeds are NumPy's legacy seeds (rankfm draws from the global RNG), which must fit in 32 bits.
SEED = click.IntRange(0, 2**32 - 1)


def default(entry_point: str, name: str) -> str:
    """MLproject's default of ``name`` for ``entry_point``: the one place defaults are declared."""
    return _declared()[entry_point][name]


@functools.cache
def _declared() -> dict[str, dict[str, str]]:
    return entry_point_defaults()


def options(entry_point: str) -> Callable[..., Callable[[F], F]]:
    """A click option maker for ``entry_point``: ``option("seed", type=int)`` is ``--seed`` with
    MLproject's default (converted by ``type``; strings when none), shown in --help."""

    def option(name: str, **kwargs: Any) -> Callable[[F], F]:
        value = default(entry_point, name)
        return click.option(f"--{name}", default=value, show_default=value != "", **kwargs)

    return option


@dataclass(frozen=True)
class Step:
    """A running step: its name and its MLflow run."""

    name: str
    run: Run

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    def label(self, *details: object) -> None:
        """Name the run after the step and ``details``: ``hpo · ml-1m · 20 trials``."""
        runs.name_run(self.name, *details)

    def upstream(self, param: str, run_id: str, **links: str) -> Run:
        """The finished upstream run ``param`` names or, when it is empty, the latest one in this
        experiment (linked to ``links``: upstream parameter -> run ID), saying which."""
        step = UPSTREAM[self.name][param]
        if run_id:
            return runs.get_step_run(run_id, step, param)
        found = runs.latest_step_run(self.run.info.experiment_id, step, param, links)
        click.echo(f"{param} not given: using the latest finished {step} run {found.info.run_id}")
        return found


@contextlib.contextmanager
def step(name: str) -> Iterator[Step]:
    """Open the step's run and log the invoking command's options as its parameters."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        prepare_store()  # a step may be the first process to open a new local store
        with runs.step_run(name, click.get_current_context().params) as run:
            try:
                yield Step(name, run)
            except OSError as e:
                # A full disk mid-write: said in one line, while the run can still be named.
                if e.errno not in disk.NO_SPACE:
                    raise
                raise space.no_space(e) from e
    except UserError as e:
        raise click.ClickException(str(e)) from e


def data_dir() -> Path:
    """Where downloads and default optuna studies are kept: $RECFLOW_DATA_DIR, default data/."""
    return Path(os.environ.get("RECFLOW_DATA_DIR", "data"))

"""Training in a child process, so that each fit has NumPy's global RNG to itself and a crash
ends only the child.

In: the training interactions, ``FMParams``, a seed, optional side features and a per-epoch
callback. Out: the fitted ``Recommender``, or ``TrainingDiverged``; the callback runs in the
calling process after every epoch and may stop training by raising.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import threading
import types
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

import pandas as pd

from recflow.model.recommender import FMParams, Recommender

# From this many training interactions, ``threads=0`` trains on every core. Below it training
# takes under a minute on one core, and one thread keeps the model bit-for-bit reproducible.
# Parallel SGD pays only without side features: every sample updates the shared feature weights,
# and two threads writing them gave no speed-up (bench/training.py --compare threads, ML-1M
# scale, item features: 0.97x; without: 1.46x per epoch at ML-10M scale).
PARALLEL_FROM = 2_000_000

# Seconds between a stoppable training's checks of its stop event (``fit_isolated``).
STOP_POLL = 0.2


# Models averaged by train_best with ensemble=auto: this many below ENSEMBLE_BELOW training
# interactions, else one. Averaging the scores of models trained from different seeds takes out
# much of SGD's seed noise: on real ML-100K's per-user 75/25 protocol rankfm's published
# configuration scored NDCG@10 0.450 alone, 0.473 averaged over 3 seeds and 0.479 over 5
# (split seeds 1492, 7, 42). Ten added 0.1 % on the real ML-1M users 1-1500 (choosing split
# seeds 1-6, train_best again on each default main's study: served NDCG@10 1.0319x EASE against
# 1.0310x, rankfm alone 1.0150x against 1.0138x), inside the spread between seeds, for twice
# the training. Each member is a whole training, so big data keeps one.
ENSEMBLE = 5
ENSEMBLE_BELOW = 500_000


def ensemble_size(requested: str | int, n_interactions: int) -> int:
    """``requested`` models, or for 'auto' the automatic choice (see ``ENSEMBLE``)."""
    if requested != "auto":
        return int(requested)
    return ENSEMBLE if n_interactions < ENSEMBLE_BELOW else 1


def training_threads(requested: int, n_interactions: int, params: FMParams) -> int:
    """``requested`` threads, or for 0 the automatic choice (see ``PARALLEL_FROM``)."""
    if requested > 0:
        return requested
    if n_interactions < PARALLEL_FROM or params.features != "none":
        return 1
    return len(os.sched_getaffinity(0))


class TrainingDiverged(FloatingPointError):
    """Training produced non-finite weights or crashed the training process."""


class Stopped(Exception):
    """A training stopped from outside (``fit_isolated``'s ``stop``): its process has exited."""


def fit_isolated(
    train: pd.DataFrame,
    params: FMParams,
    seed: int,
    on_epoch: Callable[[int, Recommender], None] | None = None,
    stop: threading.Event | None = None,
    **fit: Any,
) -> Recommender:
    """:meth:`Recommender.fit` in a forked child process, with ``on_epoch`` run in this one;
    ``fit`` holds fit's other keyword arguments (side features, threads, data_share).

    The child once kept rankfmc's kernel, which corrupted its process's heap when training
    diverged, away from the caller. Training now runs ``recflow.model.kernel``, which fails
    cleanly: an epoch that leaves non-finite weights raises FloatingPointError, raised here as
    ``TrainingDiverged``. The child still gives each fit NumPy's global RNG to itself (rankfm
    draws its initial weights and every epoch's shuffle from it), which hpo's parallel trials,
    threads of one process, would otherwise share; and a crash in the compiled training code
    ends only the child (``TrainingDiverged`` too).
    The child receives the data once and sends back the small weight matrices.
    An exception raised by ``on_epoch`` (e.g. optuna's TrialPruned) stops the child and
    propagates here. Once ``stop`` is set (checked every ``STOP_POLL`` seconds) ``Stopped`` is
    raised. However this returns or raises, the child exits: it watches a pipe only this end
    holds.
    """
    if stop is not None and stop.is_set():
        raise Stopped(f"training from seed {seed} stopped before it started")
    ctx = _context()
    conn, child_conn = ctx.Pipe()
    # Never written: the child exits when this end closes, also when this process is killed
    # (SIGTERM, SIGKILL), which would otherwise leave its training running on to the end.
    alive_r, alive_w = ctx.Pipe(duplex=False)
    args = (child_conn, alive_r, train, params, seed, on_epoch is not None, fit)
    proc = ctx.Process(target=_fit_child, args=args, daemon=True)
    proc.start()
    child_conn.close()
    alive_r.close()
    try:
        while True:
            while stop is not None and not conn.poll(STOP_POLL):
                if stop.is_set():
                    raise Stopped(f"training from seed {seed} stopped")
            try:
                kind, payload = conn.recv()
            except EOFError:
                proc.join()
                raise TrainingDiverged(
                    f"training process died (exit code {proc.exitcode}); the configuration "
                    "probably diverged: lower learning_rate or sigma"
                ) from None
            if kind == "done":
                return payload
            if kind == "error":
                raise TrainingDiverged(payload)
            try:
                on_epoch(*payload)
            except BaseException:
                conn.send(False)
                raise
            conn.send(True)
    finally:
        conn.close()
        alive_w.close()  # the child exits, done or not
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()


def fit_ensemble(
    train: pd.DataFrame, params: FMParams, seeds: list[int], threads: int = 1, **fit: Any
) -> list[Recommender]:
    """One model per seed, each trained by :func:`fit_isolated` with ``threads`` threads, as
    many at once as the cores allow; in the order of ``seeds``, so the result does not depend
    on which finishes first. When one fails (``TrainingDiverged``), or this thread is
    interrupted, the others are stopped and the error raised at once."""
    workers = max(1, min(len(seeds), len(os.sched_getaffinity(0)) // max(1, threads)))
    if workers == 1:
        return [fit_isolated(train, params, s, threads=threads, **fit) for s in seeds]
    stop = threading.Event()
    # Threads only wait: each model trains in its own child process.
    pool = ThreadPoolExecutor(workers, thread_name_prefix="ensemble")
    try:
        futures = [pool.submit(fit_isolated, train, params, s, stop=stop, threads=threads, **fit)
                   for s in seeds]  # fmt: skip
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in futures if f in done and f.exception() is not None]
        if failed:
            raise failed[0].exception()  # the first seed's, of those failed by now
        return [f.result() for f in futures]
    finally:
        stop.set()  # a no-op once all are done
        pool.shutdown(wait=True, cancel_futures=True)


def _context() -> multiprocessing.context.BaseContext:
    # forkserver, not fork: forking a process that has threads (optuna's n_jobs, MLflow's
    # background threads, BLAS pools) may copy a lock mid-use and deadlock the child. The fork
    # server is a fresh single-threaded interpreter with the heavy imports done once.
    ctx = multiprocessing.get_context("forkserver")
    # Every child re-runs the main module (e.g. steps.hpo), so the server imports once what the
    # main module imports (mlflow, optuna, ...) and a trial pays for no imports. Not the main
    # module itself: runpy would warn in every child that it is already imported. The kernel is
    # loaded there too (``recflow.model.preload``).
    preload = ["__main__", *_main_module_imports(), __name__, "rankfmc", "recflow.model.preload"]
    ctx.set_forkserver_preload(preload)
    return ctx


def _main_module_imports() -> list[str]:
    """The modules the main module imported: those it holds and those its names come from."""
    main = sys.modules.get("__main__")
    names = {
        value.__name__ if isinstance(value, types.ModuleType) else getattr(value, "__module__", "")
        for value in (vars(main).values() if main is not None else ())
    }
    return sorted(
        n for n in names if isinstance(n, str) and n in sys.modules and "__main__" not in n
    )


class _Stop(Exception):
    pass


def _fit_child(
    conn, alive, train: pd.DataFrame, params: FMParams, seed: int, report: bool,
    fit: dict[str, Any],
) -> None:  # fmt: skip
    threading.Thread(target=_exit_when_closed, args=(alive,), daemon=True).start()

    def on_epoch(epoch: int, model: Recommender) -> None:
        conn.send(("epoch", (epoch, model)))
        if not conn.recv():
            raise _Stop

    try:
        model = Recommender.fit(train, params, seed, on_epoch=on_epoch if report else None, **fit)
        conn.send(("done", model))
    except _Stop:
        pass
    except FloatingPointError as e:
        conn.send(("error", str(e)))
    finally:
        conn.close()


def _exit_when_closed(alive) -> None:
    # The caller never writes: recv returns only when its end closes, as it does once the
    # caller is done with this child or is gone. The kernel releases the GIL, so this thread
    # runs mid-epoch.
    with contextlib.suppress(EOFError, OSError):
        alive.recv()
    os._exit(1)

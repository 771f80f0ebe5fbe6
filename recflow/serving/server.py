"""Serve a pyfunc model with N uvicorn workers like `mlflow models serve -w N`, each worker with
its share of the cores for BLAS.

In: a model URI (``models:/name@alias``, ``runs:/...``, a folder), host, port, workers.
Out: MLflow's own scoring app (``/invocations``, ``/ping``, ``/health``, ``/version``) on
host:port, run in the current environment (as ``--env-manager local``).

What it adds to ``mlflow models serve -w N`` today: the BLAS thread share. MLflow starts its
workers with no BLAS thread setting, so each worker's OpenBLAS starts one thread per core and N
workers run N x cores threads on the cores; here each gets cores / N. Measured with
bench/serve_workers.py's model (one ML-1M-sized rankfm) on 2 shared cores at uvicorn 0.55.0: the
same server CPU per request (2.9-3.4 ms both ways) and throughput within the noise (stock 191-416
req/s, this 237-394): no gain measurable here (docs/serving.md's 355 vs 163 req/s came from an
ensemble, more BLAS work per request). Nagle's ~40 ms stall per keep-alive request (uvicorn #3149),
the first reason for this module, is fixed in uvicorn 0.55.0, the version pinned.
tests/test_server.py fails when MLflow's workers get a share: then this module can go. It also
removes its copy of a stored model when it stops, where MLflow leaves the one it downloaded
from a tracking server in the temp folder.

    python -m recflow.serving.server -m models:/movielens-rankfm@champion -w 2 -p 5001
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import tempfile
from pathlib import Path

DEFAULT_PORT = 5000


BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def share_cores(workers: int) -> None:
    """Give each worker's BLAS its share of the cores, unless the environment already says.

    A worker's OpenBLAS starts one thread per core and its idle threads spin, so N workers
    would run N x cores BLAS threads on the cores. Set before the workers start: each reads
    the variables when it imports NumPy.
    """
    share = str(max(1, len(os.sched_getaffinity(0)) // workers))
    for var in BLAS_THREAD_VARS:
        os.environ.setdefault(var, share)


def serve(model_uri: str, host: str, port: int, workers: int, timeout: int | None = None) -> None:
    """Fetch the model (a folder is served in place) and serve it until interrupted or
    terminated."""
    import mlflow.artifacts
    import uvicorn
    from mlflow.pyfunc import scoring_server

    # A model from the tracking store goes into a folder of the server's own, removed when it
    # stops (interrupted or terminated). From a remote store MLflow would download it into a
    # folder that nobody removes: tens of MB a restart for a model with EASE's item-item
    # weights. (From a local store this copies it.) A model folder is served in place.
    with tempfile.TemporaryDirectory(prefix="recflow-serve-") as tmp:
        dst = None if Path(model_uri).is_dir() else tmp
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=dst)
        # MLflow's own command and environment, so the app and its settings stay MLflow's: the
        # workers import the app, which loads the model named in the environment.
        command, env = scoring_server.get_cmd(local, port, host, timeout, workers)
        os.environ.update(env)
        share_cores(workers)
        # One worker runs in this process, and after its graceful shutdown uvicorn raises the
        # SIGTERM it caught again, under the handler it found: the default would end the process
        # before the folder is removed, this one makes it a KeyboardInterrupt uvicorn swallows.
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            uvicorn.run(shlex.split(command)[-1], host=host, port=port, workers=workers)
        finally:
            signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> None:
    """``python -m recflow.serving.server``: the options of `mlflow models serve` that apply here."""
    parser = argparse.ArgumentParser(
        "python -m recflow.serving.server", description=__doc__.split("\n\n")[0], add_help=False
    )
    parser.add_argument("--help", action="help")  # -h is --host, as in mlflow models serve
    parser.add_argument("-m", "--model-uri", required=True, help="e.g. models:/name@alias")
    parser.add_argument("-h", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("-w", "--workers", type=int, default=1)
    parser.add_argument("-t", "--timeout", type=int, help="seconds per request (MLflow's)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    serve(args.model_uri, args.host, args.port, args.workers, args.timeout)


if __name__ == "__main__":
    main()

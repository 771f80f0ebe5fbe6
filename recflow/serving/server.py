"""Serve a pyfunc model with N uvicorn workers like `mlflow models serve -w N`, without its stall.

In: a model URI (``models:/name@alias``, ``runs:/...``, a folder), host, port, workers.
Out: MLflow's own scoring app (``/invocations``, ``/ping``, ``/health``, ``/version``) on
host:port, run in the current environment (as ``--env-manager local``).

Why not ``mlflow models serve -w 2``: it runs ``uvicorn --workers 2``, whose supervisor binds the
listening socket as ``socket.socket(family)``, protocol 0. Accepted sockets inherit protocol 0 and
asyncio enables TCP_NODELAY only on sockets whose protocol is IPPROTO_TCP, so Nagle's algorithm
meets the client's delayed ACK and every keep-alive request after the first waits ~40 ms
(uvicorn issue #3149). One worker is unaffected: asyncio binds that socket itself. Here the
socket is bound with IPPROTO_TCP and handed to the same supervisor.

    python -m recflow.serving.server -m models:/movielens-rankfm@champion -w 2 -p 5001
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket

DEFAULT_PORT = 5000


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket whose accepted connections asyncio will set TCP_NODELAY on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)  # the workers are spawned processes
    return sock


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
    """Download the model and serve it until interrupted."""
    import mlflow.artifacts
    import uvicorn
    from mlflow.pyfunc import scoring_server
    from uvicorn.supervisors import Multiprocess

    local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri)
    # MLflow's own command and environment, so the app and its settings stay MLflow's: the
    # workers import the app, which loads the model named in the environment.
    command, env = scoring_server.get_cmd(local, port, host, timeout, workers)
    os.environ.update(env)
    share_cores(workers)
    config = uvicorn.Config(shlex.split(command)[-1], host=host, port=port, workers=workers)
    sock = bind_socket(host, port)
    if workers > 1:
        Multiprocess(config, sockets=[sock]).run()
    else:
        uvicorn.Server(config).run(sockets=[sock])


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

"""recflow.serving.server: why it still exists (`mlflow models serve -w N` gives its workers no BLAS
thread share, and leaves a model it downloaded behind), the socket uvicorn binds for its workers
(TCP_NODELAY since 0.55.0, pinned), two workers that each serve the model's answers, and the
server's copy of a stored model going with it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import mlflow
import pandas as pd
import pytest
import requests

from recflow import constants as C
from recflow.serving import server
from recflow.testing.servers import fixed_cmd, served, stock_cmd
from tests.helpers import free_port, save_checkerboard_pyfunc


def accepted_nodelay(listener: socket.socket) -> int:
    """TCP_NODELAY of the connection asyncio accepts on ``listener`` (as uvicorn's workers do)."""

    async def accept_one() -> int:
        got: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sock = transport.get_extra_info("socket")
                got.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        srv = await asyncio.get_running_loop().create_server(Probe, sock=listener)
        _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
        try:
            return await asyncio.wait_for(got, 10)
        finally:
            writer.close()
            srv.close()

    return asyncio.run(accept_one())


def test_uvicorn_workers_socket_gives_accepted_connections_tcp_nodelay() -> None:
    """The socket uvicorn binds for ``--workers N`` (and so for both `mlflow models serve -w N`
    and recflow.serving.server): accepted connections get TCP_NODELAY, so no ~40 ms Nagle stall
    per keep-alive request. uvicorn 0.55.0, the version pinned, fixed #3149; older ones fail."""
    import uvicorn

    sock = uvicorn.Config("app:app", host="127.0.0.1", port=0, workers=2).bind_socket()
    assert sock.proto == socket.IPPROTO_TCP
    assert accepted_nodelay(sock) != 0


def descendants(pid: int) -> list[int]:
    """Every process under ``pid``, children first."""
    tasks = Path(f"/proc/{pid}/task").glob("*/children")
    kids = [int(c) for t in tasks for c in t.read_text().split()]
    return kids + [d for k in kids for d in descendants(k)]


def worker_pids(supervisor: int, n: int = 2) -> set[int]:
    """The uvicorn workers under ``supervisor`` (processes running multiprocessing's spawn_main),
    waited for until there are ``n`` (a worker is listed once it has exec'd) or a minute passed."""
    deadline = time.monotonic() + 60
    while True:
        found = {d for d in descendants(supervisor)
                 if b"spawn_main" in Path(f"/proc/{d}/cmdline").read_bytes()}  # fmt: skip
        if len(found) >= n or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def blas_env(pid: int) -> dict[str, str]:
    """The BLAS thread variables process ``pid`` started with."""
    pairs = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
    env = dict(p.split("=", 1) for p in pairs if "=" in p)
    return {k: env[k] for k in server.BLAS_THREAD_VARS if k in env}


@contextlib.contextmanager
def serving(cmd: list[str], port: int, log: Path) -> Iterator[tuple[str, int]]:
    """``served`` (its URL and PID) with no BLAS thread variable in the server's environment."""
    with pytest.MonkeyPatch.context() as mp:
        for var in server.BLAS_THREAD_VARS:
            mp.delenv(var, raising=False)
        with served(cmd, port, log, timeout=120) as (url, _, proc):
            yield url, proc.pid


@pytest.fixture(scope="module")
def pyfunc(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """The checkerboard pyfunc's folder and the in-process model."""
    tmp = tmp_path_factory.mktemp("model")
    direct, _ = save_checkerboard_pyfunc(tmp)
    return tmp / "pyfunc", direct


@pytest.fixture(scope="module")
def two_workers(
    pyfunc, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, object, int]]:
    """`python -m recflow.serving.server -w 2` of the checkerboard pyfunc: its URL, the in-process
    model and the supervisor's PID."""
    folder, direct = pyfunc
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with serving(fixed_cmd(folder, port, 2), port, log) as (url, pid):
        yield url, direct, pid


@pytest.mark.slow
def test_mlflow_models_serve_still_gives_its_workers_no_blas_share(
    pyfunc, two_workers, tmp_path: Path
) -> None:
    """Why recflow.serving.server exists: `mlflow models serve -w 2` starts its workers with no
    BLAS thread setting, so each one's OpenBLAS spins a thread per core, while ours start with
    their share (bench/serve_workers.py measures the difference). When MLflow's workers get a
    share too, this fails: then recflow.serving.server can go."""
    port = free_port()
    with serving(stock_cmd(pyfunc[0], port, 2), port, tmp_path / "serve.log") as (_, pid):
        theirs = worker_pids(pid)
        assert len(theirs) == 2, theirs
        assert [blas_env(w) for w in theirs] == [{}, {}], "recflow.serving.server can go"
    ours = worker_pids(two_workers[2])
    share = str(max(1, len(os.sched_getaffinity(0)) // 2))
    assert [blas_env(w) for w in ours] == [dict.fromkeys(server.BLAS_THREAD_VARS, share)] * 2


def test_the_servers_copy_of_a_stored_model_goes_when_it_returns(
    trained: dict[str, str], pyfunc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve() puts a model from the tracking store into a folder of its own and removes it once
    uvicorn returns: from a remote store MLflow would download it into a folder left for the
    caller to remove, one more each restart. A model folder is served in place. In process, from
    a local store (so the model is copied): uvicorn is stood in for by a spy that looks at the
    model the workers would load."""
    import uvicorn
    from mlflow.pyfunc.scoring_server import _SERVER_MODEL_PATH

    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    seen = []

    def run(app: str, **kwargs: object) -> None:
        model = Path(os.environ[_SERVER_MODEL_PATH].removeprefix("file://"))
        seen.append((model, (model / "MLmodel").is_file()))

    monkeypatch.setattr(uvicorn, "run", run)
    stored = mlflow.get_run(trained["train"]).data.tags[C.TAG_MODEL_URI]
    with mock.patch.dict(os.environ):  # what serve() sets in the environment goes with the test
        for uri in (stored, str(pyfunc[0])):
            server.serve(uri, "127.0.0.1", free_port(), 1)
    (copy, loaded), (in_place, _) = seen
    assert loaded and copy.is_relative_to(temp), copy
    assert not copy.exists() and list(temp.iterdir()) == []
    assert in_place == pyfunc[0]


@pytest.mark.slow
def test_a_terminated_server_removes_its_copy_of_the_model(
    trained: dict[str, str], short_temp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM (kill, docker stop, systemd) ends one worker's server cleanly, its copy of the
    model removed: uvicorn raises the signal again after its shutdown, which would otherwise end
    the process before the folder goes."""
    monkeypatch.setenv("TMPDIR", str(short_temp))
    stored = mlflow.get_run(trained["train"]).data.tags[C.TAG_MODEL_URI]
    port = free_port()
    log = tmp_path / "serve.log"
    with served(fixed_cmd(stored, port, 1), port, log, timeout=120) as (_, _, proc):
        assert list(short_temp.rglob("MLmodel")), "the server serves its own copy"
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0, log.read_text()[-3000:]
    assert list(short_temp.iterdir()) == []


@mock.patch.dict(os.environ)  # what share_cores sets goes with the test
def test_workers_share_the_cores_between_their_blas_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var in server.BLAS_THREAD_VARS:
        os.environ.pop(var, None)
    os.environ["MKL_NUM_THREADS"] = "3"  # what the user set is kept
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    server.share_cores(2)
    assert os.environ["OPENBLAS_NUM_THREADS"] == os.environ["OMP_NUM_THREADS"] == "2"
    assert os.environ["MKL_NUM_THREADS"] == "3"
    del os.environ["OPENBLAS_NUM_THREADS"]
    server.share_cores(8)  # more workers than cores: one thread each
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"


@pytest.mark.slow
def test_two_workers_serve_the_models_answers(two_workers) -> None:
    url, direct, supervisor = two_workers
    assert requests.get(f"{url}/health", timeout=5).ok
    body = {"inputs": {"user_id": [0, 1, 999]}, "params": {"k": 4}}
    expected = direct.predict(None, pd.DataFrame({"user_id": [0, 1, 999]}), {"k": 4})

    def answers(post) -> None:
        resp = post(f"{url}/invocations", json=body, timeout=30)
        assert resp.status_code == 200, resp.text
        got = pd.DataFrame(resp.json()["predictions"])
        pd.testing.assert_frame_equal(got, expected, check_dtype=False)

    with requests.Session() as session:  # one keep-alive connection, as a client would hold
        for _ in range(10):
            answers(session.post)
    # Each worker answers alone while the other is stopped: new connections, which only a
    # running worker can accept (a stop well under uvicorn's 5 s health check, so no restart).
    workers = worker_pids(supervisor)
    assert len(workers) == 2, workers
    for stopped in workers:
        os.kill(stopped, signal.SIGSTOP)
        try:
            for _ in range(3):
                answers(requests.post)  # a connection of its own each time
        finally:
            os.kill(stopped, signal.SIGCONT)
    assert worker_pids(supervisor) == workers  # the answers came from these two
    resp = requests.post(f"{url}/invocations", json={"inputs": {"uid": [1]}}, timeout=30)
    assert resp.status_code == 400 and resp.json()["message"]

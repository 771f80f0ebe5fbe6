"""recflow.serving.server: the socket it binds gives accepted connections TCP_NODELAY (uvicorn's own
``--workers`` socket does not, issue #3149), and two workers serve the model's answers."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pandas as pd
import pytest
import requests

from recflow.serving import server
from tests.helpers import PROJECT, free_port, save_checkerboard_pyfunc


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


def test_bound_socket_gives_accepted_connections_tcp_nodelay() -> None:
    sock = server.bind_socket("127.0.0.1", 0)
    assert sock.proto == socket.IPPROTO_TCP
    assert accepted_nodelay(sock) != 0


def test_uvicorn_workers_socket_still_lacks_tcp_nodelay() -> None:
    """Why recflow.serving.server exists: the socket `uvicorn --workers N` binds (and so `mlflow models
    serve -w N`) leaves Nagle on, a ~40 ms stall per keep-alive request."""
    import uvicorn

    sock = uvicorn.Config("app:app", host="127.0.0.1", port=0, workers=2).bind_socket()
    if accepted_nodelay(sock):
        pytest.skip("uvicorn binds with IPPROTO_TCP now (#3149 fixed): recflow.serving.server can go")


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, object]]:
    """`python -m recflow.serving.server -w 2` of the checkerboard pyfunc; its URL and in-process model."""
    tmp = tmp_path_factory.mktemp("server")
    direct, _ = save_checkerboard_pyfunc(tmp)
    port = free_port()
    cmd = [sys.executable, "-m", "recflow.serving.server", "-m", str(tmp / "pyfunc"), "-w", "2",
           "-p", str(port)]  # fmt: skip
    log = tmp / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, cwd=PROJECT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if requests.get(f"{url}/ping", timeout=2).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        else:
            pytest.fail("server did not start: " + log.read_text()[-3000:])
        yield url, direct
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the supervisor and its workers
        proc.wait(timeout=30)


def test_workers_share_the_cores_between_their_blas_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var in server.BLAS_THREAD_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "3")  # what the user set is kept
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    server.share_cores(2)
    assert os.environ["OPENBLAS_NUM_THREADS"] == os.environ["OMP_NUM_THREADS"] == "2"
    assert os.environ["MKL_NUM_THREADS"] == "3"
    monkeypatch.delenv("OPENBLAS_NUM_THREADS")
    server.share_cores(8)  # more workers than cores: one thread each
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"


@pytest.mark.slow
def test_two_workers_serve_the_models_answers(two_workers) -> None:
    url, direct = two_workers
    assert requests.get(f"{url}/health", timeout=5).ok
    expected = direct.predict(None, pd.DataFrame({"user_id": [0, 1, 999]}), {"k": 4})
    with requests.Session() as session:  # one keep-alive connection, as a client would hold
        for _ in range(10):
            resp = session.post(
                f"{url}/invocations",
                json={"inputs": {"user_id": [0, 1, 999]}, "params": {"k": 4}},
                timeout=30,
            )
            assert resp.status_code == 200, resp.text
            got = pd.DataFrame(resp.json()["predictions"])
            pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    resp = requests.post(f"{url}/invocations", json={"inputs": {"uid": [1]}}, timeout=30)
    assert resp.status_code == 400 and resp.json()["message"]

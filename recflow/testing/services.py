"""Throwaway services on this machine, for the team tests and benchmarks: PostgreSQL, an MLflow
tracking server, a git daemon, and "hosts" of their own in network namespaces.

They are started as a user would start them: Debian's PostgreSQL binaries (installed with apt when
missing, as on a fresh CI machine) with password authentication, and ``mlflow server`` with that
database as its backend store and proxied artifact storage, ``git daemon`` exporting bare
repositories. Clients get the password from ``PGPASSWORD``, never from a URL that MLflow would
record as a run parameter. Every start waits with a deadline and fails with the service's log;
every stop ends the service's whole process group.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import requests

USER = "recflow"
PASSWORD = "recflow-test-password"
# The mlflow CLI of the interpreter running the tests or benchmarks (the project's virtualenv).
MLFLOW = str(Path(sys.executable).with_name("mlflow"))


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    """Whether ``url`` answers a GET with a 2xx within a second."""
    try:
        return requests.get(url, timeout=1).ok
    except requests.RequestException:
        return False


def listens(port: int) -> bool:
    """Whether something accepts TCP connections on loopback ``port``."""
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def await_ready(
    proc: subprocess.Popen, ready: Callable[[], bool], log: Path, timeout: float
) -> None:
    """Poll ``ready`` until it holds; raise with the tail of ``log`` if ``proc`` exits first or
    ``timeout`` seconds pass (the process is then stopped)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            stop_group(proc)
            raise RuntimeError(
                f"{proc.args[0]} not ready in {timeout} s:\n{log.read_text()[-3000:]}"
            )
        time.sleep(0.1)


def stop_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM ``proc``'s process group (it was started in a session of its own), SIGKILL it if
    it is still there after ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def postgres_bin() -> Path:
    """The folder of Debian's PostgreSQL server binaries, installing the package if needed."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")
        env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postgresql"],
            check=True, env=env,
        )  # fmt: skip
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent


class Postgres:
    """A throwaway PostgreSQL cluster on a free loopback port, password authentication only."""

    def __init__(self, listen: str = "127.0.0.1", clients: str = "") -> None:
        """``listen``: listen_addresses; ``clients``: a network (e.g. 10.77.0.0/16) allowed in
        besides loopback."""
        self.listen, self.clients = listen, clients
        self.bin = postgres_bin()
        # PostgreSQL refuses to run as root: run it as Debian's `postgres` user then.
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.root = Path(tempfile.mkdtemp(prefix="recflow-pg-"))
        self.data = self.root / "data"
        self.port = free_port()

    def _run(self, *args: str) -> None:
        subprocess.run(
            [*self.as_user, *args], check=True, capture_output=True, text=True, cwd=self.root
        )

    def start(self) -> Postgres:
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD)
        if self.as_user:
            uid = pwd.getpwnam("postgres").pw_uid
            for path in (self.root, pwfile):
                os.chown(path, uid, -1)
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", USER, "--auth=scram-sha-256",
            f"--pwfile={pwfile}", "--encoding=UTF8", "--no-sync",
        )  # fmt: skip
        pwfile.unlink()
        if self.clients:
            with (self.data / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {self.clients} scram-sha-256\n")
        opts = f"-p {self.port} -c listen_addresses={self.listen} -k {self.root} -c fsync=off"
        self._start(opts)
        return self

    def _start(self, opts: str) -> None:
        self.opts = opts
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", opts,
            "-l", str(self.root / "server.log"), "-w", "start",
        )  # fmt: skip

    def restart(self) -> None:
        """Stop at once (as a crash would) and start again on the same port and data."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        self._start(self.opts)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str) -> str:
        """A password-less URL: clients read the password from PGPASSWORD."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create ``name``; return its URL."""
        import psycopg

        # autocommit: CREATE DATABASE cannot run in a transaction.
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=USER, password=PASSWORD, dbname="postgres",
            autocommit=True,
        ) as conn:  # fmt: skip
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


class MlflowServer:
    """``mlflow server`` on a free loopback port: a database backend, proxied artifacts."""

    def __init__(
        self, backend_uri: str, artifacts: Path, port: int | None = None,
        extra: tuple[str, ...] = (), env: dict[str, str] | None = None, host: str = "127.0.0.1",
    ) -> None:  # fmt: skip
        self.backend_uri, self.artifacts = backend_uri, artifacts
        self.extra, self.env, self.host = extra, env or {}, host
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = artifacts.parent / f"mlflow-server-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> MlflowServer:
        self.artifacts.mkdir(parents=True, exist_ok=True)
        cmd = [
            MLFLOW, "server", "--backend-store-uri", self.backend_uri,
            "--artifacts-destination", self.artifacts.as_uri(),
            "--host", self.host, "--port", str(self.port), "--workers", "2", *self.extra,
        ]  # fmt: skip
        # MLflow's server jobs (GenAI features) serve nothing here; on, each start spawns four
        # more interpreters (huey consumers) and takes 9 s instead of 6.
        env = os.environ | {"PGPASSWORD": PASSWORD, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        env |= self.env
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        await_ready(self.proc, lambda: answers(f"{self.url}/health"), self.log, timeout)
        return self

    def stop(self) -> None:
        """Stop the server and its workers (they share its process group)."""
        if self.proc is not None:
            stop_group(self.proc)
        self.proc = None


@contextlib.contextmanager
def team_services(artifacts: Path) -> Iterator[tuple[Postgres, MlflowServer]]:
    """PostgreSQL and an MLflow server on its ``mlflow`` database; both stopped on exit."""
    pg = Postgres().start()
    try:
        server = MlflowServer(pg.create_database("mlflow"), artifacts).start()
        try:
            yield pg, server
        finally:
            server.stop()
    finally:
        pg.stop()


class NetHost:
    """A "host" of its own on this machine: a network namespace joined to this one by a veth
    pair, this side ``10.77.<n>.1``, its side ``10.77.<n>.2`` (root only). Its link can be cut
    and restored like a pulled cable: packets are dropped, connections hang, nothing is reset."""

    def __init__(self, n: int) -> None:
        self.name, self.link = f"recflow-host{n}", f"rf{n}-h"
        self.gateway, self.address = f"10.77.{n}.1", f"10.77.{n}.2"

    @staticmethod
    def available() -> bool:
        return os.geteuid() == 0 and shutil.which("ip") is not None

    def create(self) -> NetHost:
        inside = f"rf{self.link[2:-2]}-n"
        for cmd in (
            ["ip", "netns", "add", self.name],
            ["ip", "link", "add", self.link, "type", "veth", "peer", "name", inside],
            ["ip", "link", "set", inside, "netns", self.name],
            ["ip", "addr", "add", f"{self.gateway}/24", "dev", self.link],
            ["ip", "link", "set", self.link, "up"],
            ["ip", "netns", "exec", self.name, "ip", "addr", "add", f"{self.address}/24", "dev",
             inside],
            ["ip", "netns", "exec", self.name, "ip", "link", "set", inside, "up"],
            ["ip", "netns", "exec", self.name, "ip", "link", "set", "lo", "up"],
        ):  # fmt: skip
            subprocess.run(cmd, check=True, capture_output=True)
        return self

    def run(self, cmd: list[str]) -> list[str]:
        """``cmd`` run on this host."""
        return ["ip", "netns", "exec", self.name, *cmd]

    def cut(self) -> None:
        subprocess.run(["ip", "link", "set", self.link, "down"], check=True)

    def restore(self) -> None:
        subprocess.run(["ip", "link", "set", self.link, "up"], check=True)

    def delete(self) -> None:
        subprocess.run(["ip", "link", "del", self.link], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


class GitDaemon:
    """``git daemon`` on a free loopback port exporting every repository under ``base``."""

    def __init__(self, base: Path) -> None:
        self.base, self.port = base, free_port()
        self.url = f"git://127.0.0.1:{self.port}"
        self.log = base.parent / f"git-daemon-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> GitDaemon:
        cmd = ["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={self.base}",
               "--listen=127.0.0.1", f"--port={self.port}", str(self.base)]  # fmt: skip
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        await_ready(self.proc, lambda: listens(self.port), self.log, timeout)
        return self

    def stop(self, timeout: float = 30) -> None:
        """Stop the daemon; return once its port is closed (or after ``timeout`` seconds)."""
        if self.proc is not None:
            stop_group(self.proc)
            # `git daemon` runs git-daemon as its child: the group's leader can exit before the
            # child has closed the port.
            deadline = time.monotonic() + timeout
            while listens(self.port) and time.monotonic() < deadline:
                time.sleep(0.05)
        self.proc = None

"""The team's services, started once per test file: PostgreSQL, the MLflow server on it, a
MovieLens-shaped archive, a preprocess run on the server and a git daemon serving the project."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from recflow.testing.archives import ml100k_files, write_zip
from recflow.testing.services import PASSWORD, GitDaemon, MlflowServer, Postgres
from tests.helpers import PROJECT
from tests.team.helpers import prepare_on


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    pg = Postgres().start()
    yield pg
    pg.stop()


@pytest.fixture(scope="module")
def server(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    root = tmp_path_factory.mktemp("server")
    srv = MlflowServer(postgres.create_database("mlflow"), root / "artifacts").start()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def client_of(server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """This test process reads results through the server, like any team member."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    mlflow.set_tracking_uri(server.url)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_zip(tmp_path_factory.mktemp("www") / "ml-100k.zip", ml100k_files())


@pytest.fixture(scope="module")
def prepared(server: MlflowServer, archive: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A preprocess run on the server, made by one team member; returns its run ID."""
    return prepare_on(server.url, archive, tmp_path_factory.mktemp("member") / "data", "team-data")


@pytest.fixture(scope="module")
def git_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str]]]:
    """``git daemon`` on loopback serving recflow.git (the project plus a later commit) and
    mono.git (the project in pipelines/recflow/); yields the base URL and recflow's commits."""
    root = tmp_path_factory.mktemp("git")

    def git(*args: str, cwd: Path = root) -> str:
        ident = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
        return subprocess.run(
            ["git", *ident, *args], cwd=cwd, check=True, capture_output=True, text=True
        ).stdout.strip()

    work = root / "work"
    git("clone", "-q", str(PROJECT), str(work))
    (work / "CHANGES").write_text("a later commit\n")
    git("add", "CHANGES", cwd=work)
    git("commit", "-qm", "a later commit", cwd=work)
    commits = git("rev-parse", "HEAD~1", "HEAD", cwd=work).split()
    served = root / "served"
    git("clone", "-q", "--bare", str(work), str(served / "recflow.git"))

    mono = root / "mono"
    (mono / "pipelines").mkdir(parents=True)
    git("clone", "-q", str(PROJECT), str(mono / "pipelines" / "recflow"))
    shutil.rmtree(mono / "pipelines" / "recflow" / ".git")
    git("init", "-q", str(mono))
    git("add", ".", cwd=mono)
    git("commit", "-qm", "monorepo", cwd=mono)
    git("clone", "-q", "--bare", str(mono), str(served / "mono.git"))

    # Started with a deadline: the fixture fails if the daemon does not listen in time.
    daemon = GitDaemon(served).start()
    try:
        yield daemon.url, commits
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def env_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where `--env-manager uv` builds environments; shared, so later runs reuse the first's."""
    return tmp_path_factory.mktemp("envs")

"""Shared fixtures: a temporary tracking store, tiny MovieLens-shaped data, a loopback server,
and pipeline runs (download, preprocess, hpo, train_best) in that store.

The pipeline runs are made once per session, in template folders; each test gets its own copy
(see ``store``), so a test may write to its store freely and no test sees another's runs.
Plain helpers live in ``tests/helpers.py``; fixtures are found by pytest, never imported.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# MLflow's usage telemetry (which cannot reach its endpoint from here) sets and unsets an
# environment variable from a background thread, while click's CliRunner copies os.environ in
# the test's thread: the two race (KeyError '_MLFLOW_TELEMETRY_SESSION_ID'). Off before import.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

import mlflow  # noqa: E402
import numpy as np
import pandas as pd
import pytest

from recflow.testing.archives import ml100k_files, write_zip
from tests.helpers import SHARED_DATA, checkerboard_data, copy_tracking_folder, ok

# The pipeline as far as each template goes; each is built from a copy of the one before.
STAGES = ("empty", "downloaded", "prepared", "trained")
# A test's store starts at the furthest stage among the fixtures it asks for (else empty).
STAGE_OF_FIXTURE = {"trained": "trained", "prep_id": "prepared", "raw_id": "downloaded"}


# The test files that take longest in `make test` (-n auto --dist loadfile), longest first: a
# file is one unit of work, handed out in collection order (--no-loadscope-reorder), and one that
# starts last keeps its worker busy after the others have run out. The team tests are split into
# files under team/ for this: as one file they took ~500 s of one worker.
LONGEST_FIRST = (
    "test_end_to_end.py", "team/test_git.py", "team/test_restarts.py", "test_faults.py",
    "team/test_partition.py", "team/test_main.py", "team/test_workers.py",
    "test_own_data_end_to_end.py", "test_hpo.py", "test_auth.py", "test_steps.py", "test_ui.py",
)  # fmt: skip
TESTS = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files in LONGEST_FIRST before the others; each file's tests together, in file order."""

    def rank(item: pytest.Item) -> int:
        name = item.path.relative_to(TESTS).as_posix()
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # a stable sort


def _sqlite_uri(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlflow.db'}"


def _fingerprint(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


@contextlib.contextmanager
def _pointed_at(folder: Path) -> Iterator[None]:
    """MLflow and the download cache point at ``folder`` inside the block, and back after it."""
    previous = mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", _sqlite_uri(folder))
        mp.setenv("RECFLOW_DATA_DIR", str(folder / "data"))
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        mlflow.set_tracking_uri(_sqlite_uri(folder))
        try:
            yield
        finally:
            while mlflow.active_run():
                mlflow.end_run()
            mlflow.set_tracking_uri(previous)


class StoreTemplates:
    """Tracking folders built on first use, once per session, one per stage of the pipeline:
    ``mlflow.db`` (sqlite), ``mlruns/`` (its artifacts), ``data/`` (RECFLOW_DATA_DIR) and the
    tiny archive the download step read. Tests get copies; ``check_untouched`` verifies that
    nothing wrote into a template after it was built.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._built: dict[str, tuple[Path, dict[str, str], dict[str, tuple[int, int]]]] = {}

    def get(self, stage: str) -> tuple[Path, dict[str, str]]:
        """The template folder of ``stage`` and the IDs of its runs: {raw, preprocess, hpo, train}
        as far as the stage goes."""
        if stage not in self._built:
            folder, ids = self._build(stage)
            self._built[stage] = (folder, ids, _fingerprint(folder))
        folder, ids, _ = self._built[stage]
        return folder, dict(ids)

    def check_untouched(self, stage: str) -> None:
        folder, _, built = self._built[stage]
        now = _fingerprint(folder)
        changed = sorted(k for k in built.keys() | now.keys() if built.get(k) != now.get(k))
        assert not changed, f"the {stage} template was written to: {changed}"

    def _build(self, stage: str) -> tuple[Path, dict[str, str]]:
        folder = self.root / stage
        if stage == "empty":
            folder.mkdir()
            # A new sqlite store keeps its artifacts in ./mlruns: create it from inside the folder.
            with pytest.MonkeyPatch.context() as mp:
                mp.chdir(folder)
                mlflow.MlflowClient(_sqlite_uri(folder)).search_experiments()
            return folder, {}
        source, ids = self.get(STAGES[STAGES.index(stage) - 1])
        copy_tracking_folder(source, folder)
        with _pointed_at(folder):
            if stage == "downloaded":
                archive = write_zip(folder / "ml-100k.zip", ml100k_files())
                ids["raw"] = ok("download", ["--dataset", "ml-100k", "--data_url", str(archive)])
            elif stage == "prepared":
                ids["preprocess"] = ok("preprocess", ["--raw_run_id", ids["raw"]])
            else:
                prep = ids["preprocess"]
                ids["hpo"] = ok(
                    "hpo", ["--preprocess_run_id", prep, "--n_trials", "1", "--pruner", "none"]
                )
                args = ["--preprocess_run_id", prep, "--hpo_run_id", ids["hpo"]]
                ids["train"] = ok("train_best", args)
                # The same model from another run (training is deterministic): a candidate
                # that neither beats nor is the version it is compared with.
                ids["twin"] = ok("train_best", args)
        return folder, ids


@pytest.fixture(scope="session")
def store_templates(tmp_path_factory: pytest.TempPathFactory) -> StoreTemplates:
    return StoreTemplates(tmp_path_factory.mktemp("stores"))


@dataclass(frozen=True)
class Store:
    uri: str
    ids: dict[str, str]


@pytest.fixture
def store(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    store_templates: StoreTemplates,
) -> Iterator[Store]:
    """A tracking store of the test's own in ``tmp_path``, with MLflow and the download cache
    pointed there. It starts as far down the pipeline as the test asks for: with ``trained``
    download, preprocess, hpo and train_best runs; with ``prep_id`` download and preprocess;
    with ``raw_id`` a download run; else no runs. The store is copied from a session template
    with the tiny archive, the data folder and the artifacts, as if made in ``tmp_path``; even
    the empty one, which spares each test the database migrations of a new store and keeps
    artifacts out of the working directory (a new sqlite store puts them in ./mlruns).
    """
    names = request.fixturenames
    stage = next((s for name, s in STAGE_OF_FIXTURE.items() if name in names), "empty")
    template, ids = store_templates.get(stage)
    copy_tracking_folder(template, tmp_path)
    uri = _sqlite_uri(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("RECFLOW_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    mlflow.set_tracking_uri(uri)
    yield Store(uri, ids)
    while mlflow.active_run():
        mlflow.end_run()
    store_templates.check_untouched(stage)


@pytest.fixture
def tracking(store: Store) -> str:
    """The URI of the test's tracking store (see ``store``)."""
    return store.uri


@pytest.fixture(scope="session", autouse=True)
def session_temp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The temp folder (TMPDIR) of every process the tests start, removed at the end: a
    SIGKILLed step cannot remove its own temp files (multiprocessing's ``pymp-*``, its scratch),
    and each `mlflow run` leaves an empty folder of MLflow's. This process keeps its own temp
    folder: its exit handlers remove their files after the fixtures are gone. Short, as a fork
    server's socket path in it must fit in 108 bytes."""
    tmp_path_factory.getbasetemp()  # pytest's own folders stay where they are, kept for failures
    tempfile.gettempdir()  # read (and cached) before TMPDIR changes: this process keeps it
    folder = Path(tempfile.mkdtemp(prefix="recflow-tests-"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(folder))
        yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def short_temp() -> Iterator[Path]:
    """A temp folder (TMPDIR) for a user's processes, to see what they leave there; short, as a
    fork server's socket path in it must fit in 108 bytes (a test's ``tmp_path`` may not)."""
    folder = Path(tempfile.mkdtemp(prefix="recflow-test-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def tiny_zip(tmp_path: Path) -> Path:
    """A synthetic archive in the official ml-100k layout (40 users, 30 items)."""
    return write_zip(tmp_path / "ml-100k.zip", ml100k_files())


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on loopback: (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # Polled every 50 ms, not 500: shutdown waits for a poll, and many tests stop a server.
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def ratings() -> pd.DataFrame:
    """A MovieLens-shaped ratings frame: 6 users, 8 items, ratings 1-5, distinct timestamps."""
    rng = np.random.default_rng(7)
    rows = [
        (u, i, float(rng.integers(1, 6)), 1000 * u + t)
        for u in range(1, 7)
        for t, i in enumerate(rng.choice(np.arange(1, 9), size=5, replace=False))
    ]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


@pytest.fixture
def checkerboard() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Known-answer data (see ``helpers.checkerboard_data``)."""
    return checkerboard_data()


@pytest.fixture
def shared_ml100k() -> Path:
    """The real ML-100K files, or a skip when ../shared/data is absent."""
    folder = SHARED_DATA / "ml-100k"
    if not (folder / "u.data").is_file():
        pytest.skip("real MovieLens data not available in ../shared/data")
    return folder


@pytest.fixture
def raw_id(store: Store) -> str:
    """A download run of the tiny archive (``tiny_zip``) in the test's store."""
    return store.ids["raw"]


@pytest.fixture
def prep_id(store: Store) -> str:
    """A preprocess run of that download in the test's store."""
    return store.ids["preprocess"]


@pytest.fixture
def trained(store: Store) -> dict[str, str]:
    """The chain up to train_best (one HPO trial) in the test's store: {raw, preprocess, hpo,
    train, twin} run IDs (twin: train_best again, the same model in another run)."""
    return dict(store.ids)


@pytest.fixture(scope="module")
def module_trained(
    store_templates: StoreTemplates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """``trained`` in one store shared by the module's tests (for an expensive module fixture,
    e.g. a model server), MLflow and the download cache pointed there until the module ends."""
    template, ids = store_templates.get("trained")
    folder = tmp_path_factory.mktemp("module-store")
    copy_tracking_folder(template, folder)
    with _pointed_at(folder):
        yield ids
    store_templates.check_untouched("trained")

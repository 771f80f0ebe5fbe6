"""Creating a brand-new local tracking store safely when several processes open it at once.

MLflow's SQLite tracking and registry stores create their tables (by running every schema
migration) when they find none, without a lock: two processes opening the same new file together
both migrate, and one dies (``table experiments already exists``, ``duplicate column name``) or
the file is left half-migrated for good. Opening the store here first, under an exclusive lock
on a file beside the database, lets one process create the tables while the others wait and then
find them. Other stores (a tracking server, PostgreSQL) are left to their own locking.

Usage: ``python -m recflow.store [TRACKING_URI]`` (default: MLflow's tracking URI), as
``make main`` does before ``mlflow run``; every step also does it before opening its run.
"""

from __future__ import annotations

import fcntl
import sys
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient
from sqlalchemy.engine import make_url

SQLITE = "sqlite"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a local SQLite store URI, or None for any other store."""
    if not uri.startswith(f"{SQLITE}:"):
        return None
    database = make_url(uri).database
    return None if database in (None, "", ":memory:") else Path(database)


def prepare_store(uri: str | None = None) -> None:
    """Make sure a local SQLite store has its tables, creating them under a lock if needed."""
    uri = uri or mlflow.get_tracking_uri()
    path = sqlite_path(uri)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(path.name + ".init-lock")
    with lock.open("a") as held:
        # Blocks until the process creating the tables has finished; cheap once they exist.
        fcntl.flock(held, fcntl.LOCK_EX)
        try:
            # Opening both stores runs any missing migrations (tracking and registry tables).
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            client.search_experiments(max_results=1)
            client.search_registered_models(max_results=1)
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)


if __name__ == "__main__":
    prepare_store(sys.argv[1] if len(sys.argv) > 1 else None)

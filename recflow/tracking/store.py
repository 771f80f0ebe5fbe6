"""Opening the tracking store: a brand-new local one created safely when several processes open
it at once; a tracking server that refuses our credentials, or cannot be reached, said in one line.

MLflow's SQLite tracking and registry stores create their tables (by running every schema
migration) when they find none, without a lock: two processes opening the same new file together
both migrate, and one dies (``table experiments already exists``, ``duplicate column name``) or
the file is left half-migrated for good. Opening the store here first, under an exclusive lock
on a file beside the database, lets one process create the tables while the others wait and then
find them. Other stores (a tracking server, PostgreSQL) are left to their own locking.

Usage: ``python -m recflow.tracking.store [TRACKING_URI]`` (default: MLflow's tracking URI), as
``make main`` does before ``mlflow run``; every step also does it before opening its run.
"""

from __future__ import annotations

import fcntl
import os
import re
import sys
from pathlib import Path

import mlflow
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sqlalchemy.engine import make_url

from recflow.errors import UserError

SQLITE = "sqlite"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a local SQLite store URI, or None for any other store."""
    if not uri.startswith(f"{SQLITE}:"):
        return None
    database = make_url(uri).database
    return None if database in (None, "", ":memory:") else Path(database)


def prepare_store(uri: str | None = None) -> None:
    """Make sure a local SQLite store has its tables, creating them under a lock if needed, and
    that a tracking server accepts our credentials (a ``UserError`` of one line if not)."""
    uri = uri or mlflow.get_tracking_uri()
    if uri.startswith(("http://", "https://")):
        check_credentials(uri)
        return
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


def check_credentials(uri: str) -> None:
    """One cheap request to the tracking server; refused credentials become a one-line error
    (MLflow's own is a traceback, raised at the first request of a step)."""
    try:
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except MlflowException as e:
        # MLflow raises a server it cannot reach as a page of traceback around the cause.
        if isinstance(e.__context__, requests.ConnectionError):
            why = re.findall(r"\[Errno -?\d+\] ([^\"')]+)", str(e.__context__))
            raise UserError(
                f"cannot reach the tracking server {uri}: {why[-1] if why else 'no connection'}; "
                "start it, or set MLFLOW_TRACKING_URI to one that runs"
            ) from None
        if e.error_code != "UNAUTHENTICATED":
            raise
        user = os.environ.get("MLFLOW_TRACKING_USERNAME")
        who = f"the credentials of {user}" if user else "anonymous access"
        raise UserError(
            f"the tracking server {uri} refused {who}: set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD to an account it knows"
        ) from None


if __name__ == "__main__":
    try:
        prepare_store(sys.argv[1] if len(sys.argv) > 1 else None)
    except UserError as e:
        sys.exit(f"Error: {e}")

"""Where studies live: journal files or databases, and the study a worker joins.

In: a storage spec ("" = the default journal file, a path = a journal file, a URL = a database)
and a study name, metric and search space. Out: an optuna storage and study, or a one-line
``UserError`` with any password in the URL masked.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

import optuna
import sqlalchemy.exc
from sqlalchemy.engine import make_url

from recflow.errors import UserError, first_line
from recflow.hpo import attrs
from recflow.hpo.liveness import end_dead_trial_runs, heartbeat_seconds
from recflow.hpo.space import Dimension, space_digest

log = logging.getLogger(__name__)
# How long a storage operation waits for a database that is restarting.
RECONNECT_SECONDS = 60
# How long PostgreSQL keeps a session that sits idle inside a transaction before ending it. A
# worker whose link is cut between a statement and its commit leaves its session so, holding the
# trial's row lock; the database would notice the dead client only after TCP keepalive (hours),
# and every other worker would wait on that lock to fail the trial. Optuna's transactions commit
# at once, and a session ended by mistake is reopened (PatientRDBStorage).
IDLE_IN_TRANSACTION_SECONDS = 30


def default_study_name(
    preprocess_run_id: str, metric: str, space: list[Dimension], fidelity: str = "",
    seed: int = 0,
) -> str:  # fmt: skip
    """The data, the objective, a digest of the search space and, when not full, the fidelity
    and the seed (the users sampled depend on it)."""
    name = f"{preprocess_run_id}-{metric}-{space_digest(space)}"
    return f"{name}-{fidelity},seed={seed}" if fidelity else name


def open_storage(storage: str, default_dir: Path) -> optuna.storages.BaseStorage:
    """An optuna storage: "" = a journal file under ``default_dir``, a URL = a database, else a
    journal file at that path. Journal files survive a killed process and allow several local
    workers; a database URL (e.g. postgresql://) serves workers on many machines.
    """
    if has_password(storage):
        log.warning(
            "the storage URL holds a password, and MLflow records it as the hpo run's `storage` "
            "parameter: leave it out and set PGPASSWORD or ~/.pgpass instead"
        )
    try:
        if "://" in storage:
            return _open_database(storage)
        path = Path(storage) if storage else default_dir / "optuna" / "studies.journal"
        path.parent.mkdir(parents=True, exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(str(path))
        return optuna.storages.JournalStorage(backend)
    except UserError:
        raise
    except Exception as e:  # sqlalchemy and driver errors have no common base worth naming
        where = masked(storage) or "(default journal file)"
        raise UserError(f"cannot open optuna storage {where}: {first_line(e)}") from e


def connect_args(url: str) -> dict[str, str]:
    """The driver's connection options for a storage URL: on PostgreSQL, the server options of
    the URL's ``options=`` (if any) after the idle-in-transaction timeout, so that the user's
    ``-c`` settings, the timeout's included, win; SQLAlchemy's ``connect_args`` replace the URL's
    own ``options`` rather than adding to it."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return {}
    timeout = f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_SECONDS}s"
    own = parsed.query.get("options")
    own = " ".join(own) if isinstance(own, tuple) else own  # options=a&options=b
    return {"options": f"{timeout} {own}" if own else timeout}


def _open_database(url: str, attempts: int = 5) -> optuna.storages.RDBStorage:
    """An optuna database storage with heartbeats, which let a surviving worker fail the trials
    of a worker that was killed.

    On PostgreSQL a session left idle inside a transaction is ended after
    ``IDLE_IN_TRANSACTION_SECONDS``, so that a worker cut off mid-commit does not lock its trial
    for good. Workers started together on an empty database race to create optuna's tables; the
    loser's CREATE fails (PostgreSQL: a duplicate key in pg_type) although the tables now exist, so
    creation is retried.
    """
    beat = heartbeat_seconds()
    engine: dict[str, object] = {"pool_pre_ping": True, "connect_args": connect_args(url)}
    for attempt in range(1, attempts + 1):
        try:
            return PatientRDBStorage(
                url, heartbeat_interval=beat, grace_period=3 * beat,
                heartbeat_stale_trial_callback=end_dead_trial_runs, engine_kwargs=engine,
            )  # fmt: skip
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == attempts:
                raise
            time.sleep(0.5 * attempt)
    raise AssertionError("unreachable")


class PatientRDBStorage(optuna.storages.RDBStorage):
    """An optuna database storage whose operations ride out a database restart.

    A restart (or failover) closes every connection: a query in flight fails, and so do new
    connections while the server is down. Then a worker died mid-study (one of three restarts
    mid-trial). Here every storage operation that fails with a connection error is retried, on a
    new session, for up to RECONNECT_SECONDS.
    """


def connection_lost(error: BaseException) -> sqlalchemy.exc.OperationalError | None:
    """The lost connection behind ``error``, if that is what it comes from, else None.

    optuna reports a failed session as StorageInternalError with the cause inside, and the cause
    need not be the lost connection itself: when its fast query fails optuna tries a slower one on
    the same session, which SQLAlchemy refuses (PendingRollbackError) while handling the first.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, sqlalchemy.exc.OperationalError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _patient(method):  # noqa: ANN001, ANN202
    @functools.wraps(method)
    def call(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        deadline, delay = time.monotonic() + RECONNECT_SECONDS, 0.25
        while True:
            try:
                return method(self, *args, **kwargs)
            except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
                lost = connection_lost(e)
                if lost is None:
                    raise
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("optuna database unreachable (%s); retrying", first_line(lost))
                self.remove_session()
                time.sleep(delay)
                delay = min(2 * delay, 4.0)

    return call


# Every public operation, and the private ones that optuna's caching layer (which wraps every
# RDBStorage) calls directly; each opens and commits a session of its own.
_CALLED_BY_CACHE = (
    "_create_new_trial", "_get_best_trial_id", "_get_stale_trial_ids", "_get_trials",
    "_set_trial_param",
)  # fmt: skip
for _name, _method in vars(optuna.storages.RDBStorage).items():
    public = not _name.startswith("_") and _name != "remove_session"
    if callable(_method) and (public or _name in _CALLED_BY_CACHE):
        setattr(PatientRDBStorage, _name, _patient(_method))


def has_password(storage: str) -> bool:
    """Whether a database URL carries a password (which MLflow would record as a parameter)."""
    url = _url(storage)
    return url is not None and url.password is not None


def masked(storage: str) -> str:
    """The storage spec with any password in it replaced by ***."""
    url = _url(storage)
    return url.render_as_string(hide_password=True) if url is not None else storage


def _url(storage: str) -> sqlalchemy.engine.URL | None:
    # A journal file path is not a URL; a URL SQLAlchemy cannot parse has no password to mask.
    if "://" not in storage:
        return None
    try:
        return make_url(storage)
    except sqlalchemy.exc.ArgumentError:
        return None


def open_study(
    storage: optuna.storages.BaseStorage,
    name: str,
    metric: str,
    space: list[Dimension],
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
    fidelity: str = "",
    data: str = "",
) -> optuna.Study:
    """Create the study or continue it, refusing one made for another metric, search space,
    fidelity (users tuned and validated on) or data (``data``: a digest of the interactions the
    trials train and validate on; a study named by the user can meet new data, e.g. after the
    data grew, and its trials' scores would not be comparable)."""
    try:
        # Load first: checking an existing study must not write to its storage.
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        study = optuna.create_study(
            study_name=name, storage=storage, sampler=sampler, pruner=pruner,
            direction="maximize", load_if_exists=True,  # another worker may create it first
        )  # fmt: skip
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise UserError(f"study {name!r} minimises; ours maximise {metric}: use another study_name")
    required = {
        attrs.STUDY_METRIC: metric, attrs.STUDY_SPACE: space_digest(space),
        attrs.STUDY_FIDELITY: fidelity, attrs.STUDY_DATA: data,
    }  # fmt: skip
    for key, value in required.items():
        stored = study.user_attrs.get(key)
        if stored is None:
            if key == attrs.STUDY_DATA and study.trials:
                log.warning("study %r has no record of the data its trials saw (it is older than "
                            "that record): continuing it on this data", name)  # fmt: skip
            study.set_user_attr(key, value)
        elif key == attrs.STUDY_DATA and stored != value:
            raise UserError(
                f"study {name!r} was tuned on other data: its trials' training and validation "
                "interactions differ from these (another preprocess run, seed or user sample); "
                "use another study_name"
            )
        elif stored != value:
            raise UserError(
                f"study {name!r} was created with {key} {stored!r}, not {value!r}; "
                "use another study_name or the original settings"
            )
    return study

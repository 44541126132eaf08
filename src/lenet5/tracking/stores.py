"""The MLflow store: whether it can be used, one process at a time creating or migrating a
local one (and its experiments), a tracking server that answers and takes this user's login.

A store that cannot be used is refused by name before any training, with nothing written to
it: a file that is not a database, a schema from a newer MLflow than this one, a read-only
file or folder, a database another process keeps locked.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import nullcontext
from functools import cache
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import urlopen

from filelock import FileLock

from lenet5.core.errors import StoreError
from lenet5.core.paths import PROJECT_ROOT, is_server, local_path, sqlite_path
from lenet5.core.process import environ

# MLflow is imported inside the functions that use it: this module loads in milliseconds, so
# lenet5-report and lenet5-train answer a bad argument before MLflow loads.
SQLITE_HEADER = b"SQLite format 3\x00"
LOCK_WAIT_S = 30.0  # how long a write lock held by another process is waited for


def schema_version(db: Path, wait_s: float = 5.0) -> str | None:
    """The store's schema revision (alembic), read-only; None where it has no schema yet."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=wait_s) as con:
            (version,) = con.execute("select version_num from alembic_version").fetchone()
    except (sqlite3.Error, TypeError):
        return None
    return version


def store_ready(db: Path) -> bool:
    """Whether a SQLite store's schema is complete (read-only: never migrates it).

    A store that another process is still creating has no or an older alembic revision;
    opening it with MlflowClient would run the migrations a second time, concurrently,
    and break both processes.
    """
    return schema_version(db) == _revisions()[0]


def store_lock(tracking_uri: str):
    """A lock beside a local SQLite store (`mlflow.db.lock`), held while the store's schema is
    created or migrated and while an experiment is created: MLflow does neither safely from
    several processes at once (tests/test_reliability.py: of 8 processes started together on a
    fresh store, most crashed in the migration). A no-op for other stores."""
    db = sqlite_path(tracking_uri)
    return FileLock(f"{db}.lock", timeout=300) if db is not None else nullcontext()


@cache
def _revisions() -> tuple[str, frozenset[str]]:
    """(head, every revision) of the schema migrations this MLflow ships."""
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    script = ScriptDirectory.from_config(_get_alembic_config("sqlite://"))
    return script.get_current_head(), frozenset(r.revision for r in script.walk_revisions())


def check_store(db: Path, write: bool = True) -> str | None:
    """Refuse, by name and before anything writes to it, a store file this MLflow cannot use
    (`write`: or cannot write); return its schema revision (None for a new store, or one
    still being created)."""
    import mlflow

    if not db.is_file() or db.stat().st_size == 0:
        if write and not os.access(db.parent, os.W_OK):
            raise StoreError(_read_only(db))
        return None  # new: MLflow creates it
    with db.open("rb") as f:
        if f.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
            raise StoreError(
                f"the MLflow store {db} is not an SQLite database (overwritten or corrupt); "
                "nothing was written to it. Restore it from your backup (README: Back up the "
                "store), or point mlflow.tracking_uri=... at another store"
            )
    version = schema_version(db, min(5.0, LOCK_WAIT_S))  # a locked store: named below
    if version is not None and version not in _revisions()[1]:
        raise StoreError(
            f"the MLflow store {db} has schema revision {version}, which MLflow "
            f"{mlflow.__version__} does not know: a newer MLflow made it. Use that MLflow "
            "(pip install -U mlflow), or point mlflow.tracking_uri=... at another store"
        )
    if write:
        check_writable(db)
    return version


def _read_only(db: Path) -> str:
    return (
        f"the MLflow store {db} is read-only for this user (the file, or its folder "
        f"{db.parent}, where SQLite writes its journal; or a read-only mount); nothing was "
        "written. Make both writable (chmod u+w), or point mlflow.tracking_uri=... at a "
        "writable store"
    )


def check_writable(db: Path, wait_s: float | None = None) -> None:
    """Refuse a store this process cannot write: a read-only file or folder, or a database
    another process keeps locked for longer than `wait_s` (default LOCK_WAIT_S).

    Takes SQLite's write lock and gives it back (BEGIN IMMEDIATE; ROLLBACK): nothing is
    written, and a writer that holds it briefly (another run logging) is waited for.
    """
    wait_s = LOCK_WAIT_S if wait_s is None else wait_s
    if not (os.access(db, os.W_OK) and os.access(db.parent, os.W_OK)):
        raise StoreError(_read_only(db))  # SQLite would only find out at the first write
    try:
        con = sqlite3.connect(db, timeout=wait_s, isolation_level=None)
        try:
            con.execute("begin immediate")
            con.execute("rollback")
        finally:
            con.close()
    except sqlite3.OperationalError as e:
        if "readonly" in str(e) or "read-only" in str(e):
            raise StoreError(_read_only(db)) from e
        if "locked" in str(e) or "busy" in str(e):
            raise StoreError(
                f"the MLflow store {db} stayed locked by another process for {wait_s:.0f} s "
                "(an open sqlite3 shell or DB browser, a hung process: `fuser "
                f"{db}` names it); nothing was written. Close it and run again, or point "
                "mlflow.tracking_uri=... at another store"
            ) from e
        raise StoreError(f"cannot write the MLflow store {db}: {e}") from e


def unreachable(tracking_uri: str, timeout: float = 5.0) -> str | None:
    """Why an http(s) tracking server does not answer, or None where it does (any HTTP
    answer counts) or the store is not a server. One try, `timeout` seconds at most."""
    if not is_server(tracking_uri):
        return None
    try:
        with urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=timeout):
            return None
    except HTTPError:
        return None  # it answered
    except (URLError, OSError) as e:
        return str(getattr(e, "reason", e))


def check_server(tracking_uri: str, timeout: float = 5.0) -> None:
    """Refuse, in seconds, a tracking server that does not answer (MLflow's own client would
    retry for minutes), or that does not take this user's credentials."""
    reason = unreachable(tracking_uri, timeout)
    if reason is not None:
        raise StoreError(
            f"cannot reach the MLflow tracking server {tracking_uri} ({reason}): start it, or "
            "point mlflow.tracking_uri=... at a server that runs (or at a local "
            "sqlite:/// store)"
        )
    check_login(tracking_uri, timeout)


def check_login(tracking_uri: str, timeout: float = 5.0) -> None:
    """Refuse a server that answers 401/403 to one read with the credentials MLflow's client
    would send: MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN, from the
    environment only (never a config file, so no secret reaches a run's records)."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    creds = get_default_host_creds(tracking_uri)
    response = http_request(
        creds,
        "/api/2.0/mlflow/experiments/search",
        "GET",
        params={"max_results": 1},
        max_retries=0,
        timeout=int(timeout),
    )
    if response.status_code in (401, 403):
        given = (
            "the credentials given were refused"
            if creds.username or creds.token
            else ("it needs a login and none was given")
        )
        raise StoreError(
            f"the MLflow tracking server {tracking_uri} answered HTTP {response.status_code}: "
            f"{given}. Set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or "
            "MLFLOW_TRACKING_TOKEN) in the environment to an account on that server"
        )


def http_retries(mlflow_cfg):
    """A scope in which MLflow's client retries a tracking server that does not answer for a
    bounded time (by default about 4 minutes per request): `mlflow.http_retries` retries with
    backoff 4, 8, 16, ... s, `mlflow.http_timeout_s` per request. They are MLflow's own
    variables (MLFLOW_HTTP_REQUEST_*), which a process started inside inherits; null leaves a
    variable as the environment has it. The commands enter it; leaving puts them back."""
    retries, timeout = mlflow_cfg.get("http_retries"), mlflow_cfg.get("http_timeout_s")
    return environ(
        {
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": None if retries is None else str(retries),
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": None if retries is None else "2",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": None if timeout is None else str(timeout),
        }
    )


def ensure_experiment(client, name: str, artifact_root: str | None) -> str:
    """The id of experiment `name`, created with its artifacts under `artifact_root` (None:
    the project's mlruns/artifacts for a local store, the server's own for a tracking server);
    one process at a time creates it, the others then read it (none lands in "Default").
    On a tracking server no lock spans the clients: one that loses the race to create it
    (RESOURCE_ALREADY_EXISTS, seen with 8 clients on PostgreSQL) reads the winner's."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    with store_lock(client.tracking_uri):
        exp = client.get_experiment_by_name(name)  # made while this process waited?
        if exp is not None:
            return exp.experiment_id
        location = None  # a tracking server's own artifact store
        if artifact_root is not None or not is_server(client.tracking_uri):
            root = artifact_root or str(PROJECT_ROOT / "mlruns" / "artifacts")
            location = (
                Path(root, name).as_uri() if local_path(root) else f"{root.rstrip('/')}/{name}"
            )
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return client.get_experiment_by_name(name).experiment_id


def client_for(tracking_uri: str, write: bool = True):
    """An MlflowClient on `tracking_uri`, its store ready: a local SQLite store's folder and
    schema are created (or migrated) by one process at a time; `write`: refused unless it
    can be written."""
    from mlflow.tracking import MlflowClient

    db = sqlite_path(tracking_uri)
    if db is not None:
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the MLflow store folder {db.parent}: {e}") from e
        version = check_store(db, write)
        # A new store (None) needs no look at the migrations here (~1 s to load them): MLflow
        # loads them itself to create it.
        if version is None or version != _revisions()[0]:
            with store_lock(tracking_uri):  # constructing the client creates or migrates it
                return MlflowClient(tracking_uri=tracking_uri)
    elif is_server(tracking_uri):
        check_server(tracking_uri)  # other stores (postgresql://, file:) are MLflow's to open
    return MlflowClient(tracking_uri=tracking_uri)

"""The MLflow store on disk: where it is, whether it can be used, and one process at a time
creating or migrating it.

A store that cannot be used is refused by name before any training, with nothing written to
it: a file that is not a database, or a schema from a newer MLflow than this one.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from urllib.parse import urlparse

from lenet5.config import UserError

SQLITE_HEADER = b"SQLite format 3\x00"


class StoreError(UserError, RuntimeError):
    """The MLflow store cannot be opened or written; the message says where and why."""


def sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def local_path(uri: str) -> Path | None:
    """The folder behind a local artifact URI, or None for a remote one."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path)
    return None


def schema_version(db: Path) -> str | None:
    """The store's schema revision (alembic), read-only; None where it has no schema yet."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
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
    from contextlib import nullcontext

    from filelock import FileLock

    db = sqlite_path(tracking_uri)
    return FileLock(f"{db}.lock", timeout=300) if db is not None else nullcontext()


@cache
def _revisions() -> tuple[str, frozenset[str]]:
    """(head, every revision) of the schema migrations this MLflow ships."""
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    script = ScriptDirectory.from_config(_get_alembic_config("sqlite://"))
    return script.get_current_head(), frozenset(r.revision for r in script.walk_revisions())


def check_store(db: Path) -> str | None:
    """Refuse, by name and before anything writes to it, a store file this MLflow cannot use;
    return its schema revision (None for a new store, or one still being created)."""
    import mlflow

    if not db.is_file() or db.stat().st_size == 0:
        return None  # new: MLflow creates it
    with db.open("rb") as f:
        if f.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
            raise StoreError(
                f"the MLflow store {db} is not an SQLite database (overwritten or corrupt); "
                "nothing was written to it. Restore it from your backup (README: Back up the "
                "store), or point mlflow.tracking_uri=... at another store"
            )
    version = schema_version(db)
    if version is not None and version not in _revisions()[1]:
        raise StoreError(
            f"the MLflow store {db} has schema revision {version}, which MLflow "
            f"{mlflow.__version__} does not know: a newer MLflow made it. Use that MLflow "
            "(pip install -U mlflow), or point mlflow.tracking_uri=... at another store"
        )
    return version


def check_server(tracking_uri: str, timeout: float = 5.0) -> None:
    """Refuse, in seconds, a tracking server that does not answer (MLflow's own client would
    retry for minutes). Any HTTP answer counts as reachable; only a failed connection fails."""
    from urllib.error import HTTPError, URLError
    from urllib.request import urlopen

    try:
        with urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=timeout):
            return
    except HTTPError:
        return  # it answered
    except (URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise StoreError(
            f"cannot reach the MLflow tracking server {tracking_uri} ({reason}): start it, or "
            "point mlflow.tracking_uri=... at a server that runs (or at a local "
            "sqlite:/// store)"
        ) from e


def client_for(tracking_uri: str):
    """An MlflowClient on `tracking_uri`, its store ready: a local SQLite store's folder and
    schema are created (or migrated) by one process at a time."""
    from mlflow.tracking import MlflowClient

    db = sqlite_path(tracking_uri)
    if db is not None:
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the MLflow store folder {db.parent}: {e}") from e
        if check_store(db) != _revisions()[0]:
            with store_lock(tracking_uri):  # constructing the client creates or migrates it
                return MlflowClient(tracking_uri=tracking_uri)
    elif urlparse(tracking_uri).scheme in ("http", "https"):
        check_server(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri)

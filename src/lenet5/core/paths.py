"""Where the project lives, where its records go by default, and what kind of place a URI
names."""

import os
from pathlib import Path
from urllib.parse import unquote, urlparse, urlsplit, urlunsplit

from lenet5.core.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[3]
CONF_DIR = PROJECT_ROOT / "conf"
EXPERIMENTS_DIR = PROJECT_ROOT / "experiments"
# The local store every command uses unless told otherwise (conf/config.yaml's
# mlflow.tracking_uri reads it through the `default_tracking_uri` resolver).
DEFAULT_TRACKING_URI = f"sqlite:///{PROJECT_ROOT}/mlruns/mlflow.db"


def tracking_uri(given: str | None = None) -> str:
    """`given`, else $MLFLOW_TRACKING_URI, else the project's local store."""
    return given or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def is_server(uri: str) -> bool:
    """Whether `uri` names an MLflow tracking server (http or https)."""
    return urlparse(uri).scheme in ("http", "https")


def split_login(uri: str) -> tuple[str, str | None, str | None]:
    """(`uri` without a login written into it, its user name, its password): for
    http://user:secret@host:5000, ("http://host:5000", "user", "secret")."""
    parts = urlsplit(uri)
    if not is_server(uri) or parts.username is None:
        return uri, None, None
    netloc = parts.netloc.rpartition("@")[2]
    password = None if parts.password is None else unquote(parts.password)
    return urlunsplit(parts._replace(netloc=netloc)), unquote(parts.username), password


def check_no_login(uri: str) -> None:
    """Refuse a tracking URI that still carries a login (written in a config file; the
    command line's is moved to the environment first), naming the way without the password."""
    plain, user, _ = split_login(uri)
    if user is not None:
        raise ConfigError(
            f"mlflow.tracking_uri carries a login for {plain} (user {user}), written in a config "
            "file: keep passwords out of files. Give the URI without it and export "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (a login given on the "
            "lenet5-train command line is moved there for you)"
        )


def sqlite_path(uri: str) -> Path | None:
    """The database file of a local SQLite store, or None for another store."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def local_path(uri: str) -> Path | None:
    """The folder behind a local artifact URI, or None for a remote one."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path)
    return None

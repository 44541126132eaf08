"""A store that cannot be used is named before training, with nothing written to it: not a
database, a newer schema, read-only, locked by another process, an unreachable server."""

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from test_reliability import runs_of

from lenet5.cli.train import run
from lenet5.core.errors import StoreError
from lenet5.tracking import stores as store_module


def test_a_store_that_is_not_a_database_is_named_and_left_as_it_was(tmp_path, quick):
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"garbage, not a database\n" * 100)
    with pytest.raises(StoreError) as err:
        run([*quick, f"mlflow.tracking_uri=sqlite:///{db}"])
    assert f"the MLflow store {db} is not an SQLite database" in str(err.value)
    assert "Restore it from your backup" in str(err.value)
    assert db.read_bytes() == b"garbage, not a database\n" * 100


def test_a_store_from_a_newer_mlflow_is_named_and_left_as_it_was(store, tmp_path, quick):
    import sqlite3

    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as con:
        con.execute("update alembic_version set version_num = 'f00dfeedbeef'")
    before = db.read_bytes()
    with pytest.raises(StoreError, match="schema revision f00dfeedbeef, which MLflow"):
        run([*quick, *store])
    assert db.read_bytes() == before


def test_an_unreachable_tracking_server_is_refused_at_once(quick):
    # Port 9 on loopback: nothing listens (MLflow's own client would retry for minutes).
    start = time.monotonic()
    with pytest.raises(StoreError, match=r"cannot reach the MLflow tracking server http://127"):
        run([*quick, "mlflow.tracking_uri=http://127.0.0.1:9"])
    assert time.monotonic() - start < 60  # a bound on the retries, not a speed target


@pytest.mark.parametrize("given_in", ["command line", "MLFLOW_TRACKING_URI"])
def test_a_login_in_the_tracking_uri_goes_to_the_environment_never_to_disk(
    quick, tmp_path, monkeypatch, capsys, given_in
):
    """`lenet5-train` moves a login written into the tracking URI into MLflow's variables
    for the command: Hydra's output folder and the error line never carry the password."""
    from lenet5.cli.train import main

    secret = "S3cret-pw%21"  # percent-encoded in the URI, as a URL needs: S3cret-pw!
    uri = f"http://admin:{secret}@127.0.0.1:9"  # nothing listens: refused at once
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    argv = ["lenet5-train", *quick, f"hydra.run.dir={tmp_path}/hydra"]
    if given_in == "command line":
        argv.append(f"mlflow.tracking_uri={uri}")
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setattr(sys, "argv", argv)
    seen = {}
    real = store_module.client_for

    def client_for(tracking_uri, *args, **kwargs):  # the real one, watched
        seen["uri"] = tracking_uri
        seen["login"] = (
            os.environ["MLFLOW_TRACKING_USERNAME"],
            os.environ["MLFLOW_TRACKING_PASSWORD"],
        )
        return real(tracking_uri, *args, **kwargs)

    monkeypatch.setattr("lenet5.tracking.runs.client_for", client_for)
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line.startswith("error: cannot reach the MLflow tracking server http://127.0.0.1:9")
    assert seen == {"uri": "http://127.0.0.1:9", "login": ("admin", "S3cret-pw!")}
    written = [p.read_text() for p in (tmp_path / "hydra").rglob("*") if p.is_file()]
    assert written and not [t for t in written if "S3cret" in t or "admin:" in t]
    assert sys.argv == argv  # put back, as the environment (monkeypatch checks nothing there)
    assert "MLFLOW_TRACKING_PASSWORD" not in os.environ
    assert os.environ.get("MLFLOW_TRACKING_URI") == (None if given_in == "command line" else uri)


def test_a_login_left_in_the_config_is_refused_without_showing_the_password(quick):
    # As from a config file: run() composes what it is given, with no command line to move.
    from lenet5.core.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        run([*quick, "mlflow.tracking_uri=http://admin:S3cret@127.0.0.1:9"])
    message = str(err.value)
    assert message.startswith("mlflow.tracking_uri carries a login for http://127.0.0.1:9")
    assert "MLFLOW_TRACKING_PASSWORD" in message and "S3cret" not in message


def as_nobody(code: str, *args: str) -> subprocess.CompletedProcess:
    """Run Python `code` as the unprivileged user `nobody` (root may write anything, so a
    read-only file is only read-only to another user)."""
    if os.geteuid() != 0:
        command = [sys.executable, "-c", code, *args]
    elif shutil.which("setpriv"):
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        command += [sys.executable, "-c", code, *args]
    else:
        pytest.skip("running as root without setpriv (util-linux): cannot drop to a user")
    env = {**os.environ, "HOME": "/tmp", "MPLCONFIGDIR": "/tmp"}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


CHECK = """
import sys
from pathlib import Path
from lenet5.core.errors import StoreError
from lenet5.tracking.stores import check_store
try:
    check_store(Path(sys.argv[1]))
except StoreError as e:
    print(e)
"""


@pytest.fixture
def shared_folder():
    """A folder another user can reach (pytest's tmp_path sits under root's private one)."""
    folder = Path(tempfile.mkdtemp(prefix="lenet5-store-"))
    folder.chmod(0o755)
    yield folder
    for path in (folder, *folder.rglob("*")):
        path.chmod(0o777)
    shutil.rmtree(folder)


@pytest.mark.slow  # a subprocess as another user: root reads and writes anything
@pytest.mark.parametrize("read_only", ["file", "folder"])
def test_a_read_only_store_is_named_and_left_as_it_was(empty_store, shared_folder, read_only):
    folder = shared_folder / "store"
    folder.mkdir()
    db = folder / "mlflow.db"
    shutil.copyfile(empty_store, db)
    db.chmod(0o444 if read_only == "file" else 0o666)
    folder.chmod(0o777 if read_only == "file" else 0o555)
    before = db.read_bytes()
    proc = as_nobody(CHECK, str(db))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith(f"the MLflow store {db} is read-only for this user"), proc.stdout
    assert "Make both writable (chmod u+w)" in proc.stdout
    assert db.read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["mlflow.db"]  # no journal left either


def test_a_locked_store_is_named_after_the_wait_and_no_run_is_recorded(
    store, tmp_path, quick, monkeypatch
):
    db = tmp_path / "mlflow.db"
    monkeypatch.setattr(store_module, "LOCK_WAIT_S", 0.5)
    holder = sqlite3.connect(db, isolation_level=None)  # another process's long transaction
    holder.execute("begin exclusive")
    try:
        start = time.monotonic()
        with pytest.raises(StoreError, match=r"stayed locked by another process for 0 s"):
            run([*quick, *store])
        assert time.monotonic() - start < 30
    finally:
        holder.execute("rollback")
        holder.close()
    from mlflow.tracking import MlflowClient

    assert runs_of(MlflowClient(f"sqlite:///{db}")) == []


@pytest.mark.slow
def test_lenet5_train_on_a_read_only_store_answers_in_one_line(empty_store, shared_folder):
    db = shared_folder / "mlflow.db"
    shutil.copyfile(empty_store, db)
    db.chmod(0o444)
    shared_folder.chmod(0o777)
    before = db.read_bytes()
    proc = as_nobody(
        "from lenet5.cli.train import main; main()",
        "data=mnist_subset",
        "trainer.max_epochs=1",
        f"mlflow.tracking_uri=sqlite:///{db}",
        f"hydra.run.dir={shared_folder}/hydra",
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: the MLflow store {db} is read-only for this user")
    )
    assert db.read_bytes() == before

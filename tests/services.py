"""Real services for tests, started for real and stopped by pid: an MLflow tracking server
(on SQLite or PostgreSQL), PostgreSQL, a single-machine Slurm cluster (scripts/)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.request import urlopen


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_command() -> list[str]:
    script = shutil.which("mlflow", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "mlflow"]


@contextmanager
def mlflow_server(
    db: Path | str, artifacts: Path, port: int | None = None, admin_password: str | None = None
) -> Iterator[MlflowServer]:
    """`mlflow server` on loopback over the store `db` (a SQLite file, or a backend URI such
    as postgresql+psycopg2://...), serving artifacts from `artifacts` (clients upload and
    download through it), up when this yields; stopped (its whole process group) on exit.
    `admin_password`: with MLflow's basic authentication (--app-name basic-auth), its user
    store beside `artifacts`, the user `admin` having that password."""
    server = MlflowServer(db, artifacts, port or free_port(), admin_password)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class MlflowServer:
    def __init__(
        self, db: Path | str, artifacts: Path, port: int, admin_password: str | None = None
    ) -> None:
        self.backend = f"sqlite:///{db}" if isinstance(db, Path) else db
        self.admin_password = admin_password
        self.artifacts, self.port = artifacts, port
        self.uri = f"http://127.0.0.1:{port}"
        artifacts.mkdir(parents=True, exist_ok=True)
        self.log = artifacts.parent / f"mlflow-server-{port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> None:
        command = [
            *mlflow_command(),
            "server",
            "--backend-store-uri",
            self.backend,
            "--artifacts-destination",
            str(self.artifacts),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        env = dict(os.environ)
        if self.admin_password:
            command += ["--app-name", "basic-auth"]
            auth = self.artifacts.parent / "basic_auth.ini"
            auth.write_text(
                "[mlflow]\ndefault_permission = READ\n"
                f"database_uri = sqlite:///{self.artifacts.parent}/basic_auth.db\n"
                "admin_username = admin\n"
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            )
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(auth)
            env["MLFLOW_AUTH_ADMIN_PASSWORD"] = self.admin_password
            env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = "lenet5-test-secret"
        with self.log.open("a") as log:
            # Its own process group: the server runs its web workers as children.
            self.proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {self.log.read_text()[-2000:]}")
            try:
                with urlopen(f"{self.uri}/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"mlflow server not up after {timeout} s: {self.log.read_text()[-2000:]}"
        )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server and its workers (SIGKILL: as a crash or a lost machine would)."""
        if self.proc is None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        with suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)
        with suppress(ProcessLookupError):  # what is left of the group (a stray worker)
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = None


SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def need(tool: str, how: str) -> None:
    """Skip (with the reason) where a component cannot be had; under CI (LENET5_CI=1, set by
    .ci/run, which installs them) fail instead, so CI never skips a real engine."""
    import pytest

    if shutil.which(tool) is None:
        message = f"{tool} not found: {how}"
        if os.environ.get("LENET5_CI") == "1":
            pytest.fail(message)
        pytest.skip(message)


@contextmanager
def postgres() -> Iterator[str]:
    """PostgreSQL on loopback (scripts/postgres.sh), its files in a fresh folder under /tmp
    (its server runs as the user postgres, which must reach them); yields the backend URI
    for `mlflow server`; stopped and removed on exit."""
    import tempfile

    need("initdb", "PostgreSQL's binaries (apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="lenet5-postgres-"))
    folder.chmod(0o755)
    script = ["bash", str(SCRIPTS / "postgres.sh")]
    start = [*script, "start", str(folder), str(free_port())]
    uri = subprocess.run(start, capture_output=True, text=True, check=True, timeout=120)
    try:
        yield uri.stdout.split()[-1]
    finally:
        subprocess.run([*script, "stop", str(folder)], timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def slurm_cluster(folder: Path) -> Iterator[dict[str, str]]:
    """A single-machine Slurm (scripts/slurm.sh: munged, slurmctld, slurmd), its files in
    `folder`; yields the environment that points Slurm's commands at it; stopped on exit."""
    need("slurmctld", "Slurm (bash scripts/slurm.sh install, as root)")
    subprocess.run(
        ["bash", str(SCRIPTS / "slurm.sh"), "start", str(folder)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    try:
        yield {**os.environ, "SLURM_CONF": str(folder / "slurm.conf")}
    finally:
        subprocess.run(["bash", str(SCRIPTS / "slurm.sh"), "stop", str(folder)], timeout=120)

"""Real services for tests, started for real and stopped by pid: an MLflow tracking server."""

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
def mlflow_server(db: Path, artifacts: Path, port: int | None = None) -> Iterator[MlflowServer]:
    """`mlflow server` on loopback over the SQLite store `db` (serving artifacts from
    `artifacts`), up when this yields; stopped (its whole process group) on exit."""
    server = MlflowServer(db, artifacts, port or free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


class MlflowServer:
    def __init__(self, db: Path, artifacts: Path, port: int) -> None:
        self.db, self.artifacts, self.port = db, artifacts, port
        self.uri = f"http://127.0.0.1:{port}"
        self.log = db.parent / f"mlflow-server-{port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> None:
        command = [
            *mlflow_command(),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.db}",
            "--artifacts-destination",
            str(self.artifacts),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        with self.log.open("a") as log:
            # Its own process group: the server runs its web workers as children.
            self.proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
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

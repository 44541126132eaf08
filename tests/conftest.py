import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from lenet5.core.paths import PROJECT_ROOT

FULL_MNIST_CANDIDATES = [
    os.environ.get("LENET5_DATA_DIR"),
    str(PROJECT_ROOT.parent / "shared/datasets"),
]


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto` (pyproject's addopts) spreads the fast tier over the cores. A run that selects
    slow or stress tests runs them one at a time: they start processes and services of their
    own (parallel sweeps, Slurm, PostgreSQL, a browser) and their timeouts assume the machine
    is theirs."""
    expr = config.option.markexpr or ""
    return None if "not slow" in expr and "not stress" in expr else 0


def pytest_configure(config: pytest.Config) -> None:
    # An xdist worker shares the cores with the others: torch's threads default to all of them,
    # and N workers x all cores oversubscribe. Set before any test module imports torch.
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        os.environ["OMP_NUM_THREADS"] = str(max(1, (cores or 1) // workers))


@pytest.fixture(autouse=True)
def _process_state_restored():
    """Training in-process changes process-wide state: `threads=N` sets torch's thread count,
    every run installs its SIGINT/SIGTERM handlers (Lightning ignores SIGINT after a Ctrl-C).
    Each test gets them back as the session had them, so no test slows or disarms another."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch else None
    yield
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
    torch = sys.modules.get("torch")
    if torch and threads and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its schema and nothing else, made once per session.

    Creating a store runs MLflow's schema migrations (1-5 s); copying this file gives each
    test a fresh store in milliseconds. Creation itself stays tested where it matters: the
    slow tier's parallel sweep and CLI smoke test start from no store at all.
    """
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("empty_store") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def new_store(empty_store) -> Callable[..., list[str]]:
    """new_store(folder, experiment="test"): a fresh store in `folder`; returns the overrides
    that send a run's records (and artifacts) there."""

    def make(folder: Path, experiment: str = "test") -> list[str]:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(empty_store, folder / "mlflow.db")
        return [
            f"mlflow.tracking_uri=sqlite:///{folder}/mlflow.db",
            f"mlflow.artifact_root={folder}/artifacts",
            f"mlflow.experiment_name={experiment}",
        ]

    return make


@pytest.fixture
def store(new_store, tmp_path) -> list[str]:
    """Overrides that send MLflow records to a fresh SQLite store in tmp_path."""
    return new_store(tmp_path)


@pytest.fixture
def client(store, tmp_path):
    """A client on `store`'s store."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")


@pytest.fixture
def quick() -> list[str]:
    """Small and quick: 1 epoch of one Lightning step on the shipped 5,000-digit subset (1,024
    digits, 16 updates of 64), then its 500 validation and 1,000 test digits."""
    return [
        "data=mnist_subset",
        "trainer.max_epochs=1",
        "++trainer.limit_train_batches=1",  # of 4 (chunks of 1,024): ~0.35 s less a run
        "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1",
        "mlflow.pictures=false",  # ~1 s a run; the tests of pictures and models turn them on
        "mlflow.log_model=false",
    ]


@pytest.fixture
def lenet5_train() -> Callable[..., subprocess.CompletedProcess]:
    """lenet5_train(*args, timeout=600): the shell command `lenet5-train ARGS` (the console
    script where the project is installed, else the same entry point from src/), its output
    captured."""
    script = shutil.which("lenet5-train", path=str(Path(sys.executable).parent))
    command = (
        [script] if script else [sys.executable, "-c", "from lenet5.cli.train import main; main()"]
    )

    def launch(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([*command, *args], capture_output=True, text=True, timeout=timeout)

    return launch


@pytest.fixture(scope="session")
def mnist_root() -> str:
    for root in FULL_MNIST_CANDIDATES:
        if root and (Path(root) / "MNIST/raw/train-images-idx3-ubyte").is_file():
            return root
    pytest.skip(
        "full MNIST not found: set LENET5_DATA_DIR or put ../shared/datasets beside the repo"
    )

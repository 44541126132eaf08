import os
from pathlib import Path

import pytest

from lenet5.config import PROJECT_ROOT

FULL_MNIST_CANDIDATES = [
    os.environ.get("LENET5_DATA_DIR"),
    str(PROJECT_ROOT.parent / "shared/datasets"),
]


@pytest.fixture
def store(tmp_path) -> list[str]:
    """Overrides that send MLflow records to a fresh SQLite store in tmp_path."""
    return [
        f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        f"mlflow.artifact_root={tmp_path}/artifacts",
        "mlflow.experiment_name=test",
    ]


@pytest.fixture
def client(tmp_path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")


# Small and quick: 1 epoch on the shipped 5,000-digit subset, no progress bar.
QUICK = [
    "data=mnist_subset",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",  # an epoch of the subset is 4 steps (chunks of 1024)
]


@pytest.fixture(scope="session")
def mnist_root() -> str:
    for root in FULL_MNIST_CANDIDATES:
        if root and (Path(root) / "MNIST/raw/train-images-idx3-ubyte").is_file():
            return root
    pytest.skip(
        "full MNIST not found: set LENET5_DATA_DIR or put ../shared/datasets beside the repo"
    )

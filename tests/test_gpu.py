"""On a GPU: every option trains on CUDA, the data lives on the device, runs share one GPU.

Marked `gpu` and skipped where torch sees no CUDA device (CI has none); on a GPU machine
`benchmarks/gpu_check.sh` runs them with the GPU benchmark.
"""

import pytest
import torch
from config_options import COMPANIONS, all_options

from lenet5.cli.train import run

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="needs a CUDA GPU (run benchmarks/gpu_check.sh on a GPU machine)",
    ),
]
# A few steps of each phase: what runs on the device, not how well it learns.
SHORT = [
    "trainer.accelerator=gpu",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=1",
    "+trainer.limit_test_batches=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def only_run(client):
    (rec,) = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    return rec


@pytest.mark.parametrize(("group", "option"), all_options())
def test_every_option_trains_on_the_gpu(group, option, store, client):
    error = run([*SHORT, f"{group}={option}", *COMPANIONS.get((group, option), []), *store])
    rec = only_run(client)
    assert rec.info.status == "FINISHED", rec.data.tags.get("failure_reason")
    assert rec.data.tags["device"] == torch.cuda.get_device_name(0)
    assert 0.0 <= error <= 1.0


def test_the_data_lives_on_the_gpu_and_batches_are_served_there(store, client, monkeypatch):
    from lenet5.data.datamodule import DigitsDataModule

    seen = {}
    setup = DigitsDataModule.setup

    def spy(self, stage=None):
        setup(self, stage)
        if self.trainer is not None:
            seen["splits"] = {t.device.type for pair in self.splits.values() for t in pair}
            seen["batch"] = next(iter(self.train_dataloader()))[0].device.type

    monkeypatch.setattr(DigitsDataModule, "setup", spy)
    run([*SHORT, "augment=paper", *store])
    assert seen == {"splits": {"cuda"}, "batch": "cuda"}  # distorted on the device too
    assert only_run(client).info.status == "FINISHED"


def test_four_runs_share_one_gpu_in_a_sweep(tmp_path, lenet5_train):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = lenet5_train(
        "-m",
        *SHORT,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=4",
        "seed=0,1,2,3",
        f"mlflow.tracking_uri={uri}",
        f"mlflow.artifact_root={tmp_path}/artifacts",
        f"hydra.sweep.dir={tmp_path}/hydra",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("lenet5").experiment_id])
    children = [r for r in runs if r.data.tags.get("lenet5.role") != "sweep"]
    assert sorted(r.data.tags["seed"] for r in children) == ["0", "1", "2", "3"]
    assert {r.info.status for r in children} == {"FINISHED"}
    assert {r.data.tags["device"] for r in children} == {torch.cuda.get_device_name(0)}

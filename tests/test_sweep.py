"""Sweeps: one parent run per multirun, every job a child, parallel jobs lose nothing."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

LENET5_TRAIN = str(Path(sys.executable).with_name("lenet5-train"))
# Each job: 5 training steps of 64 digits, then the 1,000 test digits of the subset.
SHORT_JOB = [
    "data=mnist_subset",
    "data.val_size=100",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=5",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "threads=1",
]


def sweep(
    tmp_path: Path, *overrides: str, parallel: bool = True
) -> tuple[subprocess.CompletedProcess, MlflowClient]:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    launcher = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"] if parallel else []
    proc = subprocess.run(
        [
            LENET5_TRAIN,
            "-m",
            *SHORT_JOB,
            *launcher,
            f"mlflow.tracking_uri={uri}",
            f"mlflow.artifact_root={tmp_path}/artifacts",
            f"hydra.sweep.dir={tmp_path}/hydra",
            *overrides,
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    return proc, MlflowClient(uri)


def parent_and_children(client: MlflowClient):
    exp = client.get_experiment_by_name("lenet5")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("lenet5.role") == "sweep"]
    assert len(parents) == 1
    parent = parents[0]
    children = client.search_runs(
        [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert len(runs) == len(children) + 1  # nothing outside the sweep, nothing in "Default"
    return parent, children


@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_eight_parallel_jobs_on_a_fresh_store_all_land(tmp_path, attempt):
    proc, client = sweep(
        tmp_path, "model/activation=relu,tanh", "model/pooling=max,avg", "seed=0,1"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    parent, children = parent_and_children(client)
    assert len(children) == 8
    assert {c.info.status for c in children} == {"FINISHED"}
    combos = {
        (c.data.tags["activation"], c.data.tags["pooling"], c.data.tags["seed"]) for c in children
    }
    assert len(combos) == 8
    assert all(
        c.data.tags["lenet5.sweep_id"] == parent.data.tags["lenet5.sweep_id"] for c in children
    )
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["lenet5.expected_runs"] == "8"
    assert parent.data.metrics["children_finished"] == 8
    assert parent.data.metrics["children_failed"] == 0
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"overrides.yaml", "sweep_params.yaml"} <= artifacts
    assert "8/8 finished" in proc.stderr + proc.stdout


def test_a_failing_job_is_recorded_and_the_others_go_on(tmp_path):
    # data.source.test_size=0 fails inside training (while loading the data); lr=-1 is
    # refused by the config check before training. The fourth job is fine.
    proc, client = sweep(
        tmp_path, "data.source.test_size=1000,0", "optimizer.lr=0.001,-1", parallel=False
    )
    assert proc.returncode != 0
    assert "1 of 4 jobs finished, 3 failed" in proc.stderr
    parent, children = parent_and_children(client)
    by_status = {}
    for c in children:
        by_status.setdefault(c.info.status, []).append(c)
    assert len(by_status["FINISHED"]) == 1 and len(by_status["FAILED"]) == 3
    reasons = " ".join(c.data.tags["failure_reason"] for c in by_status["FAILED"])
    assert "test_size=0 must be between" in reasons and "optimizer.lr=-1" in reasons
    assert parent.info.status == "FAILED"
    assert parent.data.metrics["children_finished"] == 1
    assert parent.data.metrics["children_failed"] == 3


def test_study_file_runs_scaled_down_from_the_shell(tmp_path):
    proc, client = sweep(tmp_path, "experiment=one_at_a_time", "seed=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    parent, children = parent_and_children(client)
    tags = parent.data.tags
    assert tags["lenet5.study"] == "one_at_a_time"
    assert json.loads(tags["lenet5.factors"]) == ["activation", "pooling", "connectivity", "head"]
    assert json.loads(tags["lenet5.baseline"])["pooling"] == "subsampling"
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "study")} == {
        "study/one_at_a_time.yaml"
    }
    # baseline + each choice flipped alone to its modern substitute
    flips = sorted(
        tuple(c.data.tags[f] for f in ("activation", "pooling", "connectivity", "head"))
        for c in children
    )
    assert flips == sorted(
        [
            ("scaled_tanh", "subsampling", "sparse", "rbf"),
            ("relu", "subsampling", "sparse", "rbf"),
            ("scaled_tanh", "max", "sparse", "rbf"),
            ("scaled_tanh", "subsampling", "full", "rbf"),
            ("scaled_tanh", "subsampling", "sparse", "softmax"),
        ]
    )
    assert all(c.data.tags["data"] == "mnist_subset" for c in children)

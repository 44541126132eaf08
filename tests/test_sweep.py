"""Sweeps: one parent run per multirun, every job a child, parallel jobs lose nothing."""

import json
import subprocess
import sys
import time
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


def test_new_study_and_new_option_by_files_alone(tmp_path):
    extra = tmp_path / "my_conf"
    (extra / "model/activation").mkdir(parents=True)
    (extra / "experiment").mkdir()
    (extra / "model/activation/gelu.yaml").write_text("_target_: torch.nn.GELU\n_partial_: true\n")
    (extra / "experiment/gelu_vs_tanh.yaml").write_text(
        """# @package _global_
defaults:
  - override /model: paper
study:
  name: gelu_vs_tanh
  factors: [activation]
  baseline: {activation: scaled_tanh}
hydra:
  sweeper:
    params:
      model/activation: scaled_tanh,gelu
"""
    )
    proc, client = sweep(tmp_path, f"hydra.searchpath=[file://{extra}]", "experiment=gelu_vs_tanh")
    assert proc.returncode == 0, proc.stderr[-3000:]
    parent, children = parent_and_children(client)
    assert parent.data.tags["lenet5.study"] == "gelu_vs_tanh"
    assert sorted(c.data.tags["activation"] for c in children) == ["gelu", "scaled_tanh"]
    assert {c.info.status for c in children} == {"FINISHED"}


def test_report_while_a_sweep_writes_neither_fails_nor_disturbs_it(tmp_path):
    from lenet5.report import main as report

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cmd = [
        LENET5_TRAIN,
        "-m",
        *SHORT_JOB,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "model/activation=relu,tanh",
        "model/pooling=max,avg",
        "seed=0,1",
        f"mlflow.tracking_uri={uri}",
        f"mlflow.artifact_root={tmp_path}/artifacts",
        f"hydra.sweep.dir={tmp_path}/hydra",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    codes = []
    while proc.poll() is None:
        if Path(tmp_path, "mlflow.db").exists():
            codes.append(report(["--tracking-uri", uri, "--no-log", "--out", str(tmp_path / "r")]))
        time.sleep(0.5)
    stderr = proc.stderr.read()
    assert proc.returncode == 0, stderr[-3000:]
    assert codes and set(codes) <= {0, 2}  # 2 only before the parent run exists
    assert 0 in codes
    _parent, children = parent_and_children(MlflowClient(uri))
    assert len(children) == 8 and {c.info.status for c in children} == {"FINISHED"}


def test_relaunched_sweep_skips_finished_jobs_and_reruns_the_rest(tmp_path, capsys):
    # First launch: the jobs with data.source.test_size=0 fail while loading the data.
    args = ["data.source.test_size=1000,0", "seed=0,1"]
    proc, client = sweep(tmp_path, *args, parallel=False)
    assert proc.returncode != 0
    parent, children = parent_and_children(client)
    assert parent.info.status == "FAILED" and len(children) == 4
    finished_before = {c.info.run_id for c in children if c.info.status == "FINISHED"}
    assert len(finished_before) == 2
    # Relaunch the same sweep: the finished jobs are skipped, the failed ones run again
    # (and fail again, as their config is the same), under the same parent.
    proc, client = sweep(tmp_path, *args, parallel=False)
    output = proc.stdout + proc.stderr
    assert "FINISHED jobs are skipped" in output
    assert output.count("skipping: run") == 2
    parent2, children2 = parent_and_children(client)
    assert parent2.info.run_id == parent.info.run_id
    assert {c.info.run_id for c in children2 if c.info.status == "FINISHED"} == finished_before
    superseded = [c for c in children2 if c.data.tags.get("lenet5.superseded") == "true"]
    assert len(superseded) == 2  # the first failed attempts, kept but no longer counted
    assert parent2.data.metrics["children_failed"] == 2
    assert parent2.data.metrics["children_finished"] == 2
    # The report counts the same way: the superseded attempts are not failures any more.
    from lenet5.report import main as report

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert report(["--tracking-uri", uri, "--no-log", "--out", str(tmp_path / "r")]) == 0
    assert (
        "runs: 2 finished / 2 failed / 0 killed / 0 running / 4 expected" in capsys.readouterr().out
    )

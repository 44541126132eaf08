"""Sweeps: one parent run per multirun, every job a child, parallel jobs lose nothing.

Most sweeps here run in this process through `lenet5-train`'s own Hydra entry point
(`lenet5.cli.train.main` with its command line in `sys.argv`), one job after another (Hydra's
basic launcher, or joblib with one worker, which joblib runs in the calling process): the
sweep callback, the jobs and the records are those of the shell command, without a process
start per job. The slow tier runs the real shell command with two joblib workers: parallel
jobs on a fresh store, and a report read while such a sweep writes.
"""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from lenet5.cli import sweep as lenet5_sweep
from lenet5.cli import train as cli

LENET5_TRAIN = str(Path(sys.executable).with_name("lenet5-train"))
# Each job: 5 training steps of one batch of 64 digits each (data.chunk_size=64: one update
# per Lightning step), 100 validation digits, then 200 test digits of the subset.
SHORT_JOB = [
    "data=mnist_subset",
    "data.source.test_size=200",
    "data.val_size=100",
    "data.chunk_size=64",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=5",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    # Pictures and the model are tested per run (test_train.py) and in a browser after a real
    # sweep (test_browser.py); here they would add ~0.5 s to each of some 25 jobs.
    "mlflow.pictures=false",
    "mlflow.log_model=false",
]
# Two parallel workers of one thread each, on the machine's 2 cores.
PARALLEL = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "threads=1"]
EIGHT_JOBS = ["model/activation=relu,tanh", "model/pooling=max,avg", "seed=0,1"]


# The environment variables a sweep sets (torch and Lightning set their own, e.g. the seed).
OURS = (
    "LENET5_SWEEP",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
)


class ExitHooks(list):
    """Stands in for the atexit module: the hooks a sweep registers, kept here."""

    def register(self, hook, *args):
        self.append((hook, args))

    def unregister(self, hook):
        self[:] = [(h, a) for h, a in self if h != hook]


@pytest.fixture
def multirun(new_store, tmp_path, monkeypatch, capsys):
    """multirun(*overrides) -> (exit message, output): `lenet5-train -m SHORT_JOB OVERRIDES`
    run in this process on a store in tmp_path (the same store for every call of a test).

    The message is None where the sweep exited 0, else what it exited with (the sweep
    callback's SystemExit on failed jobs, or Hydra's exit 1 on an error it reports). The
    sweep puts back what it set in this process (its jobs' environment variable, MLflow's
    retry variables, the signal handlers, its exit hook): each launch checks that. What Hydra
    itself changes is undone afterwards: its global instance, the logging it configures, the
    working directory.
    """
    from hydra.core.global_hydra import GlobalHydra

    store = new_store(tmp_path, experiment="lenet5")
    exit_hooks = ExitHooks()  # a sweep that ended leaves none; a stopped one, its parent's
    monkeypatch.setattr(lenet5_sweep, "atexit", exit_hooks)
    root = logging.getLogger()
    handlers, level, cwd = root.handlers[:], root.level, os.getcwd()

    def launch(*overrides: str) -> tuple[str | None, str]:
        argv = ["lenet5-train", "-m", *SHORT_JOB, *store, f"hydra.sweep.dir={tmp_path}/hydra"]
        monkeypatch.setattr(sys, "argv", [*argv, *overrides])
        environ = {k: os.environ.get(k) for k in OURS}
        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        hooks = list(exit_hooks)
        message = None
        try:
            cli.main()
        except SystemExit as e:
            message = None if e.code in (None, 0) else str(e.code)
        finally:
            GlobalHydra.instance().clear()
        out = capsys.readouterr()
        if message is None or "jobs finished" in message:  # the sweep ran to its end
            assert {k: os.environ.get(k) for k in OURS} == environ
            assert {s: signal.getsignal(s) for s in handlers} == handlers
            assert exit_hooks == hooks
        return message, out.out + out.err

    yield launch
    for hook, args in exit_hooks:  # what the process's exit would do
        hook(*args)
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    os.chdir(cwd)


@pytest.fixture
def sweep_client(multirun, tmp_path) -> MlflowClient:
    """A client on `multirun`'s store (made first, so the client does not create another)."""
    return MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")


def shell_sweep(tmp_path: Path, *overrides: str) -> list[str]:
    """The shell command of a parallel sweep on a fresh store (none exists yet) in tmp_path."""
    return [
        LENET5_TRAIN,
        "-m",
        *SHORT_JOB,
        *PARALLEL,
        f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        f"mlflow.artifact_root={tmp_path}/artifacts",
        f"hydra.sweep.dir={tmp_path}/hydra",
        *overrides,
    ]


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


def assert_every_job_landed(client: MlflowClient, output: str, jobs: int) -> None:
    """Every job of an activation x pooling x seed sweep is a FINISHED child of the parent,
    which counts them and keeps the sweep's overrides."""
    parent, children = parent_and_children(client)
    assert len(children) == jobs
    assert {c.info.status for c in children} == {"FINISHED"}
    combos = {
        (c.data.tags["activation"], c.data.tags["pooling"], c.data.tags["seed"]) for c in children
    }
    assert len(combos) == jobs
    assert all(
        c.data.tags["lenet5.sweep_id"] == parent.data.tags["lenet5.sweep_id"] for c in children
    )
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["lenet5.expected_runs"] == str(jobs)
    # The parent says where the sweep ran (so `lenet5-report --reap` can tell an orphan).
    assert parent.data.tags["lenet5.host"] == socket.gethostname()
    assert "lenet5.heartbeat" in parent.data.tags
    assert "lenet5-heartbeat" not in {t.name for t in threading.enumerate()}
    assert parent.data.metrics["children_finished"] == jobs
    assert parent.data.metrics["children_failed"] == 0
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"overrides.yaml", "sweep_params.yaml"} <= artifacts
    assert f"{jobs}/{jobs} finished" in output


def test_every_job_is_a_child_of_one_parent_that_counts_them(multirun, sweep_client):
    message, output = multirun("model/activation=relu,tanh", "model/pooling=max,avg", "seed=0")
    assert message is None, output[-3000:]
    assert_every_job_landed(sweep_client, output, 4)


def test_a_failing_job_is_recorded_and_the_others_go_on(multirun, sweep_client):
    # data.source.test_size=0 fails inside training (while loading the data); lr=-1 is
    # refused by the config check before training. The fourth job is fine.
    message, output = multirun("data.source.test_size=200,0", "optimizer.lr=0.001,-1")
    assert message is not None and "1 of 4 jobs finished, 3 failed" in message, output[-3000:]
    parent, children = parent_and_children(sweep_client)
    by_status = {}
    for c in children:
        by_status.setdefault(c.info.status, []).append(c)
    assert len(by_status["FINISHED"]) == 1 and len(by_status["FAILED"]) == 3
    reasons = " ".join(c.data.tags["failure_reason"] for c in by_status["FAILED"])
    assert "test_size=0 must be between" in reasons and "optimizer.lr=-1" in reasons
    assert parent.info.status == "FAILED"
    assert parent.data.metrics["children_finished"] == 1
    assert parent.data.metrics["children_failed"] == 3


def test_a_worker_lost_after_its_run_finished_loses_nothing(multirun, sweep_client, monkeypatch):
    # Seen in the chaos test: a worker killed between its run's end and handing back its result
    # was counted lost; the sweep exited 1 with its parent FINISHED, and the same command then
    # started a second sweep that ran every job again. Here each job's "worker" is lost as the
    # parallel launcher finds it (lenet5.cli.launcher.lose), after its run FINISHED.
    from lenet5.cli import launcher

    ended = lenet5_sweep.MLflowSweep.on_job_end

    def and_its_worker_lost(self, config, job_return, **kwargs):
        where = {launcher.PID: str(os.getpid()), launcher.HOST: socket.gethostname()}
        job = [(config.hydra.job.num, job_return.overrides)]
        launcher.lose(job, "its worker process was killed by SIGKILL", where, "lenet5-0")
        ended(self, config, job_return, **kwargs)

    monkeypatch.setattr(lenet5_sweep.MLflowSweep, "on_job_end", and_its_worker_lost)
    message, output = multirun("seed=0,1")
    assert message is None, output[-3000:]
    assert output.count("lost: its worker process was killed by SIGKILL") == 2  # as found
    assert "2 job(s) FINISHED before their worker process ended" in output
    parent, children = parent_and_children(sweep_client)
    assert parent.info.status == "FINISHED"
    assert [c.info.status for c in children] == ["FINISHED", "FINISHED"]


def test_study_file_runs_scaled_down_from_the_shell(multirun, sweep_client):
    # The study's joblib launcher, with one worker: joblib then runs the jobs in this process.
    message, output = multirun("experiment=one_at_a_time", "seed=0", "hydra.launcher.n_jobs=1")
    assert message is None, output[-3000:]
    parent, children = parent_and_children(sweep_client)
    tags = parent.data.tags
    assert tags["lenet5.study"] == "one_at_a_time"
    assert json.loads(tags["lenet5.factors"]) == ["activation", "pooling", "connectivity", "head"]
    assert json.loads(tags["lenet5.baseline"])["pooling"] == "subsampling"
    assert tags["lenet5.margin"] == "0.2"  # study.margin: what the report's verdicts use
    assert {a.path for a in sweep_client.list_artifacts(parent.info.run_id, "study")} == {
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
    # Names say how a trial differs from the study's baseline; each is tagged a trial.
    assert sorted(c.info.run_name for c in children) == sorted(
        f"{d}\u00b7s0" for d in ("paper", "act=relu", "pool=max", "c3=full", "head=softmax")
    )
    assert {c.data.tags["lenet5.role"] for c in children} == {"trial"}
    assert {c.data.params["pooling"] for c in children} == {"subsampling", "max"}
    # The saved view: the UI's own experiment tag, scoped to this sweep's trials.
    exp = sweep_client.get_experiment(parent.info.experiment_id)
    views = {k: v for k, v in exp.tags.items() if k.startswith("mlflow.sharedViewState.")}
    assert len(views) == 1
    (key,) = (k.removeprefix("mlflow.sharedViewState.") for k in views)
    state = json.loads(json.loads(next(iter(views.values())))["state"])
    selected = sweep_client.search_runs([exp.experiment_id], state["searchFilter"])
    assert {r.info.run_id for r in selected} == {c.info.run_id for c in children}
    assert state["runsHiddenMode"] == "SHOW_ALL"
    assert state["orderByKey"] == "metrics.`final/test_error`"
    assert "params.`connectivity`" in state["selectedColumns"]
    charts = {c["type"]: c for c in state["compareRunCharts"]}
    assert charts["BAR"]["metricKey"] == "final/test_error"
    assert charts["PARALLEL"]["selectedParams"] == ["activation", "pooling", "connectivity", "head"]
    baseline = next(c for c in children if c.info.run_name == "paper\u00b7s0")
    assert charts["DIFFERENCE"]["baselineColumnUuid"] == baseline.info.run_id
    link = (
        f"/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning"
        f"&viewStateShareKey={key}"
    )
    assert output.count(link) == 2  # when the sweep starts, and when it ends
    assert "Start here" in exp.tags["mlflow.note.content"]
    assert len(parent.data.tags["mlflow.source.git.commit"]) == 40  # MLflow's run context


def test_new_study_and_new_option_by_files_alone(multirun, sweep_client, tmp_path):
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
    message, output = multirun(f"hydra.searchpath=[file://{extra}]", "experiment=gelu_vs_tanh")
    assert message is None, output[-3000:]
    parent, children = parent_and_children(sweep_client)
    assert parent.data.tags["lenet5.study"] == "gelu_vs_tanh"
    assert sorted(c.data.tags["activation"] for c in children) == ["gelu", "scaled_tanh"]
    assert {c.info.status for c in children} == {"FINISHED"}


@pytest.mark.slow  # two sweeps of 4 jobs; the fast tier has one sweep of each kind
def test_relaunched_sweep_skips_finished_jobs_and_reruns_the_rest(
    multirun, sweep_client, tmp_path, capsys
):
    # First launch: the jobs with data.source.test_size=0 fail while loading the data.
    args = ["data.source.test_size=200,0", "seed=0,1"]
    message, output = multirun(*args)
    assert message is not None, output[-3000:]
    parent, children = parent_and_children(sweep_client)
    assert parent.info.status == "FAILED" and len(children) == 4
    finished_before = {c.info.run_id for c in children if c.info.status == "FINISHED"}
    assert len(finished_before) == 2
    # Relaunch the same sweep: the finished jobs are skipped, the failed ones run again
    # (and fail again, as their config is the same), under the same parent.
    message, output = multirun(*args)
    assert message is not None and "2 of 4 jobs finished, 2 failed" in message, output[-3000:]
    assert "FINISHED jobs are skipped" in output
    assert output.count("skipping: run") == 2
    parent2, children2 = parent_and_children(sweep_client)
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


# Once in the slow tier; the stress tier repeats it (a lost run shows up intermittently).
@pytest.mark.parametrize(
    "attempt",
    [
        pytest.param(1, marks=pytest.mark.slow),
        pytest.param(2, marks=pytest.mark.stress),
        pytest.param(3, marks=pytest.mark.stress),
    ],
)
def test_eight_parallel_jobs_on_a_fresh_store_all_land(tmp_path, attempt):
    proc = subprocess.run(
        shell_sweep(tmp_path, *EIGHT_JOBS), capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert_every_job_landed(client, proc.stderr + proc.stdout, 8)


@pytest.mark.slow
def test_report_while_a_sweep_writes_neither_fails_nor_disturbs_it(tmp_path):
    from lenet5.report import main as report

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = subprocess.Popen(
        shell_sweep(tmp_path, *EIGHT_JOBS),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
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

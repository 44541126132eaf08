"""Past one machine, against the real engines: a study as a Slurm job array, logging to an
`mlflow server` on PostgreSQL with artifacts uploaded through it; a job cancelled by the
scheduler continues on relaunch; many clients on one server lose nothing."""

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from services import mlflow_server, postgres, slurm_cluster
from test_reliability import LENET5_TRAIN, independent_runs_on_a_fresh_store, while_running
from test_sweep import SHORT_JOB

pytestmark = pytest.mark.slow

SLURM_JOB = ["hydra/launcher=slurm", "hydra.launcher.mem_gb=1", "hydra.launcher.cpus_per_task=1"]
# Each cohort one task, as small.
COHORT_SLURM = ["hydra/launcher=cohort_slurm", "hydra.launcher.slurm.mem_gb=1"]
COHORT_SLURM += ["hydra.launcher.slurm.cpus_per_task=1"]


@pytest.fixture(scope="module")
def team_server(tmp_path_factory):
    """A team tracking server: `mlflow server` on PostgreSQL, serving artifacts."""
    folder = tmp_path_factory.mktemp("team")
    with postgres() as backend, mlflow_server(backend, folder / "artifacts") as server:
        yield server


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    with slurm_cluster(tmp_path_factory.mktemp("slurm")) as env:
        yield env


def sweep(
    env, uri: str, experiment: str, folder: Path, *overrides: str, wait=True, launcher=SLURM_JOB
):
    command = [
        LENET5_TRAIN,
        "-m",
        *launcher,
        *overrides,
        f"mlflow.tracking_uri={uri}",
        f"mlflow.experiment_name={experiment}",
        f"hydra.sweep.dir={folder}",
    ]
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if not wait:
        return proc
    out = proc.communicate(timeout=1200)[0]
    return proc.returncode, out


def records(uri: str, experiment: str):
    """(parent, children) of the experiment's one sweep, read through the server's REST API."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("lenet5.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return client, parent, children


def test_a_study_runs_as_a_slurm_array_logging_to_a_team_server(slurm, team_server, tmp_path):
    start = time.monotonic()
    rc, out = sweep(
        slurm,
        team_server.uri,
        "team",
        tmp_path / "multirun",
        "experiment=paper_vs_modern",  # a shipped study, unchanged, scaled down:
        *SHORT_JOB,
        "seed=0,1",
    )
    wall = time.monotonic() - start
    assert rc == 0, out[-4000:]
    client, parent, children = records(team_server.uri, "team")
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["children_finished"] == 4
    assert len(children) == 4 and {c.info.status for c in children} == {"FINISHED"}
    assert parent.data.tags["lenet5.study"] == "paper_vs_modern"
    grid = {(c.data.tags["preset"], c.data.tags["seed"]) for c in children}
    assert grid == {(m, s) for m in ("paper", "modern") for s in ("0", "1")}
    for child in children:
        assert child.info.artifact_uri.startswith("mlflow-artifacts:")  # through the server
        names = {f.path for f in client.list_artifacts(child.info.run_id)}
        assert {"config.yaml", "checkpoints"} <= names
        uploaded = {f.path for f in client.list_artifacts(child.info.run_id, "checkpoints")}
        assert "checkpoints/last.ckpt" in uploaded
    # The submitit array: one task folder per job, each run as a Slurm task.
    assert len(list((tmp_path / "multirun/.submitit").glob("*_[0-3]"))) == 4
    print(f"4-job Slurm study logging to the PostgreSQL-backed server: {wall:.0f} s wall")


def test_cohorts_run_as_tasks_of_a_slurm_array(slurm, team_server, tmp_path):
    """Issue 23 on Slurm: each cohort one array task, its members runs like any other."""
    folder = tmp_path / "multirun"
    args = (*SHORT_JOB, "data.chunk_size=128", "hydra.launcher.stack=true")
    args += ("model=paper,modern", "seed=0,1")
    rc, out = sweep(slurm, team_server.uri, "cohorts", folder, *args, launcher=COHORT_SLURM)
    assert rc == 0, out[-4000:]
    assert "Launching 4 jobs in 2 cohorts" in out, out[-4000:]
    _, parent, children = records(team_server.uri, "cohorts")
    assert parent.info.status == "FINISHED" and parent.data.metrics["children_finished"] == 4
    assert len(children) == 4 and {c.info.status for c in children} == {"FINISHED"}
    tasks: dict[str, set] = {}
    for c in children:  # the members of a cohort share its task; each cohort its own
        tasks.setdefault(c.data.tags["lenet5.cohort"], set()).add(c.data.tags["lenet5.slurm_task"])
    assert sorted(tasks) == ["c0", "c2"] and all(len(t) == 1 for t in tasks.values())
    assert len(set.union(*tasks.values())) == 2
    assert len(list((folder / ".submitit").glob("*_[01]"))) == 2  # one array of 2 tasks


def test_a_cancelled_cohort_task_ends_its_members_killed_and_the_relaunch_continues_them(
    slurm, team_server, tmp_path
):
    args = (slurm, team_server.uri, "cohort_cancel", tmp_path / "multirun", *LONG_JOB, "seed=0,1")
    proc = sweep(*args, wait=False, launcher=COHORT_SLURM)
    deadline = first_checkpoint(proc, tmp_path / "multirun")
    (task,) = slurm_tasks(slurm)  # one cohort of 2, one task
    subprocess.run(["scancel", task], env=slurm, check=True)
    out = proc.communicate(timeout=900)[0]
    assert proc.returncode != 0 and "Traceback" not in out, out[-4000:]
    while slurm_tasks(slurm):
        assert time.time() < deadline, "Slurm jobs still queued"
        time.sleep(1)
    _, _, members = records(team_server.uri, "cohort_cancel")
    assert {m.info.status for m in members} == {"KILLED"} and len(members) == 2
    rc, out = sweep(*args, launcher=COHORT_SLURM)  # the same command: both continue
    assert rc == 0, out[-4000:]
    client, parent, children = records(team_server.uri, "cohort_cancel")
    assert parent.info.status == "FINISHED"
    kept = [c for c in children if c.data.tags.get("lenet5.superseded") != "true"]
    assert sorted(c.data.tags["seed"] for c in kept) == ["0", "1"]  # one run per config
    assert {c.info.status for c in kept} == {"FINISHED"}
    (continued,) = [c for c in kept if c.data.tags["seed"] == "0"]  # it had a checkpoint
    assert continued.info.run_id in {m.info.run_id for m in members}  # in its own run
    steps = [m.step for m in client.get_metric_history(continued.info.run_id, "val/acc")]
    assert len(steps) == len(set(steps)) == 3


def slurm_tasks(env) -> list[str]:
    out = subprocess.run(
        ["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.split()


# Jobs of 3 epochs of batch 8: long enough to be stopped between their first checkpoint and
# their end.
LONG_JOB = ["data=mnist_subset", "data.batch_size=8", "trainer.max_epochs=3", "model=modern"]
LONG_JOB += ["optimizer=sgd", "optimizer.lr=0.01", "trainer.enable_progress_bar=false"]


def first_checkpoint(proc, folder: Path) -> float:
    """Wait for job 0's first checkpoint (after its first epoch) while the sweep runs; the
    deadline for the rest of the test."""
    return while_running(proc, (folder / "0/checkpoints/last.ckpt").is_file, poll=0.2)


# scancel's default stop (SIGTERM), and issue 25's `--signal=KILL` (the out-of-memory
# killer's): Slurm's step daemon stops the task with SIGTERM before a KILL here, so both
# end the run KILLED with its checkpoint. SIGKILL straight to the task's process, past
# Slurm, leaves its run RUNNING and no result; this cluster keeps no accounting, so only
# squeue tells the sweep that the task ended: it ends the run KILLED (lenet5.cli.slurm).
@pytest.mark.parametrize("stop", ["scancel", "scancel_signal_kill", "sigkill_past_slurm"])
def test_a_cancelled_slurm_job_continues_from_its_checkpoint_on_relaunch(
    slurm, team_server, tmp_path, stop
):
    job = [*LONG_JOB, "hydra.launcher.lost_after_s=5"]
    experiment = f"cancel_{stop}"
    args = (slurm, team_server.uri, experiment, tmp_path / "multirun", *job, "seed=0,1")
    proc = sweep(*args, wait=False)
    deadline = first_checkpoint(proc, tmp_path / "multirun")
    (task,) = [t for t in slurm_tasks(slurm) if t.endswith("_0")]
    if stop == "sigkill_past_slurm":
        client = MlflowClient(team_server.uri)
        exp = client.get_experiment_by_name(experiment)
        (run,) = client.search_runs([exp.experiment_id], "tags.seed = '0'")
        assert run.data.tags["lenet5.slurm_task"] == task
        os.kill(int(run.data.tags["lenet5.pid"]), signal.SIGKILL)
    else:
        scancel = ["--signal=KILL"] if stop == "scancel_signal_kill" else []
        subprocess.run(["scancel", *scancel, task], env=slurm, check=True)
    out = proc.communicate(timeout=900)[0]
    assert proc.returncode != 0, out[-4000:]  # the sweep reports the cancelled job
    assert "Traceback" not in out, out[-4000:]
    while slurm_tasks(slurm):  # job 1 goes on by itself; let it end
        assert time.time() < deadline, "Slurm jobs still queued"
        time.sleep(1)
    _, _, children = records(team_server.uri, experiment)
    (killed,) = [c for c in children if c.data.tags["seed"] == "0"]
    assert killed.info.status == "KILLED", killed.data.tags.get("failure_reason")
    if stop == "sigkill_past_slurm":  # ended by the sweep, which names the job it lost
        reason = killed.data.tags["failure_reason"]
        assert reason.startswith(f"its Slurm task {task} ended without handing back"), reason
        assert "1 job(s) lost" in out and "#0 (" in out, out[-4000:]
    # The same sweep command again: job 0 continues in its run; job 1 FINISHED is skipped.
    rc, out = sweep(*args)
    assert rc == 0, out[-4000:]
    client, parent, children = records(team_server.uri, experiment)
    assert parent.info.status == "FINISHED" and len(children) == 2
    continued = client.get_run(killed.info.run_id)
    assert continued.info.status == "FINISHED"
    steps = {m.step for m in client.get_metric_history(continued.info.run_id, "val/acc")}
    assert len(steps) == 3  # one validation per epoch, none repeated or lost


def test_a_slurm_sweep_whose_command_is_killed_continues_under_the_same_parent(
    slurm, team_server, tmp_path
):
    """Issue 25's main process killed, on Slurm: the sweep's command dies by SIGKILL while its
    tasks go on; the same command again cancels them (each run ends KILLED with its
    checkpoint) and continues every config in its own run, under the same parent."""
    args = (slurm, team_server.uri, "main_killed", tmp_path / "multirun", *LONG_JOB, "seed=0,1")
    proc = sweep(*args, wait=False)
    first_checkpoint(proc, tmp_path / "multirun")
    proc.kill()
    proc.communicate(timeout=60)
    first = slurm_tasks(slurm)
    assert len(first) == 2  # the tasks go on without their sweep
    _, first_parent, _ = records(team_server.uri, "main_killed")
    rc, out = sweep(*args)
    assert rc == 0, out[-4000:]
    assert "earlier launch still has 2 task(s) in Slurm's queue" in out, out[-4000:]
    client, parent, children = records(team_server.uri, "main_killed")
    assert parent.info.run_id == first_parent.info.run_id
    assert parent.info.status == "FINISHED"
    kept = [c for c in children if c.data.tags.get("lenet5.superseded") != "true"]
    assert sorted(c.data.tags["seed"] for c in kept) == ["0", "1"]  # one run per config
    assert {c.info.status for c in children} <= {"FINISHED", "KILLED"}  # none RUNNING
    assert {c.info.status for c in kept} == {"FINISHED"}
    (continued,) = [c for c in kept if c.data.tags["seed"] == "0"]  # it had a checkpoint
    # Stopped in its first task and finished in one of the relaunch's (not left to race it).
    assert continued.data.tags["failure_reason"] == "interrupted (Ctrl-C or SIGTERM)"
    assert continued.data.tags["lenet5.slurm_task"] not in first
    steps = [m.step for m in client.get_metric_history(continued.info.run_id, "val/acc")]
    assert len(steps) == len(set(steps)) == 3  # continued in its own run: 3 epochs, once each


def test_eight_clients_on_one_team_server_lose_nothing(team_server, tmp_path):
    runs = independent_runs_on_a_fresh_store(tmp_path, 8, team_server.uri)
    assert sorted(int(r.data.tags["seed"]) for r in runs) == list(range(8))
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert all(r.data.metrics.get("test/error") is not None for r in runs)


def test_a_server_with_logins_refuses_a_wrong_password_and_records_no_secret(
    tmp_path, empty_store, quick
):
    import shutil

    db = tmp_path / "auth.db"
    shutil.copyfile(empty_store, db)
    password = "lenet5-Secret-2026"
    with mlflow_server(db, tmp_path / "artifacts", admin_password=password) as server:
        args = [*quick, f"mlflow.tracking_uri={server.uri}", "mlflow.experiment_name=locked"]
        args.append(f"hydra.run.dir={tmp_path}/h")
        for user, given in (("admin", "wrong-password"), (None, None)):
            env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
            env.update(
                {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": given}
                if user
                else {}
            )
            proc = subprocess.run(
                [LENET5_TRAIN, *args], env=env, capture_output=True, text=True, timeout=600
            )
            assert proc.returncode == 2, proc.stderr[-3000:]
            last = proc.stderr.strip().splitlines()[-1]
            assert last.startswith(
                f"error: the MLflow tracking server {server.uri} answered HTTP 401: "
            ), last
            assert "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in last
        env = {**os.environ, "MLFLOW_TRACKING_USERNAME": "admin"}
        env["MLFLOW_TRACKING_PASSWORD"] = password
        proc = subprocess.run(
            [LENET5_TRAIN, *args], env=env, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        os.environ["MLFLOW_TRACKING_USERNAME"] = "admin"  # this process reads the records
        os.environ["MLFLOW_TRACKING_PASSWORD"] = password
        try:
            client = MlflowClient(server.uri)
            (run,) = client.search_runs([client.get_experiment_by_name("locked").experiment_id])
            assert run.info.status == "FINISHED"
            recorded = [*run.data.params.values(), *run.data.tags.values()]
            config = Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path)))
            recorded.append(config.read_text())
            assert not [r for r in recorded if password in r]
            # The login written into the URI instead: lenet5-train moves it to the
            # environment, so it works, and neither the output nor Hydra's folder has it.
            login = server.uri.replace("://", f"://admin:{password}@")
            env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
            given = [*quick, f"mlflow.tracking_uri={login}", "mlflow.experiment_name=in_uri"]
            proc = subprocess.run(
                [LENET5_TRAIN, *given, f"hydra.run.dir={tmp_path}/in_uri"],
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert proc.returncode == 0, proc.stderr[-3000:]
            assert password not in proc.stdout + proc.stderr
            hydra_files = [p for p in (tmp_path / "in_uri").rglob("*") if p.is_file()]
            secret = password.encode()  # the folder holds checkpoints too: bytes, not text
            assert hydra_files and not [p for p in hydra_files if secret in p.read_bytes()]
            (run,) = client.search_runs([client.get_experiment_by_name("in_uri").experiment_id])
            assert run.info.status == "FINISHED"
            assert not [
                v for v in [*run.data.params.values(), *run.data.tags.values()] if password in v
            ]
        finally:
            del os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]


def test_a_run_logs_straight_to_a_postgresql_store_without_a_server(quick, tmp_path):
    """A database URI other than SQLite is MLflow's to open: no server check, no login."""
    from lenet5.cli.train import run

    with postgres() as backend:
        overrides = [f"mlflow.tracking_uri={backend}", f"mlflow.artifact_root={tmp_path}/art"]
        error = run([*quick, *overrides, "mlflow.experiment_name=direct"])
        client = MlflowClient(backend)
        (rec,) = client.search_runs([client.get_experiment_by_name("direct").experiment_id])
        assert rec.info.status == "FINISHED" and 0.0 <= error <= 1.0
        assert rec.data.metrics["final/test_error"] == pytest.approx(error, abs=1e-4)


# Issue 25's chaos test on the real Slurm: 8 jobs of 3 short epochs, deterministic on CPU.
SLURM_CHAOS = [
    "data=mnist_subset",
    "data.source.test_size=200",
    "data.val_size=100",
    "data.chunk_size=64",
    "trainer.max_epochs=3",
    "++trainer.limit_train_batches=4",
    "trainer.deterministic=true",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "mlflow.pictures=false",
    "mlflow.log_model=false",
    "model/activation=relu,tanh",
    "seed=0,1,2,3",
    "hydra.launcher.lost_after_s=5",
]
TASK_KILLS = ("sigkill past slurm", "scancel --signal=KILL", "scancel")


def by_job(client, experiment: str) -> dict[tuple[str, str], object]:
    """Every job's run, FINISHED exactly once, nothing RUNNING: {(activation, seed): run}."""
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "tags.`lenet5.role` = 'trial'")
    runs = [r for r in runs if r.data.tags.get("lenet5.superseded") != "true"]
    assert not [r for r in runs if r.info.status == "RUNNING"]
    finished = [r for r in runs if r.info.status == "FINISHED"]
    jobs = {(r.data.tags["activation"], r.data.tags["seed"]): r for r in finished}
    assert len(jobs) == len(finished), "a job FINISHED twice"
    return jobs


def running_tasks(client, experiment: str) -> list[tuple[int, str]]:
    """(pid, Slurm task) of the experiment's RUNNING trials whose process is alive."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")
    return [
        (int(r.data.tags["lenet5.pid"]), r.data.tags["lenet5.slurm_task"])
        for r in runs
        if r.data.tags.get("lenet5.role") == "trial"
        and Path(f"/proc/{r.data.tags.get('lenet5.pid', 0)}").exists()
    ]


@pytest.mark.stress  # on top of the slow tier's Slurm and server: ~4 min
def test_chaos_on_slurm_kills_of_tasks_and_of_the_sweeps_command_lose_nothing(
    slurm, team_server, tmp_path
):
    seed = int(os.environ.get("LENET5_CHAOS_SEED", random.randrange(1 << 30)))
    print(f"chaos seed {seed} (replay: LENET5_CHAOS_SEED={seed})", flush=True)
    rng = random.Random(seed)
    rc, out = sweep(slurm, team_server.uri, "calm_slurm", tmp_path / "calm", *SLURM_CHAOS)
    assert rc == 0, out[-4000:]
    client = MlflowClient(team_server.uri)
    metrics = lambda run: {k: run.data.metrics[k] for k in ("test/error", "final/val_acc")}  # noqa: E731
    expected = {job: metrics(run) for job, run in by_job(client, "calm_slurm").items()}
    assert len(expected) == 8
    # Launches 1 and 2 lose one or two tasks each (killed past Slurm or cancelled); the first
    # then loses its command too (SIGKILL or SIGTERM), its tasks left running in Slurm.
    plan = [[rng.choice(TASK_KILLS) for _ in range(rng.randint(1, 2))] for _ in range(2)]
    plan[0].append(rng.choice(["main SIGKILL", "main SIGTERM"]))
    args = (slurm, team_server.uri, "chaos_slurm", tmp_path / "chaos", *SLURM_CHAOS)
    for attempt in range(6):
        proc = sweep(*args, wait=False)
        for kill in plan[attempt] if attempt < len(plan) else []:
            time.sleep(rng.uniform(0.5, 4))
            tasks: list[tuple[int, str]] = []
            while proc.poll() is None and not (tasks := running_tasks(client, "chaos_slurm")):
                time.sleep(0.2)  # a kill lands while tasks train
            if not tasks:
                break
            pid, task = rng.choice(tasks)
            if kill.startswith("main"):
                proc.send_signal(signal.SIGKILL if kill.endswith("SIGKILL") else signal.SIGTERM)
            elif kill == "sigkill past slurm":
                os.kill(pid, signal.SIGKILL)
            else:
                subprocess.run([*kill.split(), task], env=slurm, check=True)
            print(f"launch {attempt}: {kill} ({task})", flush=True)
        output = proc.communicate(timeout=900)[0]
        assert "Traceback" not in output, output[-4000:]
        if proc.returncode == 0:
            break
    else:
        pytest.fail(f"6 launches did not finish the sweep (seed {seed})")
    got = by_job(client, "chaos_slurm")
    assert {job: metrics(run) for job, run in got.items()} == expected
    exp = client.get_experiment_by_name("chaos_slurm")
    parents = client.search_runs([exp.experiment_id], "tags.`lenet5.role` = 'sweep'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"

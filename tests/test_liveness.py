"""No run stays RUNNING forever: host/pid/heartbeat tags, stale runs found and reaped, and
runs whose process or tracking server went away resumed from their checkpoints."""

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from services import mlflow_server
from test_reliability import LENET5_TRAIN, LONG, runs_of, start_and_interrupt, while_running

from lenet5.cli.train import run
from lenet5.core.errors import StoreError
from lenet5.report.command import main as report
from lenet5.tracking import liveness


def test_a_run_records_where_it_runs_and_its_heartbeat_stops_with_it(quick, store, client):
    before = time.time()
    run([*quick, *store])
    (rec,) = runs_of(client)
    tags = rec.data.tags
    assert tags[liveness.HOST] == socket.gethostname()
    assert tags[liveness.PID] == str(os.getpid())
    assert tags[liveness.PID_START] == liveness.pid_start(os.getpid())
    assert before - 1 <= float(tags[liveness.HEARTBEAT]) <= time.time()
    assert "lenet5-heartbeat" not in {t.name for t in threading.enumerate()}


def test_the_heartbeat_thread_refreshes_the_tag(client):
    exp = client.create_experiment("beats")
    run_id = client.create_run(exp).info.run_id
    with liveness.Heartbeat(client, run_id, every=0.05):
        client.set_tag(run_id, liveness.HEARTBEAT, "0")
        deadline = time.time() + 10
        while client.get_run(run_id).data.tags[liveness.HEARTBEAT] == "0":
            assert time.time() < deadline, "no heartbeat in 10 s"
            time.sleep(0.05)
    assert time.time() - float(client.get_run(run_id).data.tags[liveness.HEARTBEAT]) < 10


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def fake_runs(client) -> dict[str, str]:
    """RUNNING runs in every liveness state, made directly in the store: name -> run id."""
    exp = client.create_experiment("test")
    me, host, now = str(os.getpid()), socket.gethostname(), time.time()
    states = {
        "alive_here": {liveness.HOST: host, liveness.PID: me},
        "dead_here": {liveness.HOST: host, liveness.PID: str(dead_pid())},
        "pid_reused": {liveness.HOST: host, liveness.PID: me, liveness.PID_START: "1"},
        "silent_elsewhere": {liveness.HOST: "node-9", liveness.HEARTBEAT: f"{now - 1000:.0f}"},
        "beating_elsewhere": {liveness.HOST: "node-9", liveness.HEARTBEAT: f"{now - 30:.0f}"},
    }
    ids = {}
    for name, tags in states.items():
        started = float(tags.get(liveness.HEARTBEAT, now)) * 1000  # it began with a beat
        run = client.create_run(exp, start_time=int(started), run_name=name, tags=tags)
        ids[name] = run.info.run_id
    done = client.create_run(exp, run_name="ended", tags=states["dead_here"]).info.run_id
    client.set_terminated(done, "FINISHED")
    ids["ended"] = done
    return ids


def test_stale_runs_are_those_whose_process_is_gone(client):
    ids = fake_runs(client)
    reasons = {
        name: liveness.why_stale(client.get_run(run_id), stale_after=600)
        for name, run_id in ids.items()
    }
    assert reasons["alive_here"] is None
    assert reasons["beating_elsewhere"] is None
    assert reasons["ended"] is None
    assert reasons["dead_here"].startswith("its process ")
    assert "is gone" in reasons["pid_reused"]
    # 1000 s before the runs were made, and a slow machine may take a second making them.
    assert re.match(r"no heartbeat from node-9 for 100[01] s \(last ", reasons["silent_elsewhere"])


def test_report_lists_then_reaps_stale_runs_killed_with_the_reason(client, tmp_path, capsys):
    ids = fake_runs(client)
    args = ["--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--experiment", "test"]
    assert report([*args, "--stale"]) == 0
    listed = capsys.readouterr().out
    assert "3 run(s) of experiment 'test' stale:" in listed
    assert {n for n in ids if ids[n] in listed} == {"dead_here", "pid_reused", "silent_elsewhere"}
    assert {client.get_run(i).info.status for i in ids.values()} == {"RUNNING", "FINISHED"}
    assert report([*args, "--reap"]) == 0
    status = {name: client.get_run(run_id).info.status for name, run_id in ids.items()}
    assert status == {
        "alive_here": "RUNNING",
        "dead_here": "KILLED",
        "pid_reused": "KILLED",
        "silent_elsewhere": "KILLED",
        "beating_elsewhere": "RUNNING",
        "ended": "FINISHED",
    }
    reason = client.get_run(ids["dead_here"]).data.tags["failure_reason"]
    assert reason.startswith("reaped by lenet5-report --reap: its process ")
    # A shorter limit also reaps the run that beat 30 s ago; the live local one stays.
    assert report([*args, "--reap", "--stale-after", "10"]) == 0
    assert client.get_run(ids["beating_elsewhere"]).info.status == "KILLED"
    assert client.get_run(ids["alive_here"]).info.status == "RUNNING"


def test_resume_refuses_a_run_whose_process_is_alive(quick, store, client):
    run([*quick, *store])
    (rec,) = runs_of(client)
    run_id = rec.info.run_id
    client.update_run(run_id, status="RUNNING")  # and its pid tag is this live process
    with pytest.raises(StoreError, match=r"is still RUNNING \(its process is alive"):
        run([f"resume={run_id}", *store])


@pytest.mark.slow
def test_a_sigkilled_run_is_reported_stale_reaped_and_resumed(tmp_path, capsys):
    client, rec = start_and_interrupt(tmp_path, signal.SIGKILL)
    run_id = rec.info.run_id
    assert rec.info.status == "RUNNING"  # what SIGKILL leaves: the process could not end it
    args = ["--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--experiment", "test"]
    assert report([*args, "--stale"]) == 0
    assert f"{run_id} " in capsys.readouterr().out
    assert report([*args, "--reap"]) == 0
    killed = client.get_run(run_id)
    assert killed.info.status == "KILLED"
    assert "is gone" in killed.data.tags["failure_reason"]
    proc = subprocess.run(
        [LENET5_TRAIN, f"resume={run_id}", *args_for_store(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = client.get_run(run_id)
    assert resumed.info.status == "FINISHED"
    assert len(runs_of(client)) == 1
    assert len({m.step for m in client.get_metric_history(run_id, "val/acc")}) == 2


def args_for_store(tmp_path: Path) -> list[str]:
    return [f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db", f"hydra.run.dir={tmp_path}/h2"]


@pytest.mark.slow
def test_a_tracking_server_lost_mid_run_keeps_the_checkpoint_and_the_run_resumes(
    tmp_path, empty_store
):
    db, artifacts = tmp_path / "server.db", tmp_path / "served"
    shutil.copyfile(empty_store, db)
    with mlflow_server(db, artifacts) as server:
        uri = server.uri
        store = [
            f"mlflow.tracking_uri={uri}",
            "mlflow.experiment_name=test",
            "mlflow.http_retries=1",
            "mlflow.http_timeout_s=5",
        ]
        proc = subprocess.Popen(
            [LENET5_TRAIN, *LONG, "trainer.max_epochs=3", *store, f"hydra.run.dir={tmp_path}/h"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        checkpoint = tmp_path / "h/checkpoints/last.ckpt"
        while_running(proc, checkpoint.is_file)
        server.stop(signal.SIGKILL)  # the server (or its machine) dies mid-run
        lost = time.monotonic()
        out = proc.communicate(timeout=300)[0]
        gave_up_s = time.monotonic() - lost
    assert proc.returncode == 2, out[-3000:]
    assert gave_up_s < 120, gave_up_s  # a bounded retry budget, not minutes per request
    last = out.strip().splitlines()[-1]
    assert last.startswith(f"error: the MLflow tracking server {uri} stopped answering ("), last
    assert f"its checkpoints are kept at {tmp_path}/h/checkpoints" in last
    assert checkpoint.is_file()
    # The server comes back on the same store: the run is RUNNING, orphaned; reap, resume.
    with mlflow_server(db, artifacts, port=int(uri.rsplit(":", 1)[1])):
        client = MlflowClient(uri)
        (rec,) = runs_of(client)
        assert rec.info.status == "RUNNING"
        run_id = rec.info.run_id
        assert report(["--tracking-uri", uri, "--experiment", "test", "--reap"]) == 0
        assert client.get_run(run_id).info.status == "KILLED"
        proc = subprocess.run(
            [LENET5_TRAIN, f"resume={run_id}", *store, f"hydra.run.dir={tmp_path}/h2"],
            capture_output=True,
            text=True,
            timeout=900,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        resumed = client.get_run(run_id)
        assert resumed.info.status == "FINISHED"
        assert len(runs_of(client)) == 1
        steps = {m.step for m in client.get_metric_history(run_id, "val/acc")}
        # Epochs 2 and 3 validated after the resume (epoch 1's may have been lost with the server).
        assert len(steps) >= 2 and max(steps) > min(steps)
        uploaded = {f.path for f in client.list_artifacts(run_id, "checkpoints")}
        assert "checkpoints/last.ckpt" in uploaded

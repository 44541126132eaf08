"""A relaunched sweep continues its KILLED jobs from their checkpoints, in the same runs."""

import signal

import pytest
from test_sweep import multirun, parent_and_children, sweep_client  # noqa: F401 (fixtures)


@pytest.mark.slow  # a sweep, then its relaunch
def test_an_interrupted_sweep_continues_its_killed_job_from_its_checkpoint(
    multirun,  # noqa: F811
    sweep_client,  # noqa: F811
    monkeypatch,
):
    from lenet5.training.module import LeNet5Module

    # Ctrl-C in the first job's second epoch (a real SIGINT to this process, at a fixed
    # point): the job's run ends KILLED with epoch 1 in last.ckpt, and the sweep stops.
    interrupted = []

    def on_train_batch_start(self, batch, batch_idx):
        if (self.current_epoch, batch_idx) == (1, 1) and not interrupted:
            interrupted.append(True)
            signal.raise_signal(signal.SIGINT)

    args = ["seed=0,1", "trainer.max_epochs=2"]
    with monkeypatch.context() as m:
        m.setattr(LeNet5Module, "on_train_batch_start", on_train_batch_start)
        message, output = multirun(*args)
    assert message is not None, output[-3000:]
    parent, children = parent_and_children(sweep_client)
    (killed,) = children  # the sweep stopped with its first job
    assert killed.info.status == "KILLED" and killed.data.tags["seed"] == "0"
    # Relaunch the same command: the KILLED job continues in its own run, the other runs.
    message, output = multirun(*args)
    assert message is None, output[-3000:]
    assert f"continuing run {killed.info.run_id} from its last checkpoint" in output
    parent2, children2 = parent_and_children(sweep_client)
    assert parent2.info.run_id == parent.info.run_id
    assert parent2.info.status == "FINISHED"
    assert parent2.data.metrics["children_finished"] == 2
    assert len(children2) == 2
    assert {c.info.status for c in children2} == {"FINISHED"}
    continued = sweep_client.get_run(killed.info.run_id)
    assert continued.info.status == "FINISHED"
    assert "lenet5.superseded" not in continued.data.tags
    steps = {m.step for m in sweep_client.get_metric_history(continued.info.run_id, "val/acc")}
    assert len(steps) == 2  # one validation per epoch: epoch 1 redone, not epoch 0


@pytest.mark.slow  # a sweep, then its relaunch
def test_a_relaunch_takes_over_runs_left_running_by_a_dead_process(
    multirun,  # noqa: F811
    sweep_client,  # noqa: F811
):
    import socket
    import subprocess

    args = ["seed=0,1"]
    message, output = multirun(*args)
    assert message is None, output[-3000:]
    parent, children = parent_and_children(sweep_client)
    # As if the sweep's main process and a worker had been killed outright (SIGKILL: no
    # handler ran): the parent and one job's run left RUNNING, their process gone.
    gone = subprocess.Popen(["true"])
    gone.wait()
    orphan = children[0]
    for run in (parent, orphan):
        sweep_client.update_run(run.info.run_id, "RUNNING")
        sweep_client.set_tag(run.info.run_id, "lenet5.host", socket.gethostname())
        sweep_client.set_tag(run.info.run_id, "lenet5.pid", str(gone.pid))
    message, output = multirun(*args)
    assert message is None, output[-3000:]
    # No manual --reap: the relaunch ends the orphan KILLED and continues it in its own run.
    assert f"continuing run {orphan.info.run_id} from its last checkpoint" in output
    assert output.count("skipping: run") == 1
    parent2, children2 = parent_and_children(sweep_client)
    assert parent2.info.run_id == parent.info.run_id and parent2.info.status == "FINISHED"
    assert {c.info.run_id for c in children2} == {c.info.run_id for c in children}
    assert {c.info.status for c in children2} == {"FINISHED"}
    taken = sweep_client.get_run(orphan.info.run_id).data.tags["failure_reason"]
    assert taken.startswith(f"reaped by the relaunch of its sweep: its process {gone.pid}")


def test_submitits_stop_before_the_time_limit_ends_the_run_killed(
    quick, store, client, monkeypatch
):
    """Slurm signals a task ahead of its time limit (submitit asks it to); submitit's handler
    then raises its UncompletedJobError in the training: the run is KILLED (continued on the
    sweep's relaunch), not FAILED."""
    import pytest
    from submitit.core.utils import UncompletedJobError
    from test_reliability import TWO_EPOCHS, runs_of

    from lenet5.cli.train import run
    from lenet5.training.module import LeNet5Module

    def on_train_batch_start(self, batch, batch_idx):
        if (self.current_epoch, batch_idx) == (1, 0):
            raise UncompletedJobError("Job not requeued because: timed-out and not checkpointable.")

    monkeypatch.setattr(LeNet5Module, "on_train_batch_start", on_train_batch_start)
    with pytest.raises(UncompletedJobError):
        run([*quick, *TWO_EPOCHS, *store])
    (rec,) = runs_of(client)
    assert rec.info.status == "KILLED"
    assert rec.data.tags["failure_reason"].startswith("stopped by the scheduler: Job not requeued")

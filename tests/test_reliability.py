"""Faults lose nothing and explain themselves: bad stores, NaN, signals, resume, determinism."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from mlflow.tracking import MlflowClient

from lenet5.cli.train import run
from lenet5.core.errors import ConfigError, DataError, StoreError
from lenet5.data.sources import load_mnist
from lenet5.training.callbacks import NonFiniteLossError

LENET5_TRAIN = str(Path(sys.executable).with_name("lenet5-train"))


def runs_of(client, experiment="test"):
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def test_unwritable_store_is_refused_before_training(quick, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the store's folder should be")
    with pytest.raises(StoreError, match="cannot create the MLflow store folder"):
        run([*quick, f"mlflow.tracking_uri=sqlite:///{blocker}/mlflow.db"])


def test_unreadable_data_root_is_named(tmp_path, monkeypatch):
    root = tmp_path / "mnist_root"
    root.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if Path(p) == root else real_access(p, m))
    with pytest.raises(DataError, match=f"data root {root} is not readable"):
        load_mnist(str(root), download=False)


def test_missing_data_refused_before_any_run_is_opened(store, client, tmp_path):
    with pytest.raises(DataError, match="data=mnist_subset"):
        run(
            [
                *store,
                "data=mnist",
                f"data.root={tmp_path}/empty",
                "data.source.download=false",
            ]
        )
    assert runs_of(client) == []  # no run at all, so none left RUNNING


@pytest.mark.parametrize(
    ("override", "error", "message"),
    [
        ("data.batch_size=0", ConfigError, "data.batch_size=0 is invalid"),
        ("data.val_size=4000", DataError, "the training split has 4000 images"),
        ("model/activation=nope", Exception, "Available options in 'model/activation'"),
    ],
)
def test_bad_input_opens_no_run(quick, store, client, override, error, message):
    with pytest.raises(error, match=message):
        run([*quick, *store, override])
    assert runs_of(client) == []


def test_nan_loss_stops_the_run_failed_and_keeps_the_last_good_checkpoint(quick, store, client):
    # Epoch 0 trains at lr 0.01; the scheduler then multiplies lr by 1e12: the loss blows up.
    explode = [
        "model=modern",
        "optimizer=sgd",
        "optimizer.lr=0.01",
        "+scheduler._target_=torch.optim.lr_scheduler.StepLR",
        "+scheduler._partial_=true",
        "+scheduler.step_size=1",
        "+scheduler.gamma=1e12",
        "trainer.max_epochs=3",
        "++trainer.limit_train_batches=20",
    ]
    with pytest.raises(NonFiniteLossError, match="training loss became"):
        run([*quick, *store, *explode])
    (rec,) = runs_of(client)
    assert rec.info.status == "FAILED"
    assert "NonFiniteLossError: training loss became" in rec.data.tags["failure_reason"]
    last = Path(rec.info.artifact_uri.removeprefix("file://"), "checkpoints/last.ckpt")
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert state["epoch"] == 0  # the last completed epoch
    assert all(
        torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point()
    )


# Slow enough per epoch (batch 8: ~440 updates) that a signal lands mid-training.
LONG = [
    "data=mnist_subset",
    "data.batch_size=8",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "trainer.deterministic=true",
    "threads=1",
    "model=modern",
    "optimizer=sgd",
    "optimizer.lr=0.01",
]


def while_running(proc, found, poll: float = 0.05) -> float:
    """Wait until `found()` (a run's first checkpoint) while `proc` still runs; the deadline
    (900 s from now) for the rest of the test."""
    deadline = time.time() + 900
    while not found():
        assert proc.poll() is None, proc.stdout.read()[-4000:]
        assert time.time() < deadline, "no checkpoint after 900 s"
        time.sleep(poll)
    return deadline


def start_and_interrupt(tmp_path, sig):
    """Start lenet5-train, wait for its first epoch's checkpoint, send `sig`; return the run."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    store = [
        f"mlflow.tracking_uri={uri}",
        f"mlflow.artifact_root={tmp_path}/art",
        "mlflow.experiment_name=test",
    ]
    proc = subprocess.Popen(
        [LENET5_TRAIN, *LONG, *store],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    while_running(proc, lambda: any(Path(tmp_path, "art").rglob("last.ckpt")))
    proc.send_signal(sig)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0, out[-2000:]
    client = MlflowClient(uri)
    (rec,) = runs_of(client)
    return client, rec


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_ends_the_run_killed_with_its_checkpoint(tmp_path, sig):
    client, rec = start_and_interrupt(tmp_path, sig)
    assert rec.info.status == "KILLED"
    assert "failure_reason" in rec.data.tags
    artifacts = {f.path for f in client.list_artifacts(rec.info.run_id, "checkpoints")}
    assert "checkpoints/last.ckpt" in artifacts


class StatusAtTest(pl.Callback):
    """Writes to `out` the status of the run in the store when the test starts."""

    def __init__(self, out: str):
        self.out = Path(out)

    def on_test_start(self, trainer, pl_module):
        logger = trainer.logger
        self.out.write_text(logger.experiment.get_run(logger.run_id).info.status)


def test_the_run_is_still_running_while_it_tests(quick, store, client, tmp_path):
    # Seen in the chaos test: Lightning's MLflow logger ended the run FINISHED when fit ended;
    # a worker killed during the test left a FINISHED run without a test error, and the
    # sweep's relaunch skipped that job, then failed on the missing metric.
    out = tmp_path / "status.txt"
    callback = [
        f"+callbacks.status._target_={__name__}.StatusAtTest",
        f"+callbacks.status.out={out}",
    ]
    run([*quick, *store, *callback])
    assert out.read_text() == "RUNNING"
    (rec,) = runs_of(client)
    assert rec.info.status == "FINISHED" and "test/error" in rec.data.metrics


def test_a_stop_that_lands_where_python_drops_exceptions_is_delivered_again(capfd):
    # Seen in the chaos test: SIGTERM landed in a weakref callback the garbage collector ran
    # (SQLAlchemy's); Python printed "Exception ignored" and the stopped job trained on.
    import weakref

    from lenet5.core import process

    class Owner:
        pass

    unraisable = sys.unraisablehook
    with pytest.raises(KeyboardInterrupt, match="signal SIGTERM"), process.interrupts():
        owner = Owner()
        weakref.finalize(owner, os.kill, os.getpid(), signal.SIGTERM)
        del owner  # the finaliser runs here, and the stop lands in it
        time.sleep(30)  # the stop, sent again, ends this
    assert "Exception ignored" not in capfd.readouterr().err
    assert sys.unraisablehook is unraisable  # put back


def test_a_signal_that_library_code_turns_into_its_own_error_still_ends_the_run_killed(
    quick, store, client, monkeypatch
):
    # Seen in the chaos test: SIGTERM landed inside OmegaConf building the recorded config, and
    # OmegaConf's clean-up raised a ConfigKeyError in place of the KeyboardInterrupt: the job
    # was reported FAILED with a traceback although a stop, not a fault, ended it.
    from lenet5.core import process
    from lenet5.tracking import runs

    def interrupted_mid_way(*args):  # recording the config, as in the chaos test
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        except KeyboardInterrupt as e:
            raise ValueError("what the library made of the interrupt") from e
        raise AssertionError("SIGTERM did not interrupt")

    monkeypatch.setattr(runs, "_record_config", interrupted_mid_way)
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt, match="signal SIGTERM") as stop:
        run([*quick, *store])  # `lenet5-train` turns this into its one line and exit status 130
    assert isinstance(stop.value.__cause__, ValueError)  # what it became is kept as the cause
    (rec,) = runs_of(client)
    assert rec.info.status == "KILLED", rec.data.tags.get("failure_reason")
    assert signal.getsignal(signal.SIGTERM) is handler  # the handler found was put back
    assert process.stopped_by() is None  # and the stop forgotten: a later error is an error


def test_a_stop_inside_a_store_read_does_not_lock_the_store_against_ending_the_run(
    quick, store, client, tmp_path, monkeypatch
):
    # Seen in the chaos test: SIGTERM landed while MLflow read the store, and that read's
    # cursor, alive in the traceback's frames, kept SQLite's shared lock. Ending the run KILLED
    # then waited 20 s (MLflow's busy timeout) and failed "database is locked", leaving it
    # RUNNING; the sweep's other processes waited on the same lock.
    import sqlite3

    from lenet5.tracking import runs

    def reading_when_stopped(db: Path) -> None:
        rows = sqlite3.connect(db).execute("select name from sqlite_master")
        rows.fetchone()  # more rows to come: the read is open, the lock held
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not interrupt")

    def recording(*args):
        reading_when_stopped(tmp_path / "mlflow.db")

    monkeypatch.setattr(runs, "_record_config", recording)
    with pytest.raises(KeyboardInterrupt, match="signal SIGTERM"):
        run([*quick, *store])
    (rec,) = runs_of(client)
    assert rec.info.status == "KILLED", rec.data.tags.get("failure_reason")


# Two short epochs of one-thread, deterministic training: what the resume test compares.
TWO_EPOCHS = [
    "trainer.max_epochs=2",
    "++trainer.limit_train_batches=2",  # a step before and one after an interrupt at (1, 1)
    "trainer.deterministic=true",
    "threads=1",
    "model=modern",
    "optimizer=sgd",
    "optimizer.lr=0.01",
]


def test_resume_continues_the_same_run_and_matches_an_uninterrupted_one(
    quick, new_store, tmp_path, monkeypatch
):
    from lenet5.training.module import LeNet5Module

    # Ctrl-C in the second epoch, after its first step: a real SIGINT to this process,
    # raised at a fixed point of training (the signal tests above send it from outside).
    def on_train_batch_start(self, batch, batch_idx):
        if (self.current_epoch, batch_idx) == (1, 1):
            signal.raise_signal(signal.SIGINT)

    store = new_store(tmp_path / "a")
    client = MlflowClient(f"sqlite:///{tmp_path}/a/mlflow.db")
    with monkeypatch.context() as m:
        m.setattr(LeNet5Module, "on_train_batch_start", on_train_batch_start)
        with pytest.raises(SystemExit):  # what Lightning turns a Ctrl-C into
            run([*quick, *TWO_EPOCHS, *store])
    (rec,) = runs_of(client)
    assert rec.info.status == "KILLED"
    run_id = rec.info.run_id
    params_before = rec.data.params
    run([f"resume={run_id}", *store])
    resumed = client.get_run(run_id)
    assert resumed.info.status == "FINISHED"
    assert resumed.data.params == params_before  # nothing re-logged with other values
    assert len(runs_of(client)) == 1  # the same run, not a new one
    # The same config and seed, never interrupted, in another store.
    run([*quick, *TWO_EPOCHS, *new_store(tmp_path / "b")])
    other = MlflowClient(f"sqlite:///{tmp_path}/b/mlflow.db")
    (straight,) = runs_of(other)
    # The training cost counts the samples of both attempts, as one uninterrupted run's.
    for key in ("test/acc", "test/loss", "val/acc", "final/train_flops"):
        assert resumed.data.metrics[key] == straight.data.metrics[key], key
    # Metrics went on at the steps an uninterrupted run logs them at.
    steps = lambda c, r: {m.step for m in c.get_metric_history(r, "val/acc")}  # noqa: E731
    assert steps(client, run_id) == steps(other, straight.info.run_id)
    assert len(steps(client, run_id)) == 2  # one validation per epoch


def test_resume_refuses_other_overrides_and_finished_runs(quick, store, client):
    run([*quick, *store])
    (rec,) = runs_of(client)
    with pytest.raises(ConfigError, match="drop the other overrides"):
        run([f"resume={rec.info.run_id}", "optimizer.lr=0.5", *store])
    with pytest.raises(StoreError, match="already FINISHED"):
        run([f"resume={rec.info.run_id}", *store])


def test_same_config_and_seed_give_bitwise_identical_metrics(quick, new_store, tmp_path):
    results = []
    for i in range(2):
        store = new_store(tmp_path / str(i))
        run([*quick, "trainer.deterministic=true", "threads=1", "seed=7", *store])
        (rec,) = runs_of(MlflowClient(f"sqlite:///{tmp_path}/{i}/mlflow.db"))
        results.append(rec.data.metrics)
    for key in ("test/acc", "test/loss", "test/error", "val/loss", "train/loss"):
        assert results[0][key] == results[1][key], key


def independent_runs_on_a_fresh_store(tmp_path, n: int, uri: str | None = None) -> list:
    """n `lenet5-train` processes started at once (n terminals, n batch jobs: no sweep) on a
    store that does not exist yet (a SQLite file in tmp_path, or a tracking server's `uri`
    with no experiment yet); returns their runs."""
    script = shutil.which("lenet5-train", path=str(Path(sys.executable).parent))
    uri = uri or f"sqlite:///{tmp_path}/mlflow.db"
    procs = [
        subprocess.Popen(
            [
                script,
                "data.val_size=100",
                "trainer.max_epochs=1",
                "+trainer.limit_train_batches=1",
                "trainer.enable_progress_bar=false",
                "trainer.enable_model_summary=false",
                "threads=1",
                f"seed={seed}",
                f"mlflow.tracking_uri={uri}",
                *([f"mlflow.artifact_root={tmp_path}/artifacts"] if "sqlite" in uri else []),
                "mlflow.experiment_name=together",
                f"hydra.run.dir={tmp_path}/hydra/{seed}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(n)
    ]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    failed = [e[-2000:] for p, e in zip(procs, errors, strict=True) if p.returncode]
    assert not failed, failed[0]
    client = MlflowClient(uri)
    assert "together" in [e.name for e in client.search_experiments()]
    assert not client.search_runs(["0"])  # none landed in Default (set_experiment's race)
    return client.search_runs([client.get_experiment_by_name("together").experiment_id])


@pytest.mark.slow
def test_eight_independent_processes_on_a_fresh_store_all_record_their_runs(tmp_path):
    runs = independent_runs_on_a_fresh_store(tmp_path, 8)
    assert sorted(int(r.data.tags["seed"]) for r in runs) == list(range(8))
    assert {r.info.status for r in runs} == {"FINISHED"}


@pytest.mark.stress
@pytest.mark.parametrize("attempt", [2, 3, 4, 5])
def test_eight_independent_processes_again(tmp_path, attempt):
    runs = independent_runs_on_a_fresh_store(tmp_path, 8)
    assert len(runs) == 8 and {r.info.status for r in runs} == {"FINISHED"}


def test_a_bad_value_answers_in_one_line_with_exit_2_before_torch_loads(tmp_path):
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('torch loaded:', 'torch' in sys.modules, file=sys.stderr))\n"
        "from lenet5.cli.train import main\n"
        "main()\n"
    )
    store = tmp_path / "mlflow.db"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "data.batch_size=abc",
            f"mlflow.tracking_uri=sqlite:///{store}",
            f"hydra.run.dir={tmp_path}/hydra",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: data.batch_size='abc' is invalid: it must be an integer >= 1 "
        "(set data.batch_size=...)",
        "torch loaded: False",
    ]
    assert not store.exists()  # no store opened, no run recorded

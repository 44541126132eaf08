"""Lightning callbacks come from config (conf/callbacks/), added and dropped without code."""

import json
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint

from lenet5.cli.train import compose, run
from lenet5.training.build import build_callbacks
from lenet5.training.callbacks import StopOnNonFiniteLoss


class RecordEpochs(pl.Callback):
    """A user's own callback: writes the epochs it saw end to `out`."""

    def __init__(self, out: str):
        self.out, self.epochs = Path(out), []

    def on_train_epoch_end(self, trainer, pl_module):
        self.epochs.append(trainer.current_epoch)
        self.out.write_text(json.dumps(self.epochs))


def test_default_callbacks_checkpoint_into_the_run_and_stop_on_nan(tmp_path):
    checkpoint, stop = build_callbacks(compose(), tmp_path / "ckpt")
    assert isinstance(checkpoint, ModelCheckpoint) and isinstance(stop, StopOnNonFiniteLoss)
    assert Path(checkpoint.dirpath) == tmp_path / "ckpt"
    assert checkpoint.monitor == "val/acc" and checkpoint.save_last
    (no_val,) = build_callbacks(
        compose(["data.val_size=0", "callbacks.stop_on_nonfinite=null"]), tmp_path
    )
    assert no_val.monitor is None  # nothing to monitor without validation: keep the last


def test_option_files_and_shell_overrides_add_callbacks(tmp_path):
    cfg = compose(
        [
            "callbacks=[default,early_stop,lr_monitor]",
            f"+callbacks.mine._target_={__name__}.RecordEpochs",
            f"+callbacks.mine.out={tmp_path}/epochs.json",
        ]
    )
    kinds = [type(c) for c in build_callbacks(cfg, tmp_path)]
    assert kinds == [
        ModelCheckpoint,
        StopOnNonFiniteLoss,
        EarlyStopping,
        LearningRateMonitor,
        RecordEpochs,
    ]


def test_a_run_uses_the_configured_callbacks(store, client, tmp_path):
    run(
        [
            "trainer.max_epochs=2",
            "trainer.enable_progress_bar=false",
            "+trainer.limit_train_batches=1",
            *store,
            "callbacks=[default,lr_monitor]",
            f"+callbacks.mine._target_={__name__}.RecordEpochs",
            f"+callbacks.mine.out={tmp_path}/epochs.json",
        ]
    )
    assert json.loads((tmp_path / "epochs.json").read_text()) == [0, 1]
    (rec,) = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert rec.info.status == "FINISHED"
    history = client.get_metric_history(rec.info.run_id, "lr-Adam")  # LearningRateMonitor's
    assert [m.value for m in history] == [0.001, 0.001]
    assert rec.data.params["callbacks.mine.out"] == f"{tmp_path}/epochs.json"


def test_without_a_checkpoint_callback_nothing_is_written_outside_the_run(
    store, client, tmp_path, monkeypatch
):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    run(["callbacks=lr_monitor", "trainer.max_epochs=1", "+trainer.limit_train_batches=1", *store])
    (rec,) = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert rec.info.status == "FINISHED"
    assert list(work.iterdir()) == []  # Lightning's own checkpoint would land here

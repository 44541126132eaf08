"""Faults during training: a loss that stops being finite, and termination signals."""

import math
import signal

import pytorch_lightning as pl
import torch


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the run is stopped and marked FAILED."""


class StopOnNonFiniteLoss(pl.Callback):
    """Fail the run at the first non-finite training loss, naming the epoch and step.

    Training on from a NaN only burns compute; the last completed epoch's checkpoint
    (`last.ckpt`) is kept, and the run records the reason.
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:  # manual optimization returns nothing; its step logs train/loss
            loss = trainer.callback_metrics.get("train/loss")
        if loss is None:
            return
        value = float(loss.detach() if isinstance(loss, torch.Tensor) else loss)
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"training loss became {value} at epoch {trainer.current_epoch}, step "
                f"{trainer.global_step}: lower the learning rate (optimizer.lr) or check the "
                "data; the last completed epoch is in checkpoints/last.ckpt"
            )


def interrupt_on_signals() -> None:
    """Ctrl-C (SIGINT) and SIGTERM (a scheduler's or `kill`'s stop) both unwind training like
    Ctrl-C, so the run ends KILLED with its last checkpoint.

    SIGINT gets Python's own handler back even where the process started with it ignored
    (what a non-interactive shell does to a command started with `&`).
    """

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, handler)

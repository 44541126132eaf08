"""Lightning callbacks of lenet5's own (conf/callbacks/): a loss that stops being finite."""

import math

import pytorch_lightning as pl
import torch

from lenet5.core.names import TRAIN_LOSS


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
            loss = trainer.callback_metrics.get(TRAIN_LOSS)
        if loss is None:
            return
        value = float(loss.detach() if isinstance(loss, torch.Tensor) else loss)
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"training loss became {value} at epoch {trainer.current_epoch}, step "
                f"{trainer.global_step}: lower the learning rate (optimizer.lr) or check the "
                "data; the last completed epoch is in checkpoints/last.ckpt"
            )

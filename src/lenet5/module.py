"""The LightningModule: one training recipe around any LeNet-5 built by `network.py`.

Two modes, chosen by the datamodule (`data.batch_size`, `data.chunk_size`):
- a training step gets one batch and Lightning makes one update from it (the usual mode);
- a training step gets a chunk of several batches, e.g. 128 single samples for the paper's
  per-sample updates, and makes one update per batch inside it (manual optimization), so
  Lightning's per-step cost is paid once per chunk. The two give the same weights.

SDLM (`sdlm.py`) re-estimates its curvature on the datamodule's `train_sample` before each
pass (appendix C); other optimizers skip that.
"""

from collections.abc import Callable

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lenet5.sdlm import SDLM


class LeNet5Module(pl.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., object] | None = None,
        num_classes: int = 10,
    ):
        super().__init__()
        self.model, self.loss = model, loss
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_class_acc = MulticlassAccuracy(num_classes, average=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def setup(self, stage: str) -> None:
        # Chunks of several batches => one update per batch, made here (manual optimization).
        dm = self.trainer.datamodule
        chunk, batch = getattr(dm, "chunk_size", None), getattr(dm, "batch_size", None)
        self.update_size = batch if chunk and batch and chunk > batch else None
        self.automatic_optimization = self.update_size is None

    def on_train_epoch_start(self):
        optimizer = self.trainer.optimizers[0]
        if isinstance(optimizer, SDLM):  # h before each pass, held during it (app. C)
            x, y = self.trainer.datamodule.train_sample(optimizer.n_samples, self.current_epoch)
            optimizer.estimate_hessian(self.model, self.loss, x.to(self.device), y.to(self.device))

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.automatic_optimization:
            loss = self.loss(self.model(x), y)
            self.log("train/loss", loss, prog_bar=True)
            return loss
        optimizer = self.optimizers()
        total = x.new_zeros(())
        for xb, yb in zip(x.split(self.update_size), y.split(self.update_size), strict=True):
            loss = self.loss(self.model(xb), yb)
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
            total += loss.detach() * len(yb)
        self.log("train/loss", total / len(y), prog_bar=True, batch_size=len(y))
        return None

    def on_train_epoch_end(self):
        scheduler = self.lr_schedulers()
        if not self.automatic_optimization and scheduler is not None:
            scheduler.step()  # per pass; Lightning steps schedulers only in automatic mode

    def validation_step(self, batch, batch_idx):
        x, y = batch
        scores = self.model(x)
        self.log("val/loss", self.loss(scores, y), prog_bar=True)
        self.val_acc(scores, y)
        self.log("val/acc", self.val_acc, prog_bar=True)

    def test_step(self, batch, batch_idx):
        x, y = batch
        scores = self.model(x)
        self.log("test/loss", self.loss(scores, y))
        self.test_acc.update(scores, y)
        self.test_class_acc.update(scores, y)

    def on_test_epoch_end(self):
        acc = self.test_acc.compute()
        self.log_dict({"test/acc": acc, "test/error": 1.0 - acc})
        for k, class_acc in enumerate(self.test_class_acc.compute()):
            self.log(f"test/acc_class_{k}", class_acc)
        self.test_acc.reset()
        self.test_class_acc.reset()

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}

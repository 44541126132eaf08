"""The LightningModule: one training recipe around any LeNet-5 built by `network.py`."""

from collections.abc import Callable

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy


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

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.loss(self.model(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

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

"""The LightningModule: one training recipe around any LeNet-5 (`lenet5.model.network`).

Two modes, chosen once by `lenet5.training.chunks.chunk_size` and passed in as `update_size`:
- a training step gets a chunk of several batches (the default: ~1024 samples, or 128 single
  samples for the paper's per-sample updates) and makes one update per batch inside it
  (manual optimization), so Lightning's per-step cost is paid once per chunk;
- a training step gets one batch and Lightning makes one update from it (`data.chunk_size`
  = `data.batch_size`; what gradient clipping and accumulation need).
The two give the same weights; `global_step` and `trainer.max_steps` count updates in both.

In the chunked mode `manual_backward` and `LightningOptimizer.step` cost ~0.12 ms per update
in hooks and wrappers (~10% of a per-sample update of LeNet-5 on a CPU core). Where they
would do nothing but `loss.backward()`, `optimizer.step()` and count the step (32-bit
precision on one device, no profiler, no hook that runs per update), the chunk loop calls
those directly; the weights, `global_step` and everything logged stay the same. Counting
the step uses two private methods of Lightning's `LightningOptimizer` (`_on_before_step`,
`_on_after_step`, pytorch-lightning 2.6): where they are missing the loop falls back to
the public path, and tests/test_per_sample.py fails loudly if they go or change meaning.

An optimizer with a curvature estimate (SDLM, `lenet5.training.sdlm`) re-estimates it before each pass
(appendix C) on samples drawn by `curvature_sample(n, epoch)`; other optimizers skip that.
"""

import time
from collections.abc import Callable

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.precision import Precision
from pytorch_lightning.profilers import PassThroughProfiler
from pytorch_lightning.strategies import SingleDeviceStrategy
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from lenet5.core.names import TEST_ACC, TEST_ERROR, TEST_LOSS, TRAIN_LOSS, VAL_ACC, VAL_LOSS
from lenet5.training import cohort
from lenet5.training.cohort import STEP_COUNTERS

# What manual_backward and LightningOptimizer.step run besides backward() and step().
PER_UPDATE_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
# Test digits the network got wrong, kept (image, predicted, true) for a picture of them.
KEEP_MISCLASSIFIED = 36


class LeNet5Module(pl.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., object] | None = None,
        num_classes: int = 10,
        update_size: int | None = None,
        curvature_sample: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]] | None = None,
    ):
        """`update_size`: samples per update when a training step gets a chunk of several
        batches (manual optimization); None for one batch and one update per step."""
        super().__init__()
        self.model, self.loss = model, loss
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.update_size, self.curvature_sample = update_size, curvature_sample
        self.automatic_optimization = update_size is None
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_class_acc = MulticlassAccuracy(num_classes, average=None)
        # What the run's pictures show (lenet5.training.pictures): filled by each test.
        self.test_confusion = MulticlassConfusionMatrix(num_classes)
        self.confusion: torch.Tensor | None = None  # (true, predicted) counts
        self.misclassified: list[tuple[torch.Tensor, int, int]] = []
        # Per test example, in the test set's order: the class predicted and the true one
        # (the run's predictions/ artifact, the report's per-example evidence).
        self.predicted: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self.samples_seen = 0  # training samples, over every epoch (kept in checkpoints)
        self.samples_trained = 0  # samples_seen when fit ended (testing the best reloads it)
        self.plain_updates = False  # set per fit in on_train_start
        self.train_started_at: float | None = None  # perf_counter before the first batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def on_train_start(self) -> None:
        self.train_started_at = time.perf_counter()  # where start-up ends (core.stages)
        self.plain_updates = (
            not self.automatic_optimization
            and self._hooks_are_no_ops()
            and all(hasattr(self.optimizers(), name) for name in STEP_COUNTERS)
        )

    def _hooks_are_no_ops(self) -> bool:
        """Whether Lightning's manual-optimization wrappers would only call backward(), step()
        and count the step: nothing to scale, sync, profile or call back per update."""
        trainer = self.trainer
        if not (
            type(trainer.precision_plugin) is Precision
            and type(trainer.strategy) is SingleDeviceStrategy
            and isinstance(trainer.profiler, PassThroughProfiler)
            and type(self).backward is pl.LightningModule.backward
        ):
            return False
        for hook in PER_UPDATE_HOOKS:
            if getattr(type(self), hook) is not getattr(pl.LightningModule, hook):
                return False
            if any(
                getattr(type(cb), hook) is not getattr(pl.Callback, hook)
                for cb in trainer.callbacks
            ):
                return False
        return True

    def on_train_epoch_start(self):
        optimizer = self.trainer.optimizers[0]
        estimate = getattr(optimizer, "estimate_hessian", None)
        if estimate is not None:  # h before each pass, held during it (app. C)
            if self.curvature_sample is None:
                raise ValueError(
                    f"{type(optimizer).__name__} estimates its curvature before each pass: "
                    "give the module a curvature_sample(n, epoch)"
                )
            x, y = self.curvature_sample(optimizer.n_samples, self.current_epoch)
            estimate(self.model, self.loss, x.to(self.device), y.to(self.device))

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.automatic_optimization:
            loss = self.loss(self.model(x), y)
            self.log(TRAIN_LOSS, loss, prog_bar=True)
            self.samples_seen += len(y)
            return loss
        seat = cohort.current()  # a member of a cohort: its updates made with the others'
        total, seen = self.updates(x, y) if seat is None else seat.updates(self, x, y)
        if seen:
            self.log(TRAIN_LOSS, total / seen, prog_bar=True, batch_size=seen)
        self.samples_seen += seen
        return None

    def updates(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, int]:
        """One update per `update_size` samples of the chunk (x, y); (summed loss, samples)."""
        optimizer = self.optimizers()
        if self.plain_updates:
            # The LightningOptimizer's own step counting (what manual optimization sets up),
            # around the plain optimizer's step: global_step still counts every update.
            raw = optimizer.optimizer
            before, after = (getattr(optimizer, name) for name in STEP_COUNTERS)
        total, seen = x.new_zeros(()), 0
        max_steps = self.trainer.max_steps
        for xb, yb in zip(x.split(self.update_size), y.split(self.update_size), strict=True):
            if 0 <= max_steps <= self.global_step:  # stop mid-chunk, as one-step-per-batch would
                break
            loss = self.loss(self.model(xb), yb)
            if self.plain_updates:
                raw.zero_grad()
                loss.backward()
                before()
                raw.step()
                after()
            else:
                optimizer.zero_grad()
                self.manual_backward(loss)
                optimizer.step()
            total += loss.detach() * len(yb)
            seen += len(yb)
        return total, seen

    def on_train_end(self) -> None:
        self.samples_trained = self.samples_seen

    def on_train_epoch_end(self):
        scheduler = self.lr_schedulers()
        if not self.automatic_optimization and scheduler is not None:
            scheduler.step()  # per pass; Lightning steps schedulers only in automatic mode

    def validation_step(self, batch, batch_idx):
        x, y = batch
        scores = self.model(x)
        self.log(VAL_LOSS, self.loss(scores, y), prog_bar=True)
        self.val_acc(scores, y)
        self.log(VAL_ACC, self.val_acc, prog_bar=True)

    def test_step(self, batch, batch_idx):
        x, y = batch
        scores = self.model(x)
        self.log(TEST_LOSS, self.loss(scores, y))
        self.test_acc.update(scores, y)
        self.test_class_acc.update(scores, y)
        self.test_confusion.update(scores, y)
        predicted = scores.argmax(1)
        self.predicted.append(predicted.to(torch.uint8).cpu())
        self.targets.append(y.to(torch.uint8).cpu())
        room = KEEP_MISCLASSIFIED - len(self.misclassified)
        if room > 0:
            wrong = (predicted != y).nonzero().flatten()[:room].tolist()
            self.misclassified += [(x[i].cpu(), int(predicted[i]), int(y[i])) for i in wrong]

    def on_test_epoch_end(self):
        acc = self.test_acc.compute()
        self.log_dict({TEST_ACC: acc, TEST_ERROR: 1.0 - acc})
        # Under their own prefix: a chart section apart from the headline metrics.
        for k, class_acc in enumerate(self.test_class_acc.compute()):
            self.log(f"test_class/acc_{k}", class_acc)
        self.confusion = self.test_confusion.compute().cpu()
        self.test_acc.reset()
        self.test_class_acc.reset()
        self.test_confusion.reset()

    def on_test_epoch_start(self):
        self.misclassified, self.predicted, self.targets = [], [], []

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["lenet5_samples_seen"] = self.samples_seen  # a resumed run counts on

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.samples_seen = checkpoint.get("lenet5_samples_seen", 0)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}

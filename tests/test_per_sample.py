"""Per-sample updates served in chunks give the weights of a plain per-sample loop; the
chunk size is decided once (lenet5.training.chunks.chunk_size) and handed to data and module."""

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch import nn

from lenet5.cli.train import compose
from lenet5.core.errors import ConfigError
from lenet5.core.paths import CONF_DIR
from lenet5.data.datamodule import DigitsDataModule, TensorBatches
from lenet5.model.activation import ScaledTanh
from lenet5.model.connectivity import SparseConv2d
from lenet5.model.head import RBFHead
from lenet5.model.loss import MLELoss
from lenet5.model.network import LeNet5
from lenet5.model.pooling import TrainableSubsampling
from lenet5.training.build import build_module
from lenet5.training.chunks import chunk_size
from lenet5.training.module import LeNet5Module
from lenet5.training.sdlm import SDLM, piecewise_constant

N_TRAIN, EPOCHS = 24, 2


def tiny_source():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (N_TRAIN + 10, 28, 28), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (N_TRAIN + 10,), generator=g)
    return images[:N_TRAIN], labels[:N_TRAIN], images[N_TRAIN:], labels[N_TRAIN:]


def paper_net() -> nn.Module:
    """LeNet-5 with every choice the paper's, sparse C3 (Table I) included."""
    torch.manual_seed(0)
    table = OmegaConf.load(CONF_DIR / "model/connectivity/sparse.yaml").table
    return LeNet5(
        activation=ScaledTanh,
        pooling=TrainableSubsampling,
        connectivity=lambda **kw: SparseConv2d(**kw, table=table),
        head=RBFHead,
    )


OPTIMIZERS = {
    "sgd": lambda params: torch.optim.SGD(params, lr=1e-3),
    "sdlm": lambda params: SDLM(params, lr=1e-5, n_samples=16),
}
# eta halves after the first pass: a scheduler the module must step itself in manual mode
SCHEDULE = lambda opt: piecewise_constant(opt, milestones=[1], factors=[1.0, 0.5])  # noqa: E731


def fit(
    module: LeNet5Module, dm: DigitsDataModule, max_steps: int = -1, callbacks=()
) -> pl.Trainer:
    """A bare Trainer (no logger, checkpoints or progress bar) fitted for EPOCHS passes."""
    trainer = pl.Trainer(
        callbacks=list(callbacks),
        max_epochs=EPOCHS,
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=dm)
    return trainer


def lightning_weights(optimizer: str, chunk: int, monkeypatch, callbacks=()):
    """Train with Lightning; also returns when SDLM estimated h as (epoch, updates so far)."""
    dm = DigitsDataModule(tiny_source, val_size=0, batch_size=1, chunk_size=chunk, seed=3)
    module = LeNet5Module(
        paper_net(),
        MLELoss(),
        OPTIMIZERS[optimizer],
        SCHEDULE,
        update_size=1 if chunk > 1 else None,
        curvature_sample=dm.train_sample,
    )
    calls, estimate = [], SDLM.estimate_hessian

    def spy(opt, *args):
        calls.append((module.current_epoch, module.global_step))
        estimate(opt, *args)

    monkeypatch.setattr(SDLM, "estimate_hessian", spy)
    return module, fit(module, dm, callbacks=callbacks), calls


def loop_weights(optimizer: str):
    """The same updates, one sample at a time, in a plain PyTorch loop."""
    dm = DigitsDataModule(tiny_source, val_size=0, batch_size=1, seed=3)
    dm.setup()
    model, loss = paper_net(), MLELoss()
    opt = OPTIMIZERS[optimizer](model.parameters())
    scheduler = SCHEDULE(opt)
    for epoch in range(EPOCHS):
        if isinstance(opt, SDLM):
            opt.estimate_hessian(model, loss, *dm.train_sample(opt.n_samples, epoch))
        images, labels = dm.splits["train"]
        batches = TensorBatches(
            images, labels, 1, dm.normalize, shuffle=True, seed=3, epoch=lambda e=epoch: e
        )
        for x, y in batches:
            opt.zero_grad()
            loss(model(x), y).backward()
            opt.step()
        scheduler.step()
    return model


def assert_same_weights(module: LeNet5Module, expected: nn.Module) -> None:
    initial = paper_net().state_dict()
    for name, value in expected.state_dict().items():
        torch.testing.assert_close(module.model.state_dict()[name], value, rtol=1e-5, atol=1e-6)
        if name.endswith("weight"):
            assert not torch.allclose(value, initial[name])  # the weights did move


@pytest.mark.parametrize("optimizer", ["sgd", "sdlm"])
def test_chunked_per_sample_updates_equal_a_plain_loop(optimizer, monkeypatch):
    expected = loop_weights(optimizer)
    module, trainer, calls = lightning_weights(optimizer, chunk=16, monkeypatch=monkeypatch)
    assert not module.automatic_optimization  # 24 samples = chunks of 16 + 8
    # The fast path (plain backward/step, Lightning's private step counters) was taken: if
    # this fails, pytorch-lightning's LightningOptimizer internals changed (see module.py).
    assert module.plain_updates
    assert trainer.global_step == EPOCHS * N_TRAIN  # one optimizer step per sample
    assert_same_weights(module, expected)
    # SDLM: h estimated once per pass, before its first update; SGD: never
    assert calls == ([(0, 0), (1, N_TRAIN)] if optimizer == "sdlm" else [])
    assert torch.isfinite(trainer.callback_metrics["train/loss"])  # the chunk's mean loss


class CountUpdates(pl.Callback):
    """A per-update hook: Lightning's wrappers must run, so the chunk loop cannot skip them."""

    def __init__(self):
        self.updates = 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.updates += 1


def test_per_update_hook_takes_the_manual_backward_path_with_the_same_weights(monkeypatch):
    counter = CountUpdates()
    module, trainer, _ = lightning_weights(
        "sgd", chunk=16, monkeypatch=monkeypatch, callbacks=[counter]
    )
    assert not module.automatic_optimization and not module.plain_updates
    assert counter.updates == trainer.global_step == EPOCHS * N_TRAIN
    assert_same_weights(module, loop_weights("sgd"))


def test_sdlm_without_a_sample_source_says_what_to_give():
    dm = DigitsDataModule(tiny_source, val_size=0, batch_size=1, chunk_size=16)
    module = LeNet5Module(paper_net(), MLELoss(), OPTIMIZERS["sdlm"], update_size=1)
    with pytest.raises(ValueError, match="curvature_sample"):
        fit(module, dm)


@pytest.mark.parametrize(
    ("overrides", "chunk"),
    [
        (["data.batch_size=1"], 128),  # per-sample updates, 128 to a step
        (["data.batch_size=64"], 1024),  # 16 updates a step
        (["data.batch_size=300"], 900),
        (["data.batch_size=2000"], 2000),
        (["data.batch_size=8", "data.chunk_size=8"], 8),  # one update per step, as asked
        (["data.batch_size=64", "+trainer.gradient_clip_val=0.5"], 64),  # clipping needs it
        (["data.batch_size=64", "+trainer.accumulate_grad_batches=2"], 64),
        (["data.batch_size=64", "trainer.accelerator=gpu"], 16384),  # 256 updates a step
        (["data.batch_size=256", "trainer.accelerator=gpu"], 16384),
        (["data.batch_size=1", "trainer.accelerator=gpu"], 128),
        (["data.batch_size=64", "trainer.accelerator=cpu"], 1024),
    ],
)
def test_chunk_size_is_decided_once_and_handed_to_data_and_module(overrides, chunk):
    cfg = compose(overrides)
    assert chunk_size(cfg) == chunk
    module = build_module(cfg)
    batch = cfg.data.batch_size
    assert module.update_size == (batch if chunk > batch else None)
    assert module.automatic_optimization == (chunk == batch)


def test_chunk_size_not_a_multiple_of_the_batch_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match=r"set data\.chunk_size=15"):
        chunk_size(compose(["data.batch_size=3", "data.chunk_size=16"]))


def test_datamodule_serves_chunk_size_samples():
    dm = DigitsDataModule(tiny_source, val_size=0, batch_size=1, chunk_size=16)
    dm.setup()
    assert [len(y) for _, y in dm.train_dataloader()] == [16, 8]
    plain = DigitsDataModule(tiny_source, val_size=0, batch_size=8)  # default: one batch
    plain.setup()
    assert [len(y) for _, y in plain.train_dataloader()] == [8, 8, 8]
    with pytest.raises(ValueError, match="multiple"):
        DigitsDataModule(tiny_source, batch_size=3, chunk_size=16)


def batched_fit(chunk: int, max_steps: int = -1):
    torch.manual_seed(1)
    dm = DigitsDataModule(tiny_source, val_size=0, batch_size=4, chunk_size=chunk, seed=3)
    module = LeNet5Module(
        paper_net(), MLELoss(), OPTIMIZERS["sgd"], SCHEDULE, update_size=4 if chunk > 4 else None
    )
    return module, fit(module, dm, max_steps)


@pytest.mark.parametrize("max_steps", [-1, 5])
def test_batched_chunks_equal_one_update_per_lightning_step(max_steps):
    """Batches of 4 served 12 to a step (3 updates each) give the weights that Lightning's
    automatic optimization gives with one batch per step, and stop at the same update."""
    automatic, trainer_a = batched_fit(chunk=4, max_steps=max_steps)
    chunked, trainer_c = batched_fit(chunk=12, max_steps=max_steps)
    assert automatic.automatic_optimization and not chunked.automatic_optimization
    updates = EPOCHS * N_TRAIN // 4 if max_steps < 0 else max_steps
    assert trainer_a.global_step == trainer_c.global_step == updates
    for name, value in automatic.model.state_dict().items():
        torch.testing.assert_close(chunked.model.state_dict()[name], value, rtol=1e-5, atol=1e-6)


def test_train_sample_is_seeded_and_normalized():
    dm = DigitsDataModule(tiny_source, val_size=0, batch_size=1, seed=3)
    dm.setup()
    x0, y0 = dm.train_sample(10, epoch=0)
    x0b, _ = dm.train_sample(10, epoch=0)
    x1, _ = dm.train_sample(10, epoch=1)
    assert x0.shape == (10, 1, 32, 32) and y0.shape == (10,)
    assert torch.equal(x0, x0b) and not torch.equal(x0, x1)
    assert x0.min() >= -0.1 - 1e-6 and x0.max() <= 1.175 + 1e-6  # paper normalization

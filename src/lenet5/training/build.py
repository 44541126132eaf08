"""Build the parts a config names, fit and test them: the training half of one run.

Everything here comes from the config (`_target_` + `instantiate`): the network's blocks,
the loss, the optimizer and schedule, the data, the Lightning callbacks (conf/callbacks/).
Where the run is recorded is not this layer's business: `lenet5.cli.train` opens the MLflow
run (`lenet5.tracking.runs.tracked_run`) and hands its logger and checkpoint folder in.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import ModelCheckpoint

from lenet5.core.errors import ConfigError
from lenet5.model.network import LeNet5, n_trainable_params
from lenet5.model.slots import LAYERS, factory
from lenet5.training import cohort
from lenet5.training.chunks import chunk_size
from lenet5.training.module import LeNet5Module
from lenet5.training.validate import check_classes


def build_model(model_cfg: DictConfig, num_classes: int | None = None):
    """The LeNet-5 network of a `model` config, initialized as it says. `num_classes`: the
    data's, where `data.num_classes` is null (all of the data's classes)."""
    num_classes = num_classes or model_cfg.num_classes
    if num_classes is None:
        raise ConfigError(
            "model.num_classes is null (data.num_classes=null: all of the data's classes), "
            "known once the data is loaded: build the model with the data's num_classes"
        )
    net = LeNet5(
        **{g: factory(model_cfg.get(g), f"model/{g}") for g in LAYERS},
        in_channels=model_cfg.in_channels,
        input_size=model_cfg.input_size,
        num_classes=num_classes,
    )
    net.check_forward()  # a block that does not fit its place, refused before any run opens
    initialized = factory(model_cfg.init, "model/init")(net)
    return net if initialized is None else initialized


def build_datamodule(cfg: DictConfig):
    """The data, served `chunk_size(cfg)` samples to a Lightning step."""
    return instantiate(cfg.data, seed=cfg.seed, chunk_size=chunk_size(cfg))


def build_module(cfg: DictConfig, datamodule=None):
    """The LightningModule; several updates per step where a step gets several batches.
    `datamodule` supplies the samples an optimizer with a curvature estimate (SDLM) uses."""
    chunk, batch = chunk_size(cfg), cfg.data.batch_size
    # The data's class count where the data is loaded (data.num_classes=null: all of them).
    num_classes = getattr(datamodule, "num_classes", None) or cfg.model.num_classes
    return LeNet5Module(
        model=build_model(cfg.model, num_classes),
        loss=factory(cfg.model.loss, "model/loss")(),
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.scheduler else None,
        num_classes=num_classes,
        update_size=batch if chunk > batch else None,
        curvature_sample=datamodule.train_sample if datamodule is not None else None,
    )


def build_callbacks(cfg: DictConfig, checkpoint_dir: Path) -> list:
    """Every callback under `callbacks` (null removes one); a `dirpath: null` is the run's
    checkpoint folder."""
    return [
        instantiate(
            node, **({"dirpath": str(checkpoint_dir)} if node.get("dirpath", 0) is None else {})
        )
        for node in cfg.callbacks.values()
        if node is not None
    ]


def trainer_kwargs(cfg: DictConfig, callbacks: list) -> dict:
    """`trainer`'s settings; without a checkpoint callback, no checkpointing at all (not
    Lightning's default one, which would write into the working directory)."""
    kwargs = dict(cfg.trainer)
    if not any(isinstance(c, ModelCheckpoint) for c in callbacks):
        kwargs.setdefault("enable_checkpointing", False)
    if cohort.current() is not None:
        # Lightning's rich progress bar is one live display per terminal: members' bars, drawn
        # in turns from their threads, break it (rich raised at a member's end). The run's
        # config and params still say what its solo run's say.
        kwargs["enable_progress_bar"] = False
    return kwargs


@contextmanager
def process_settings(cfg: DictConfig) -> Iterator[None]:
    """torch's CPU threads (`threads`) and Lightning's warnings as a run wants them, put back
    as they were on leaving."""
    threads = torch.get_num_threads()
    with warnings.catch_warnings():
        # Where Slurm is installed Lightning hints at every run to start it with `srun`, for
        # multi-process jobs; a run here is one process on one device (training.validate).
        warnings.filterwarnings("ignore", message="The `srun` command is available")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


def prepare(cfg: DictConfig):
    """(datamodule, module) of a validated config: seeded, the data loaded, the network built
    for the data's classes."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    datamodule.setup()
    check_classes(cfg, datamodule.num_classes)  # the data's count, where it is null
    return datamodule, build_module(cfg, datamodule)


def n_params(module) -> int:
    return n_trainable_params(module.model)


def build_trainer(cfg: DictConfig, checkpoint_dir: Path, logger) -> pl.Trainer:
    """Lightning's Trainer with the config's callbacks, checkpoints in `checkpoint_dir`."""
    callbacks = build_callbacks(cfg, checkpoint_dir)
    return pl.Trainer(**trainer_kwargs(cfg, callbacks), logger=logger, callbacks=callbacks)


def device_name(trainer: pl.Trainer) -> str:
    """Where the run trains: `cpu`, or the GPU's name (runs can share one GPU)."""
    device = trainer.strategy.root_device
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def fit_and_test(
    trainer,
    module,
    datamodule,
    resume_from: Path | None,
    verbose: bool,
    before_test: Callable[[], None] | None = None,
) -> dict:
    """Fit (from `resume_from`'s checkpoint where given), then test the best checkpoint where
    one is monitored and saved (none before a first validation); the test's metrics.
    `before_test` is called between the two."""
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
    if before_test is not None:
        before_test()
    best = trainer.checkpoint_callback
    use_best = best is not None and best.monitor is not None and best.best_model_path
    (result,) = trainer.test(
        module, datamodule=datamodule, ckpt_path="best" if use_best else None, verbose=verbose
    )
    return result

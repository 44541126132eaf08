"""Build the parts a config names, fit, test: one run of `lenet5-train`.

Everything here comes from the config (`_target_` + `instantiate`): the network's blocks,
the loss, the optimizer and schedule, the data, the Lightning callbacks (conf/callbacks/).
The run's MLflow record is `lenet5.tracking.tracked_run`'s; the command line is `lenet5.cli`.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from lenet5.config import ConfigError, check_classes, chunk_size, validate

log = logging.getLogger("lenet5")

# The network's blocks (lenet5.blocks.SLOTS), by their key in `model`.
LAYERS = ("activation", "pooling", "connectivity", "head", "norm", "dropout")


def build_model(model_cfg: DictConfig, num_classes: int | None = None):
    """The LeNet-5 network of a `model` config, initialized as it says. `num_classes`: the
    data's, where `data.num_classes` is null (all of the data's classes)."""
    from lenet5.blocks import factory
    from lenet5.network import LeNet5

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
    from lenet5.blocks import factory
    from lenet5.module import LeNet5Module

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
    from pytorch_lightning.callbacks import ModelCheckpoint

    kwargs = dict(cfg.trainer)
    if not any(isinstance(c, ModelCheckpoint) for c in callbacks):
        kwargs.setdefault("enable_checkpointing", False)
    return kwargs


def train(cfg: DictConfig, choices: dict, overrides: list[str]) -> float:
    """Train and test one configuration in its MLflow run; returns the test error."""
    from lenet5.sweep import current
    from lenet5.tracking import refusals_recorded, tracked_run

    with refusals_recorded(cfg, choices):  # refused up front: before any run is opened
        validate(cfg)  # before torch and Lightning load: a bad value answers in a second
        import pytorch_lightning as pl
        import torch

        from lenet5.network import n_trainable_params

        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        # Where Slurm is installed Lightning hints at every run to start it with `srun`, for
        # multi-process jobs; a run here is one process on one device (config.validate).
        warnings.filterwarnings("ignore", message="The `srun` command is available")
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        datamodule = build_datamodule(cfg)
        datamodule.setup()
        check_classes(cfg, datamodule.num_classes)  # the data's count, where it is null
        module = build_module(cfg, datamodule)
    with tracked_run(cfg, choices, overrides) as run:
        if run.resume_from is None:
            run.client.log_metric(run.run_id, "n_params", n_trainable_params(module.model))
        callbacks = build_callbacks(cfg, run.checkpoint_dir)
        trainer = pl.Trainer(
            **trainer_kwargs(cfg, callbacks), logger=run.logger(), callbacks=callbacks
        )
        run.record_device(trainer.strategy.root_device)
        trainer.fit(module, datamodule=datamodule, ckpt_path=run.resume_from)
        # The best checkpoint where one is monitored and saved (none before a first validation).
        best = trainer.checkpoint_callback
        use_best = best is not None and best.monitor is not None and best.best_model_path
        (result,) = trainer.test(
            module,
            datamodule=datamodule,
            ckpt_path="best" if use_best else None,
            verbose=current() is None,  # a table per job would bury a sweep's progress lines
        )
        from lenet5.results import record

        record(run, cfg, trainer, module, datamodule, result)  # final metrics, pictures, model
    log.info("test error %.4f (run %s)", result["test/error"], run.run_id)
    return result["test/error"]

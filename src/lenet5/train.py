"""`lenet5-train`: compose the config, train with Lightning, record the run in MLflow.

    lenet5-train model=paper model/pooling=max trainer.max_epochs=3
    lenet5-train -m model/activation=scaled_tanh,relu seed=0,1,2

Heavy imports (torch, Lightning, MLflow) happen inside `train`, so that a config error is
reported without paying for them.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from lenet5.config import CONF_DIR, ConfigError, automatic_only, validate

log = logging.getLogger("lenet5")


def build_model(model_cfg: DictConfig):
    """The LeNet-5 network of a `model` config, initialized as it says."""
    from hydra.utils import instantiate

    from lenet5.network import LeNet5

    net = LeNet5(
        activation=instantiate(model_cfg.activation),
        pooling=instantiate(model_cfg.pooling),
        connectivity=instantiate(model_cfg.connectivity),
        head=instantiate(model_cfg.head),
        in_channels=model_cfg.in_channels,
        input_size=model_cfg.input_size,
        num_classes=model_cfg.num_classes,
    )
    return instantiate(model_cfg.init)(net)


def build_module(cfg: DictConfig):
    from hydra.utils import instantiate

    from lenet5.module import LeNet5Module

    return LeNet5Module(
        model=build_model(cfg.model),
        loss=instantiate(cfg.model.loss),
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.scheduler else None,
        num_classes=cfg.model.num_classes,
    )


def train(cfg: DictConfig, choices: dict, overrides: list[str]) -> float:
    """Train and test one configuration; returns the test error (a fraction).

    With `resume=<run id>` (see `resume_config`) the run continues from its last
    checkpoint, in the same MLflow run.
    """
    from lenet5 import sweep
    from lenet5.data import DataError
    from lenet5.tracking import config_hash, local_path, record_failure, start_run

    in_sweep = sweep.current()
    tags = sweep.child_tags(in_sweep)
    if in_sweep and in_sweep.get("resumed"):
        done = sweep.finished_twin(in_sweep, config_hash(cfg))
        if done is not None:
            log.info("skipping: run %s already FINISHED this job", done.info.run_id)
            return done.data.metrics["test/error"]
    try:
        validate(cfg)
        import pytorch_lightning as pl
        import torch
        from hydra.utils import instantiate

        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        # Load the data before opening a run: absent or corrupt data is refused up front.
        chunk = {}
        if cfg.data.chunk_size is None and automatic_only(cfg.trainer):
            chunk = {"chunk_size": cfg.data.batch_size}  # one update per step, as they need
        datamodule = instantiate(cfg.data, seed=cfg.seed, **chunk)
        datamodule.setup()
    except (ConfigError, DataError) as e:
        if in_sweep:  # a sweep's record must show the job, and why it never trained
            record_failure(cfg, choices, tags, e)
        raise

    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import MLFlowLogger

    from lenet5.faults import StopOnNonFiniteLoss, interrupt_on_signals
    from lenet5.network import n_trainable_params

    module = build_module(cfg)
    interrupt_on_signals()
    if cfg.resume:
        from lenet5.tracking import resumable_run

        client, run, _, resume_from = resumable_run(cfg.mlflow.tracking_uri, cfg.resume)
        client.update_run(run.info.run_id, status="RUNNING")
    else:
        client, run = start_run(cfg, choices, tags)
        resume_from = None
    run_id = run.info.run_id
    log.info("MLflow run %s (%s) in %s", run.info.run_name, run_id, cfg.mlflow.tracking_uri)
    try:
        if resume_from is None:
            client.log_metric(run_id, "n_params", n_trainable_params(module.model))
            with tempfile.TemporaryDirectory() as tmp:
                Path(tmp, "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
                Path(tmp, "overrides.yaml").write_text(OmegaConf.to_yaml(list(overrides)))
                client.log_artifacts(run_id, tmp)
        # Checkpoints go straight into the run's artifact folder when it is local, so a
        # crash or Ctrl-C still leaves them referenced from the run.
        artifact_dir = local_path(run.info.artifact_uri)
        ckpt_dir = (artifact_dir or Path(HydraConfig.get().runtime.output_dir)) / "checkpoints"
        has_val = cfg.data.val_size > 0
        checkpoint = ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="best",
            monitor="val/acc" if has_val else None,
            mode="max",
            save_last=True,  # last.ckpt: the last completed epoch, what `resume` restarts from
            enable_version_counter=False,
        )
        logger = MLFlowLogger(
            tracking_uri=cfg.mlflow.tracking_uri,
            experiment_name=cfg.mlflow.experiment_name,
            run_id=run_id,
        )
        callbacks = [checkpoint, StopOnNonFiniteLoss()]
        trainer = pl.Trainer(**cfg.trainer, logger=logger, callbacks=callbacks)
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
        (result,) = trainer.test(
            module,
            datamodule=datamodule,
            # No best checkpoint if training stopped before its first validation.
            ckpt_path="best" if has_val and checkpoint.best_model_path else None,
            verbose=not in_sweep,  # a table per job would bury the sweep's progress lines
        )
        if artifact_dir is None:
            client.log_artifacts(run_id, str(ckpt_dir), "checkpoints")
        client.set_terminated(run_id, "FINISHED")
    except BaseException as e:
        # Lightning turns Ctrl-C into SystemExit(1), and SIGTERM into a SystemExit subclass,
        # after its own graceful shutdown.
        status = "KILLED" if isinstance(e, (KeyboardInterrupt, SystemExit)) else "FAILED"
        reason = (
            "interrupted (Ctrl-C or SIGTERM)" if status == "KILLED" else f"{type(e).__name__}: {e}"
        )
        client.set_tag(run_id, "failure_reason", reason[:5000])
        client.set_terminated(run_id, status)
        if status == "KILLED":
            log.warning("run %s KILLED; continue it with: lenet5-train resume=%s", run_id, run_id)
        raise
    log.info("test error %.4f (run %s)", result["test/error"], run_id)
    return result["test/error"]


def resume_config(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The stored config of the run named by `resume=`, so it continues exactly as it began.

    Only `resume` itself (and where the store is) comes from the command line; anything
    else given there is refused rather than silently mixed into a run already half done.
    """
    from lenet5.tracking import resumable_run

    extra = [o for o in overrides if not o.startswith(("resume=", "mlflow.", "threads="))]
    if extra:
        raise ConfigError(
            f"resume={cfg.resume} continues the run with its own stored config; drop the other "
            f"overrides {extra} (or start a new run with them)"
        )
    _, _, stored, _ = resumable_run(cfg.mlflow.tracking_uri, cfg.resume)
    stored.resume, stored.mlflow = cfg.resume, cfg.mlflow
    if cfg.threads:
        stored.threads = cfg.threads
    return stored


def compose(overrides: list[str] = ()) -> DictConfig:
    """The config `lenet5-train OVERRIDES...` would run, for notebooks and tests.

    Keeps the `hydra` node (runtime choices, overrides) and registers it, as `@hydra.main`
    does, so `train` sees the same state as from the shell.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose("config", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def run(overrides: list[str] = ()) -> float:
    """Train one configuration given as command-line overrides; returns the test error."""
    cfg = compose(overrides)
    hc = cfg.hydra
    choices, task = dict(hc.runtime.choices), list(hc.overrides.task)
    with open_dict(cfg):
        del cfg["hydra"]
    if cfg.resume:
        cfg = resume_config(cfg, task)
    return train(cfg, choices=choices, overrides=task)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float:
    from hydra.types import RunMode

    hc = HydraConfig.get()
    if cfg.resume:
        cfg = resume_config(cfg, list(hc.overrides.task))
    try:
        return train(cfg, choices=dict(hc.runtime.choices), overrides=list(hc.overrides.task))
    except Exception:
        if hc.mode != RunMode.MULTIRUN:
            raise
        # In a sweep one failed job must not stop the others: its run is already FAILED
        # with the reason, and the sweep's end reports it and exits non-zero.
        log.exception("job %s failed; the sweep goes on", hc.job.num)
        return float("nan")

"""The checks that refuse a config before any training starts.

Hydra already refuses an unknown option in a group (listing the valid ones) and an unknown
key (configs are in struct mode). `validate` adds what Hydra cannot know: types and ranges
of values, and combinations of choices that cannot work, each with the reason and a fix.
The checks a block imposes (the RBF head's 10 classes, the network's minimum input) are the
block's own `check`, called here.
"""

from numbers import Integral, Real

from omegaconf import DictConfig, OmegaConf

from lenet5.core.configs import locate, names_as_typed
from lenet5.core.errors import ConfigError
from lenet5.core.paths import CONF_DIR, check_no_login
from lenet5.training.chunks import accelerator_of, check_number, chunk_size

# Lightning strategies that split one run over several devices or processes.
DATA_PARALLEL = ("ddp", "fsdp", "deepspeed")


def check_hardware(trainer: DictConfig) -> None:
    """One run, one device: refuse a GPU that is not there, and data parallelism."""
    accelerator = accelerator_of(trainer)
    if accelerator in ("gpu", "cuda"):
        import torch  # only here: the cheap checks run before torch loads

        if not torch.cuda.is_available():
            build = (
                "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
            )
            raise ConfigError(
                f"trainer.accelerator={accelerator}, but torch {torch.__version__} ({build}) sees "
                "no CUDA GPU here: use trainer.accelerator=cpu (or auto, which takes a GPU "
                "where there is one)"
            )
    devices, strategy = trainer.get("devices", 1), str(trainer.get("strategy", "auto"))
    one_device = devices in (1, "1") or (OmegaConf.is_list(devices) and len(devices) == 1)
    if not one_device or strategy.lower().startswith(DATA_PARALLEL):
        setting = f"trainer.strategy={strategy}" if one_device else f"trainer.devices={devices}"
        raise ConfigError(
            f"{setting}: a run of LeNet-5 (60k parameters) gains nothing from data "
            "parallelism, whose gradient exchange costs more than the model's compute: keep "
            "trainer.devices=1 and scale by runs instead, several at once (they share a GPU): "
            "lenet5-train -m ... hydra/launcher=joblib hydra.launcher.n_jobs=N"
        )


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for a config that cannot train; return None otherwise. Names YAML
    read as numbers, booleans or null are put back as the text typed (`names_as_typed`)."""
    if not CONF_DIR.is_dir():
        raise ConfigError(f"config folder {CONF_DIR} not found: install the project with pip -e")
    names_as_typed(cfg)
    check_number(cfg, "seed", Integral, 0)
    check_number(cfg, "optimizer.lr", Real, 0, low_ok=False)
    check_number(cfg, "data.batch_size", Integral, 1)
    check_number(cfg, "data.eval_batch_size", Integral, 1)
    check_number(cfg, "data.val_size", Integral, 0)
    if cfg.data.get("num_classes") is not None:  # null: all of the data's classes
        check_number(cfg, "data.num_classes", Integral, 2)
    check_number(cfg, "data.channels", Integral, 1)
    check_number(cfg, "trainer.max_epochs", Integral, 1)
    check_hardware(cfg.trainer)
    check_no_login(str(cfg.mlflow.tracking_uri))
    chunk_size(cfg)
    # The checks below are the blocks' own, so they load torch (a second or two).
    from lenet5.model.network import LeNet5
    from lenet5.model.slots import check

    blocks = check(cfg)  # every slot's target importable and of the kind the slot takes
    head, loss, norm = blocks["model/head"], blocks["model/loss"], blocks["model/norm"]
    try:
        LeNet5.check(cfg.model.input_size)
        if hasattr(loss, "check"):
            loss.check(head=head)
        if hasattr(norm, "check"):
            norm.check(batch_size=cfg.data.batch_size)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    if cfg.model.num_classes is not None:  # else known once the data is loaded
        check_classes(cfg, cfg.model.num_classes)


def check_classes(cfg: DictConfig, num_classes: int) -> None:
    """Refuse a head that cannot serve the data's `num_classes` (the RBF head's 10 bitmaps),
    by the head's own `check`; called before training, with the data's count where
    `data.num_classes` is null."""

    head, loss = locate(cfg.model.head._target_), locate(cfg.model.loss._target_)
    try:
        if hasattr(head, "check"):
            head.check(num_classes=num_classes, loss=loss)
    except ValueError as e:
        found = "" if cfg.data.get("num_classes") else f"the data has {num_classes} classes: "
        raise ConfigError(found + str(e)) from e

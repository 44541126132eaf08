"""Where the project lives, and the checks that refuse a config before any training starts.

Hydra already refuses an unknown option in a group (listing the valid ones) and an unknown
key (configs are in struct mode). `validate` adds what Hydra cannot know: types and ranges
of values, and combinations of choices that cannot work, each with the reason and a fix.
The checks a block imposes (the RBF head's 10 classes, the network's minimum input) are the
block's own `check`, called here.

`chunk_size` is the one decision of how training data is served: several batches per
Lightning step (one update per batch, made by the module) or one batch per step.
"""

from numbers import Integral, Real
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = PROJECT_ROOT / "conf"
EXPERIMENTS_DIR = PROJECT_ROOT / "experiments"

# `${project_root:}` anchors data and MLflow paths to the repo, not to a Hydra job's cwd.
if not OmegaConf.has_resolver("project_root"):
    OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))
# `${if_validating:${data.val_size},val/acc}`: a metric to monitor only where there is one.
if not OmegaConf.has_resolver("if_validating"):
    OmegaConf.register_new_resolver("if_validating", lambda n, metric: metric if n else None)

# Samples per Lightning step when data.chunk_size is unset (see lenet5.data's docstring).
PER_SAMPLE_CHUNK = 128  # batch_size=1: 128 updates, ~0.3 s on a CPU core
BATCHED_CHUNK = 1024  # batch_size>1: the multiple of batch_size at or below 1024 (>= 1 batch)
# On a GPU an update of LeNet-5 takes ~2 ms at batch 256 while a Lightning step costs ~3 ms
# (it waits for the GPU): 1024 samples a step gave 0.69x a bare loop's speed on an H200
# (benchmarks/results/throughput_gpu.md), so a step there serves 16x as many.
GPU_BATCHED_CHUNK = 16384


class UserError(Exception):
    """A problem the user fixes (a setting, the data, the store): `lenet5-train` prints its
    message, which says what, where and how to fix it, as one line and exits 2."""


class ConfigError(UserError, ValueError):
    """A config that cannot work; the message names the setting and the fix."""


def _number(cfg: DictConfig, key: str, kind: type, low: float, *, low_ok: bool = True) -> None:
    value = OmegaConf.select(cfg, key)
    ok_type = isinstance(value, kind) and not isinstance(value, bool)
    if not ok_type or value < low or (value == low and not low_ok):
        bound = f">= {low}" if low_ok else f"> {low}"
        what = "an integer" if kind is Integral else "a number"
        raise ConfigError(f"{key}={value!r} is invalid: it must be {what} {bound} (set {key}=...)")


def automatic_only(trainer: DictConfig) -> list[str]:
    """Trainer settings that Lightning applies only with one update per training step
    (automatic optimization), so they rule out serving several batches per step."""
    clip, accumulate = trainer.get("gradient_clip_val"), trainer.get("accumulate_grad_batches")
    return [
        f"trainer.{key}={value}"
        for key, value, off in (
            ("gradient_clip_val", clip, 0),
            ("accumulate_grad_batches", accumulate, 1),
        )
        if value not in (None, off)
    ]


def _accelerator(trainer: DictConfig) -> str:
    return str(trainer.get("accelerator", "auto")).lower()


def on_gpu(trainer: DictConfig) -> bool:
    """Whether Lightning will train on a CUDA GPU (`auto` takes one where there is one)."""
    accelerator = _accelerator(trainer)
    if accelerator == "auto":
        import torch

        return torch.cuda.is_available()
    return accelerator in ("gpu", "cuda")


def chunk_size(cfg: DictConfig) -> int:
    """Samples per Lightning step: `data.chunk_size`, or by default 128 per-sample updates or
    ~1024 samples of batches (~16k on a GPU), or one batch where a trainer setting needs one
    update per step."""
    batch, chunk = cfg.data.batch_size, cfg.data.get("chunk_size")
    settings = automatic_only(cfg.trainer)
    if chunk is None:
        most = GPU_BATCHED_CHUNK if on_gpu(cfg.trainer) else BATCHED_CHUNK
        if settings or batch > most:
            return batch
        return PER_SAMPLE_CHUNK if batch == 1 else batch * (most // batch)
    _number(cfg, "data.chunk_size", Integral, batch)
    if chunk % batch:
        raise ConfigError(
            f"data.chunk_size={chunk} must be a multiple of data.batch_size={batch}: set "
            f"data.chunk_size={batch * max(1, chunk // batch)} (or leave it unset)"
        )
    if settings and chunk > batch:
        raise ConfigError(
            f"{', '.join(settings)} needs one update per Lightning step, but "
            f"data.chunk_size={chunk} serves several: set data.chunk_size={batch} "
            "(or leave it unset)"
        )
    return chunk


# Lightning strategies that split one run over several devices or processes.
DATA_PARALLEL = ("ddp", "fsdp", "deepspeed")


def check_hardware(trainer: DictConfig) -> None:
    """One run, one device: refuse a GPU that is not there, and data parallelism."""
    accelerator = _accelerator(trainer)
    if accelerator in ("gpu", "cuda"):
        import torch

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


# Settings that are names, as MLflow shows them: the experiment, the study, and the tag names
# and levels a study compares (tag values themselves are option names, which Hydra keeps as
# text). null is study.name's default: not a study.
NAME_KEYS = ("mlflow.experiment_name", "study.name", "study.factors", "study.baseline")
NULL_MEANS_UNSET = ("study.name",)


def _typed(overrides: list[str]) -> dict[str, str]:
    """key -> the text typed after `=`, for each command-line override."""
    typed = {}
    for override in overrides:
        key, sep, text = override.partition("=")
        if sep and not key.startswith("~"):
            typed[key.lstrip("+")] = text
    return typed


def names_as_typed(cfg: DictConfig, overrides: list[str] | None = None) -> DictConfig:
    """Put back, as the text the user typed, a name that YAML read as something else.

    `mlflow.experiment_name=2026` reaches the config as the int 2026 (`nan` a float, `true` a
    bool, `null` None), and MLflow then fails on it far from the cause. A name given on the
    command line (`overrides`; by default the composition's own, `hydra.overrides.task`)
    becomes its text exactly as typed; a name set in a file, whose text is gone by then, is
    refused, naming the key and how to quote it. Returns `cfg`, changed in place.
    """
    from omegaconf import open_dict, read_write

    if overrides is None:
        hc = hydra_node(cfg)
        overrides = list(hc.overrides.task) if hc is not None else []
    typed = _typed(overrides)

    def text_of(key: str, value: object) -> str | None:
        if isinstance(value, str) or (value is None and key in NULL_MEANS_UNSET):
            return None  # already text, or null where null means unset
        text = typed.get(key)
        if text is not None:
            return str(value) if text.startswith("${") else text  # an interpolation: its value
        kind = "null" if value is None else type(value).__name__
        raise ConfigError(
            f"{key}: YAML reads the name {value!r} as {kind}, not as text: quote it in the "
            f"file that sets it ('{value}'), or set it on the command line"
        )

    with read_write(cfg), open_dict(cfg):
        for key in NAME_KEYS:
            node = OmegaConf.select(cfg, key)
            if OmegaConf.is_dict(node) or OmegaConf.is_list(node):  # names inside: tag levels
                is_dict = OmegaConf.is_dict(node)
                for k, value in list(node.items() if is_dict else enumerate(node)):
                    if is_dict and not isinstance(k, str):
                        raise ConfigError(f"{key}: the tag name {k!r} is not text: quote it")
                    text = text_of(f"{key}.{k}" if is_dict else f"{key}[{k}]", value)
                    if text is not None:
                        node[k] = text
            elif (text := text_of(key, node)) is not None:
                OmegaConf.update(cfg, key, text)
    if not cfg.mlflow.experiment_name.strip():
        raise ConfigError("mlflow.experiment_name is empty: name the experiment, e.g. lenet5")
    return cfg


def hydra_node(cfg: DictConfig | None) -> DictConfig | None:
    """The `hydra` node of the composition that made `cfg` (itself, or the registered one)."""
    if cfg is not None and "hydra" in cfg:
        return cfg.hydra
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for a config that cannot train; return None otherwise. Names YAML
    read as numbers, booleans or null are put back as the text typed (`names_as_typed`)."""
    if not CONF_DIR.is_dir():
        raise ConfigError(f"config folder {CONF_DIR} not found: install the project with pip -e")
    names_as_typed(cfg)
    _number(cfg, "seed", Integral, 0)
    _number(cfg, "optimizer.lr", Real, 0, low_ok=False)
    _number(cfg, "data.batch_size", Integral, 1)
    _number(cfg, "data.eval_batch_size", Integral, 1)
    _number(cfg, "data.val_size", Integral, 0)
    if cfg.data.get("num_classes") is not None:  # null: all of the data's classes
        _number(cfg, "data.num_classes", Integral, 2)
    _number(cfg, "data.channels", Integral, 1)
    _number(cfg, "trainer.max_epochs", Integral, 1)
    check_hardware(cfg.trainer)
    chunk_size(cfg)
    # The checks below are the blocks' own, so they load torch (a second or two).
    from lenet5.blocks import check
    from lenet5.network import LeNet5

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
    from lenet5.blocks import locate

    head, loss = locate(cfg.model.head._target_), locate(cfg.model.loss._target_)
    try:
        if hasattr(head, "check"):
            head.check(num_classes=num_classes, loss=loss)
    except ValueError as e:
        found = "" if cfg.data.get("num_classes") else f"the data has {num_classes} classes: "
        raise ConfigError(found + str(e)) from e

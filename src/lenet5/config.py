"""Where the project lives, and the checks that refuse a config before any training starts.

Hydra already refuses an unknown option in a group (listing the valid ones) and an unknown
key (configs are in struct mode). `validate` adds what Hydra cannot know: types and ranges
of values, and combinations of choices that cannot work, each with the reason and a fix.
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


class ConfigError(ValueError):
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


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for a config that cannot train; return None otherwise."""
    if not CONF_DIR.is_dir():
        raise ConfigError(f"config folder {CONF_DIR} not found: install the project with pip -e")
    _number(cfg, "seed", Integral, 0)
    _number(cfg, "optimizer.lr", Real, 0, low_ok=False)
    _number(cfg, "data.batch_size", Integral, 1)
    _number(cfg, "data.eval_batch_size", Integral, 1)
    if cfg.data.get("chunk_size") is not None:
        _number(cfg, "data.chunk_size", Integral, cfg.data.batch_size)
        settings = automatic_only(cfg.trainer)
        if settings and cfg.data.chunk_size > cfg.data.batch_size:
            raise ConfigError(
                f"{', '.join(settings)} needs one update per Lightning step, but "
                f"data.chunk_size={cfg.data.chunk_size} serves several: set "
                f"data.chunk_size={cfg.data.batch_size} (or leave it unset)"
            )
    _number(cfg, "data.val_size", Integral, 0)
    _number(cfg, "data.num_classes", Integral, 2)
    _number(cfg, "data.channels", Integral, 1)
    _number(cfg, "trainer.max_epochs", Integral, 1)
    from lenet5.network import MIN_INPUT_SIZE

    size = cfg.model.input_size
    if not isinstance(size, int) or size < MIN_INPUT_SIZE:
        raise ConfigError(
            f"model.input_size={size!r}: LeNet-5's C5 needs 5x5 maps from S4, so inputs must be "
            f"at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} (set data.size=32 for MNIST)"
        )
    head, loss = cfg.model.head._target_, cfg.model.loss._target_
    rbf_head = head.endswith("RBFHead")
    if rbf_head and cfg.model.num_classes > 10:
        raise ConfigError(
            f"model/head=rbf has fixed bitmaps for the 10 digits only, so it cannot serve "
            f"{cfg.model.num_classes} classes: use model/head=softmax"
        )
    if not rbf_head and loss.startswith("lenet5.loss."):
        raise ConfigError(
            f"model.loss={loss} is defined on RBF penalties, but model/head is {head}: use "
            "model/head=rbf, or model/loss=cross_entropy"
        )
    if rbf_head and loss == "torch.nn.CrossEntropyLoss":
        raise ConfigError(
            "model/loss=cross_entropy goes with the softmax head; the RBF head's outputs are "
            "penalties: use model/loss=mle or model/loss=map (the paper's eq. 8 and 9)"
        )

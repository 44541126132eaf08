"""How training data is served: samples per Lightning step.

`chunk_size` is the one decision of it: several batches per Lightning step (one update per
batch, made by the module) or one batch per step (see `lenet5.data.datamodule`).
"""

from numbers import Integral

from omegaconf import DictConfig, OmegaConf

from lenet5.core.errors import ConfigError

# Samples per Lightning step when data.chunk_size is unset.
PER_SAMPLE_CHUNK = 128  # batch_size=1: 128 updates, ~0.3 s on a CPU core
BATCHED_CHUNK = 1024  # batch_size>1: the multiple of batch_size at or below 1024 (>= 1 batch)
# On a GPU an update of LeNet-5 takes ~2 ms at batch 256 while a Lightning step costs ~3 ms
# (it waits for the GPU): 1024 samples a step gave 0.69x a bare loop's speed on an H200
# (benchmarks/results/throughput_gpu.md), so a step there serves 16x as many.
GPU_BATCHED_CHUNK = 16384


def check_number(cfg: DictConfig, key: str, kind: type, low: float, *, low_ok: bool = True) -> None:
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


def accelerator_of(trainer: DictConfig) -> str:
    return str(trainer.get("accelerator", "auto")).lower()


def on_gpu(trainer: DictConfig) -> bool:
    """Whether Lightning will train on a CUDA GPU (`auto` takes one where there is one)."""
    accelerator = accelerator_of(trainer)
    if accelerator == "auto":
        import torch  # only here: the cheap checks run before torch loads

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
    check_number(cfg, "data.chunk_size", Integral, batch)
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

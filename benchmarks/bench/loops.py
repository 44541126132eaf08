"""The three training paths compared, each making N updates of the same LeNet-5
(`model=modern`, plain SGD at `lr`, seed 0) on full MNIST, and what each times:

(a) `run_project`: `lenet5.cli.run(overrides)`, exactly `lenet5-train`, with a StepTimer
    added through the config; from `on_train_start` to the last `on_train_batch_end`.
(b) `run_bare`: a plain loop over the datamodule's own preloaded uint8 tensors, and
(c) `run_tutorial`: torchvision's MNIST + Pad/ToTensor/Normalize + DataLoader;
    both from before the first batch is fetched to after the last update.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path

from bench.common import read_timer, timer_overrides


def overrides(
    batch_size: int, updates: int, threads: int, lr: float, data_dir: Path, store: Path
) -> list[str]:
    """The `lenet5-train` command line of (a); (b) and (c) use the same model and optimizer."""
    return [
        "model=modern",
        "optimizer=sgd",
        f"optimizer.lr={lr}",
        "data=mnist",
        f"data.root={data_dir}",
        "data.val_size=0",
        f"data.batch_size={batch_size}",
        f"+trainer.max_steps={updates}",
        f"threads={threads}",
        "seed=0",
        f"mlflow.tracking_uri=sqlite:///{store}/mlflow.db",
        f"mlflow.artifact_root={store}/artifacts",
        "mlflow.experiment_name=throughput",
        *timer_overrides(store / "timer.json"),
    ]


@contextlib.contextmanager
def quiet():
    """Progress bar and test table to /dev/null (the bar is on: it renders, unseen)."""
    with (
        open(os.devnull, "w") as null,
        contextlib.redirect_stdout(null),
        contextlib.redirect_stderr(null),
    ):
        yield


def rates(images: int, updates: int, seconds: float, cpu: float) -> dict:
    return {
        "images": images,
        "updates": updates,
        "seconds": seconds,
        "images_per_s": images / seconds,
        "cpu_seconds": cpu,
        "images_per_cpu_s": images / cpu,
    }


def run_project(args, batch_size: int, updates: int, store: Path, chunk: int | None = None):
    """(a); `chunk` sets data.chunk_size (= batch_size: one update per Lightning step)."""
    from lenet5.cli import run

    cmd = overrides(batch_size, updates, args.threads, args.lr, args.data_dir, store)
    if chunk:
        cmd.append(f"data.chunk_size={chunk}")
    out = store / "timer.json"
    out.unlink(missing_ok=True)  # a stale file must not pass for this run's timings
    t0 = time.perf_counter()
    with quiet():
        test_error = run(cmd)
    wall = time.perf_counter() - t0
    t = read_timer(out)
    if t["updates"] != updates:
        raise RuntimeError(f"(a) made {t['updates']} updates, expected {updates}")
    start, end = t["train_start"], t["last_batch_end"]
    fit = t["fit_end"]["perf"] - t["fit_start"]["perf"]
    images = updates * batch_size  # N updates of full batches (N is within the first pass)
    return {
        **rates(images, updates, end["perf"] - start["perf"], end["cpu"] - start["cpu"]),
        "chunk_size": chunk,
        "fit_seconds": fit,
        "fit_images_per_s": images / fit,
        "run_seconds": wall,
        "test_error": test_error,
    }


def fresh_model(cfg, seed: int = 0):
    import torch
    from hydra.utils import instantiate

    from lenet5.train import build_model

    torch.manual_seed(seed)
    model = build_model(cfg.model)
    model.train()
    return model, instantiate(cfg.model.loss), instantiate(cfg.optimizer)(model.parameters())


def finished(name: str, loss, images: int, updates: int, t0: float, c0: float) -> dict:
    """The rates of (b) or (c), timed from (t0, c0) to now; raises if the loss diverged."""
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    if not math.isfinite(loss.item()):
        raise RuntimeError(f"{name} diverged: lower --lr")
    return rates(images, updates, seconds, cpu)


def run_bare(cfg, datamodule, batch_size: int, updates: int) -> dict:
    import torch

    model, loss_fn, optimizer = fresh_model(cfg)
    images, labels = datamodule.splits["train"]
    scale, shift = datamodule.normalize
    n = len(labels)
    g = torch.Generator().manual_seed(0)
    t0, c0 = time.perf_counter(), time.process_time()
    order, pos = torch.randperm(n, generator=g), 0
    for _ in range(updates):
        if pos + batch_size > n:
            order, pos = torch.randperm(n, generator=g), 0
        idx = order[pos : pos + batch_size]
        pos += batch_size
        x = images[idx].float().mul_(scale).add_(shift)
        loss = loss_fn(model(x), labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return finished("(b)", loss, updates * batch_size, updates, t0, c0)


def tutorial_dataset(data_dir: Path):
    from torchvision import transforms
    from torchvision.datasets import MNIST

    transform = transforms.Compose(
        [transforms.Pad(2), transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]
    )
    return MNIST(str(data_dir), train=True, download=False, transform=transform)


def run_tutorial(cfg, dataset, batch_size: int, updates: int) -> dict:
    import torch
    from torch.utils.data import DataLoader

    model, loss_fn, optimizer = fresh_model(cfg)
    torch.manual_seed(0)
    t0, c0 = time.perf_counter(), time.process_time()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0)
    done = images_seen = 0
    while done < updates:
        for x, y in loader:
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += 1
            images_seen += len(y)
            if done == updates:
                break
    return finished("(c)", loss, images_seen, updates, t0, c0)

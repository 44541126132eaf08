"""The three training paths compared, each making N updates of the same LeNet-5
(`model=modern`, plain SGD at `lr`, seed 0) on full MNIST, and what each times:

(a) `run_project`: `lenet5.cli.train.run(overrides)`, exactly `lenet5-train`, with a StepTimer
    added through the config; from `on_train_start` to the last `on_train_batch_end`.
(b) `run_bare`: a plain loop over the datamodule's own preloaded uint8 tensors, and
(c) `run_tutorial`: torchvision's MNIST + Pad/ToTensor/Normalize + DataLoader;
    both from before the first batch is fetched to after the last update.

`args.device` ("cpu" or "cuda") puts all three on one device: (a) with
`trainer.accelerator=gpu` (its datamodule keeps the uint8 tensors on the GPU), (b) with the
uint8 tensors moved to the device once, before timing, and batches gathered by a device
index tensor and normalized there, (c) with each DataLoader batch moved by `.to(device)`,
the tutorial way. On a GPU each clock is read after `torch.cuda.synchronize()`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from pathlib import Path

from bench.common import accelerator_overrides, read_timer, synchronize, timer_overrides


def store_and_timer(store: Path, experiment: str) -> list[str]:
    """An in-process run's MLflow store (scratch) and its StepTimer, writing store/timer.json."""
    return [
        f"mlflow.tracking_uri=sqlite:///{store}/mlflow.db",
        f"mlflow.artifact_root={store}/artifacts",
        f"mlflow.experiment_name={experiment}",
        *timer_overrides(store / "timer.json"),
    ]


def overrides(
    batch_size: int,
    updates: int,
    threads: int,
    lr: float,
    data_dir: Path,
    store: Path,
    device: str = "cpu",
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
        *store_and_timer(store, "throughput"),
        *accelerator_overrides(device),
    ]


def quiet_process(threads: int) -> None:
    """This process's torch threads, and Lightning's and the project's INFO lines off."""
    import pytorch_lightning  # noqa: F401  (its import sets its loggers to INFO: first)
    import torch

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lenet5"):
        logging.getLogger(name).setLevel(logging.WARNING)
    torch.set_num_threads(threads)


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


def run_timed(name: str, cmd: list[str], store: Path, updates: int) -> tuple[dict, float, float]:
    """`lenet5.cli.train.run(cmd)` (cmd from `store_and_timer(store, ...)`), quiet: (the StepTimer's
    stamps, the test error, the whole run's wall seconds); raises unless it made `updates`."""
    from lenet5.cli.train import run

    out = store / "timer.json"
    out.unlink(missing_ok=True)  # a stale file must not pass for this run's timings
    t0 = time.perf_counter()
    with quiet():
        test_error = run(cmd)
    wall = time.perf_counter() - t0
    t = read_timer(out)
    if t["updates"] != updates:
        raise RuntimeError(f"{name} made {t['updates']} updates, expected {updates}")
    return t, test_error, wall


def run_project(args, batch_size: int, updates: int, store: Path, chunk: int | None = None):
    """(a); `chunk` sets data.chunk_size (= batch_size: one update per Lightning step)."""
    cmd = overrides(batch_size, updates, args.threads, args.lr, args.data_dir, store, args.device)
    if chunk:
        cmd.append(f"data.chunk_size={chunk}")
    t, test_error, wall = run_timed("(a)", cmd, store, updates)
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


def fresh_model(cfg, device, seed: int = 0):
    """The model (initialized from `seed`), loss and optimizer of (b) and (c), on `device`."""
    import torch
    from hydra.utils import instantiate

    from lenet5.training.build import build_model

    torch.manual_seed(seed)
    model = build_model(cfg.model).to(device)  # moved before the optimizer takes its params
    model.train()
    loss_fn = instantiate(cfg.model.loss).to(device)
    return model, loss_fn, instantiate(cfg.optimizer)(model.parameters())


def finished(name: str, loss, images: int, updates: int, t0: float, c0: float) -> dict:
    """The rates of (b) or (c), timed from (t0, c0) to the end of the last update (on a GPU:
    once the device has run it); raises if the loss diverged."""
    synchronize(loss.device)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    if not math.isfinite(loss.item()):
        raise RuntimeError(f"{name} diverged: lower --lr")
    return rates(images, updates, seconds, cpu)


def bare_split(datamodule, device):
    """(b)'s data: the datamodule's own uint8 training images and labels, on `device` (moved
    once, before any timing: on the CPU, the tensors themselves)."""
    images, labels = datamodule.splits["train"]
    return images.to(device), labels.to(device)


def run_bare(cfg, split, normalize, batch_size: int, updates: int) -> dict:
    """(b) on the device of `split` (`bare_split`); `normalize` = the datamodule's (scale, shift)."""
    import torch

    images, labels = split
    model, loss_fn, optimizer = fresh_model(cfg, images.device)
    scale, shift = normalize
    n = len(labels)
    g = torch.Generator().manual_seed(0)
    t0, c0 = time.perf_counter(), time.process_time()
    # The permutation is drawn on the CPU (the same order on every device), then indexes on
    # the device of the images: the gather and the normalization run there.
    order, pos = torch.randperm(n, generator=g).to(images.device), 0
    for _ in range(updates):
        if pos + batch_size > n:
            order, pos = torch.randperm(n, generator=g).to(images.device), 0
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


def run_tutorial(cfg, dataset, batch_size: int, updates: int, device="cpu") -> dict:
    """(c); each batch moved to `device` by `.to(device)`, as the tutorial does."""
    import torch
    from torch.utils.data import DataLoader

    model, loss_fn, optimizer = fresh_model(cfg, device)
    torch.manual_seed(0)
    t0, c0 = time.perf_counter(), time.process_time()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0)
    done = images_seen = 0
    while done < updates:
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += 1
            images_seen += len(y)
            if done == updates:
                break
    return finished("(c)", loss, images_seen, updates, t0, c0)

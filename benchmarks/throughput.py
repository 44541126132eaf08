"""Training throughput of `lenet5-train` against a bare PyTorch loop and the tutorial path.

    .venv/bin/python benchmarks/throughput.py [--updates 1280,150,50] [--repeats 3]
        [--batch-sizes 1,64,256] [--threads 1] [--parts throughput,startup,memory]

Not part of the test suite. In one process, the same LeNet-5 (`model=modern`, plain SGD,
`optimizer.lr` below, seed 0) trains on full MNIST for a fixed number of updates with

  (a) project:  `lenet5.train.run([...])`, exactly what `lenet5-train` runs: Lightning,
                MLflow logging on (a temporary SQLite store), the progress bar on (its
                stream is sent to /dev/null), checkpointing as usual, `data.val_size=0`,
                `+trainer.max_steps=N`. Timed: from Lightning's `on_train_start` (before the
                first batch is fetched) to the `on_train_batch_end` of the last batch, by a
                callback the benchmark appends to the Trainer's callbacks. Also recorded: the
                whole `trainer.fit` (on_fit_start -> on_fit_end: adds the epoch-end checkpoint
                save and teardown) and the whole `run()` (adds config, data load, MLflow run,
                the 10k test).
  (b) bare:     a plain loop over the datamodule's own preloaded, padded uint8 tensors:
                index, float, normalize, forward, loss, backward, step. The limit.
  (c) tutorial: `torchvision.datasets.MNIST(root, transform=Compose([Pad(2), ToTensor(),
                Normalize(...)]))` + `DataLoader(shuffle=True, num_workers=0)`.

(b) and (c) are timed from before the first batch is fetched to after the last update.
The methods run interleaved (a, b, c at each batch size, then the next repeat), so a
change in the machine's load hits all three alike; the table gives images/s per repeat,
the medians, and the paired ratios a/b and a/c (median over repeats).

The project serves chunks of samples per Lightning step (`lenet5.data.default_chunk_size`:
128 at batch 1, ~1024 otherwise) and makes one update per batch inside each (manual
optimization); `trainer.global_step` and `max_steps=N` count updates, so all paths make the
same N updates. `--per-step` also times (a') the project with `data.chunk_size=<batch>`:
one update per Lightning step, Lightning's usual automatic optimization.

`--parts startup` times `lenet5-train`'s start-up in subprocesses; `--parts memory`
measures resident memory (RSS) of the datamodule and of a full-MNIST `lenet5-train`.
Results: benchmarks/results/throughput.json and throughput.md.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
VENV_BIN = Path(sys.executable).parent
DEFAULT_DATA = Path(os.environ.get("LENET5_DATA_DIR", ROOT.parent / "shared" / "datasets"))
DATASET_BYTES = (60_000 + 10_000) * 32 * 32  # the padded uint8 images: 71.7 MB
METHODS = ("project", "project_per_step", "bare", "tutorial")  # project_per_step: --per-step
TARGETS = {  # batch size -> (min a/b, min a/c)
    1: (0.90, None),
    64: (0.95, 2.0),
    256: (0.95, 2.8),
}


# ---------------------------------------------------------------- machine and versions


TEMP_DIRS: list[Path] = []  # MLflow stores and checkpoints, removed when the script ends


def scratch(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    TEMP_DIRS.append(path)
    return path


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_gb, 1),
        "platform": platform.platform(),
        "gpu": "no GPU used (none was lent to the task that ran this)",
    }


def versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in ("torch", "torchvision", "pytorch-lightning", "mlflow", "hydra-core"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------- the three training paths


def overrides(
    batch_size: int, updates: int, threads: int, lr: float, data_dir: Path, store: Path
) -> list[str]:
    """The `lenet5-train` command line of (a); (b) and (c) use the same model and optimizer."""
    return [
        "model=modern",
        "optimizer=sgd",
        f"optimizer.lr={lr}",
        "data=mnist",
        f"data.source.root={data_dir}",
        "data.val_size=0",
        f"data.batch_size={batch_size}",
        f"+trainer.max_steps={updates}",
        f"threads={threads}",
        "seed=0",
        f"mlflow.tracking_uri=sqlite:///{store}/mlflow.db",
        f"mlflow.artifact_root={store}/artifacts",
        "mlflow.experiment_name=throughput",
    ]


def make_timer():
    import pytorch_lightning as pl

    class FitTimer(pl.Callback):
        """Timestamps of the training loop, appended to the project's own callbacks."""

        def __init__(self):
            self.t = {}

        def on_fit_start(self, trainer, pl_module):
            self.t["fit_start"] = time.perf_counter()

        def on_train_start(self, trainer, pl_module):
            self.t["train_start"] = time.perf_counter()
            self.t["train_start_cpu"] = time.process_time()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.t["last_batch_end"] = time.perf_counter()
            self.t["last_batch_end_cpu"] = time.process_time()

        def on_fit_end(self, trainer, pl_module):
            self.t["fit_end"] = time.perf_counter()
            self.updates = trainer.global_step

    return FitTimer()


@contextlib.contextmanager
def extra_callback(callback):
    """Make `pl.Trainer(...)` inside `lenet5.train` also run `callback`; nothing else changes."""
    import pytorch_lightning as pl

    original = pl.Trainer

    class Trainer(original):
        def __init__(self, *args, callbacks=None, **kwargs):
            super().__init__(*args, callbacks=[*(callbacks or []), callback], **kwargs)

    pl.Trainer = Trainer
    try:
        yield
    finally:
        pl.Trainer = original


@contextlib.contextmanager
def quiet():
    """Progress bar and test table to /dev/null (the bar is on: it renders, unseen)."""
    with (
        open(os.devnull, "w") as null,
        contextlib.redirect_stdout(null),
        contextlib.redirect_stderr(null),
    ):
        yield


def methods_for(args) -> list[str]:
    return [m for m in METHODS if args.per_step or m != "project_per_step"]


def run_project(args, batch_size: int, updates: int, store: Path, chunk: int | None = None):
    from lenet5.train import run

    timer = make_timer()
    cmd = overrides(batch_size, updates, args.threads, args.lr, args.data_dir, store)
    if chunk:
        cmd.append(f"+data.chunk_size={chunk}")
    t0 = time.perf_counter()
    with extra_callback(timer), quiet():
        test_error = run(cmd)
    wall = time.perf_counter() - t0
    t = timer.t
    loop = t["last_batch_end"] - t["train_start"]
    cpu = t["last_batch_end_cpu"] - t["train_start_cpu"]
    if timer.updates != updates:
        raise RuntimeError(f"(a) made {timer.updates} updates, expected {updates}")
    images = updates * batch_size  # N updates of full batches (N is within the first pass)
    return {
        "images": images,
        "updates": timer.updates,
        "chunk_size": chunk,
        "seconds": loop,
        "images_per_s": images / loop,
        "cpu_seconds": cpu,
        "images_per_cpu_s": images / cpu,
        "fit_seconds": t["fit_end"] - t["fit_start"],
        "fit_images_per_s": images / (t["fit_end"] - t["fit_start"]),
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
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    if not math.isfinite(loss.item()):
        raise RuntimeError("(b) diverged: lower --lr")
    images_seen = updates * batch_size
    return {"images": images_seen, "updates": updates, "seconds": seconds,
            "images_per_s": images_seen / seconds, "cpu_seconds": cpu,
            "images_per_cpu_s": images_seen / cpu}  # fmt: skip


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
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    if not math.isfinite(loss.item()):
        raise RuntimeError("(c) diverged: lower --lr")
    return {"images": images_seen, "updates": updates, "seconds": seconds,
            "images_per_s": images_seen / seconds, "cpu_seconds": cpu,
            "images_per_cpu_s": images_seen / cpu}  # fmt: skip


def throughput(args) -> dict:
    import torch
    from hydra.utils import instantiate

    from lenet5.data import default_chunk_size
    from lenet5.train import compose

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lenet5"):
        logging.getLogger(name).setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    updates = dict(zip(args.batch_sizes, args.updates, strict=True))
    for bs, n in updates.items():
        if n * bs > 60_000:
            sys.exit(f"{n} updates at batch {bs} run past one pass over MNIST: ask for fewer")

    store = scratch("lenet5-throughput-")
    cfg = compose(overrides(64, 1, args.threads, args.lr, args.data_dir, store))
    datamodule = instantiate(cfg.data, seed=cfg.seed)
    datamodule.setup()
    dataset = tutorial_dataset(args.data_dir)

    # Warm-up, untimed: creates the MLflow store, imports what fit imports lazily, and
    # runs each kernel once.
    print("warm-up ...", flush=True)
    run_project(args, 64, 5, store)
    for bs in args.batch_sizes:
        run_bare(cfg, datamodule, bs, 5)
        run_tutorial(cfg, dataset, bs, 5)

    runs = {bs: {m: [] for m in methods_for(args)} for bs in args.batch_sizes}
    for rep in range(args.repeats):
        for bs in args.batch_sizes:
            for method in methods_for(args):
                gc.collect()
                load_before = load()
                if method == "project":
                    r = run_project(args, bs, updates[bs], store)
                elif method == "project_per_step":
                    r = run_project(args, bs, updates[bs], store, chunk=bs)
                elif method == "bare":
                    r = run_bare(cfg, datamodule, bs, updates[bs])
                else:
                    r = run_tutorial(cfg, dataset, bs, updates[bs])
                r["repeat"], r["load_before"] = rep, load_before
                runs[bs][method].append(r)
                print(
                    f"repeat {rep + 1}/{args.repeats} batch {bs:>3} {method:<13} "
                    f"{r['images_per_s']:8.1f} images/s, {r['images_per_cpu_s']:8.1f} per CPU-s "
                    f"({r['updates']} updates, {r['seconds']:.2f} s; load {load_before[0]})",
                    flush=True,
                )
    summary = {}
    for bs in args.batch_sizes:
        ips = {m: [r["images_per_s"] for r in runs[bs][m]] for m in runs[bs]}
        med = {m: statistics.median(v) for m, v in ips.items()}
        cps = {m: [r["images_per_cpu_s"] for r in runs[bs][m]] for m in runs[bs]}
        a_b = [a / b for a, b in zip(ips["project"], ips["bare"], strict=True)]
        a_c = [a / c for a, c in zip(ips["project"], ips["tutorial"], strict=True)]
        cpu_a_b = [a / b for a, b in zip(cps["project"], cps["bare"], strict=True)]
        cpu_a_c = [a / c for a, c in zip(cps["project"], cps["tutorial"], strict=True)]
        summary[bs] = {
            "updates": updates[bs],
            "median_images_per_s": med,
            "median_fit_images_per_s": statistics.median(
                r["fit_images_per_s"] for r in runs[bs]["project"]
            ),
            "a_over_b_per_repeat": a_b,
            "a_over_c_per_repeat": a_c,
            "a_over_b": statistics.median(a_b),
            "a_over_c": statistics.median(a_c),
            "a_over_b_of_medians": med["project"] / med["bare"],
            "a_over_c_of_medians": med["project"] / med["tutorial"],
            "median_images_per_cpu_s": {m: statistics.median(v) for m, v in cps.items()},
            "cpu_a_over_b_per_repeat": cpu_a_b,
            "cpu_a_over_c_per_repeat": cpu_a_c,
            "cpu_a_over_b": statistics.median(cpu_a_b),
            "cpu_a_over_c": statistics.median(cpu_a_c),
        }
        summary[bs]["chunk_size"] = default_chunk_size(bs)  # (a) runs with the default
        if "project_per_step" in runs[bs]:
            ps_b = [a / b for a, b in zip(ips["project_per_step"], ips["bare"], strict=True)]
            ps_c = [a / c for a, c in zip(ips["project_per_step"], ips["tutorial"], strict=True)]
            cpu_ps_b = [a / b for a, b in zip(cps["project_per_step"], cps["bare"], strict=True)]
            summary[bs].update(
                per_step_over_b_per_repeat=ps_b,
                per_step_over_b=statistics.median(ps_b),
                per_step_over_c=statistics.median(ps_c),
                cpu_per_step_over_b=statistics.median(cpu_ps_b),
            )
    return {
        "updates": updates,
        "threads": args.threads,
        "torch_threads": torch.get_num_threads(),
        "lr": args.lr,
        "project_overrides": overrides(
            "<B>", "<N>", args.threads, args.lr, args.data_dir, Path("<tmp>")
        ),
        "runs": runs,
        "summary": summary,
    }


# ---------------------------------------------------------------- start-up


PROBE = r"""
import json, sys, time
out = sys.argv[1]
sys.argv = ["lenet5-train", *sys.argv[2:]]
import lenet5.train as T
stamps = {}
real_train = T.train
def train(cfg, **kw):
    import pytorch_lightning as pl
    class Probe(pl.Callback):
        def on_fit_start(self, *a): stamps.setdefault("fit_start", time.time())
        def on_train_batch_start(self, *a): stamps.setdefault("first_step", time.time())
        def on_train_end(self, *a): stamps["train_end"] = time.time()
    original = pl.Trainer
    class Trainer(original):
        def __init__(self, *a, callbacks=None, **k):
            super().__init__(*a, callbacks=[*(callbacks or []), Probe()], **k)
    pl.Trainer = Trainer
    try:
        return real_train(cfg, **kw)
    finally:
        pl.Trainer = original
        json.dump(stamps, open(out, "w"))
T.train = train
T.main()
"""


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """(wall seconds, start time.time()) of a subprocess; raises if it fails."""
    start = time.time()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{shlex.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return wall, start


def startup(args) -> dict:
    py, train = str(VENV_BIN / "python"), str(VENV_BIN / "lenet5-train")
    store = scratch("lenet5-startup-")
    # One training step. `+trainer.max_steps=1` would end before the first validation, and
    # train.py's test(ckpt_path="best") then raises; limit_train_batches=1 ends the epoch.
    run_args = [
        "data=mnist_subset",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=1",
        f"threads={args.threads}",
        f"mlflow.tracking_uri=sqlite:///{store}/mlflow.db",
        f"mlflow.artifact_root={store}/artifacts",
        f"hydra.run.dir={store}/hydra",
    ]
    commands = {
        "import lenet5.train": [py, "-c", "import lenet5.train"],
        "import torch+lightning+mlflow+torchvision": [
            py,
            "-c",
            "import torch, pytorch_lightning, mlflow, torchvision, lenet5.module, lenet5.data",
        ],
        "lenet5-train --cfg job": [train, "--cfg", "job"],
        "lenet5-train 1-step subset run": [train, *run_args],
    }
    # The first run creates the SQLite store (schema migrations): report it apart.
    cold, _ = timed(commands["lenet5-train 1-step subset run"])
    walls: dict[str, list[float]] = {k: [] for k in commands}
    probes = []
    for rep in range(args.repeats):
        for name, cmd in commands.items():
            walls[name].append(timed(cmd)[0])
        stamp_file = store / f"probe{rep}.json"
        wall, start = timed([py, "-c", PROBE, str(stamp_file), *run_args])
        s = json.loads(stamp_file.read_text())
        probes.append(
            {
                "wall": wall,
                "to_fit_start": s["fit_start"] - start,
                "to_first_step": s["first_step"] - start,
                "after_train_end": start + wall - s["train_end"],
            }
        )
        print(f"start-up repeat {rep + 1}: to first step {probes[-1]['to_first_step']:.2f} s")
    med = {k: statistics.median(v) for k, v in walls.items()}
    probe_med = {k: statistics.median(p[k] for p in probes) for k in probes[0]}
    return {
        "commands": {k: shlex.join(v) for k, v in commands.items()},
        "cold_store_run_seconds": cold,
        "wall_seconds": walls,
        "median_wall_seconds": med,
        "probe": probes,
        "probe_median": probe_med,
    }


# ---------------------------------------------------------------- memory


MEMPROBE = r"""
import gc, json, resource, sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
import torch
from hydra.utils import instantiate
from lenet5.train import compose
torch.set_num_threads(1)
cfg = compose(["data=mnist", "data.source.root=" + sys.argv[1], "data.val_size=" + sys.argv[2]])
dm = instantiate(cfg.data, seed=0)
gc.collect()
before, peak_before = rss(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
dm.setup()
gc.collect()
after, peak_after = rss(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
seen, held = set(), 0
for images, labels in dm.splits.values():
    for t in (images, labels):
        s = t.untyped_storage()
        if s.data_ptr() not in seen:
            seen.add(s.data_ptr())
            held += s.nbytes()
print(json.dumps({"rss_before_setup_mb": before, "rss_after_setup_mb": after,
                  "peak_before_setup_mb": peak_before, "peak_after_setup_mb": peak_after,
                  "tensor_bytes_held_mb": held / 2**20}))
"""


def child_peak_rss(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB of this one child, wall seconds), from os.wait4's rusage."""
    t0 = time.perf_counter()
    with open(os.devnull, "w") as null:
        proc = subprocess.Popen(cmd, stdout=null, stderr=subprocess.PIPE, cwd=ROOT)
        stderr = proc.stderr.read().decode(errors="replace")
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{shlex.join(cmd)} failed:\n{stderr[-3000:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - t0


def memory(args) -> dict:
    py, train = str(VENV_BIN / "python"), str(VENV_BIN / "lenet5-train")
    setup = {}
    for val_size in (0, 5000):
        out = subprocess.run(
            [py, "-c", MEMPROBE, str(args.data_dir), str(val_size)],
            capture_output=True, text=True, cwd=ROOT, check=True,
        )  # fmt: skip
        setup[val_size] = json.loads(out.stdout.strip().splitlines()[-1])
    store = scratch("lenet5-memory-")
    common = [
        "model=modern",
        "optimizer=sgd",
        "optimizer.lr=0.01",
        "+trainer.max_steps=20",
        # val_size=0: a run that stops before its first validation has no "best" checkpoint,
        # and train.py's test(ckpt_path="best") then raises (see the report)
        "data.val_size=0",
        f"threads={args.threads}",
        f"mlflow.tracking_uri=sqlite:///{store}/mlflow.db",
        f"mlflow.artifact_root={store}/artifacts",
        f"hydra.run.dir={store}/hydra",
    ]
    full_cmd = [train, "data=mnist", f"data.source.root={args.data_dir}", *common]
    subset_cmd = [train, "data=mnist_subset", *common]
    child_peak_rss(subset_cmd)  # creates the store, so both measured runs find it
    full_peak, full_wall = child_peak_rss(full_cmd)
    subset_peak, subset_wall = child_peak_rss(subset_cmd)
    dataset_mb = DATASET_BYTES / 2**20
    s = setup[5000]
    return {
        "dataset_uint8_mb": dataset_mb,
        "datamodule_setup": setup,
        "setup_resident_cost_mb": s["rss_after_setup_mb"] - s["rss_before_setup_mb"],
        "setup_peak_cost_mb": s["peak_after_setup_mb"] - s["peak_before_setup_mb"],
        "lenet5_train_full_mnist": {
            "cmd": shlex.join(full_cmd),
            "peak_rss_mb": full_peak,
            "wall_seconds": full_wall,
        },
        "lenet5_train_subset": {
            "cmd": shlex.join(subset_cmd),
            "peak_rss_mb": subset_peak,
            "wall_seconds": subset_wall,
        },
    }


# ---------------------------------------------------------------- report


def fmt_ratio(value: float, target: float | None) -> str:
    if target is None:
        return f"{value:.2f}"
    return f"{value:.2f} ({'met' if value >= target else 'MISSED'}: >= {target})"


def part_header(part: dict) -> list[str]:
    return [
        f"Command: `{part['command']}`  ",
        f"Date (UTC): {part['date_utc']}; load average (1, 5, 15 min) before: "
        f"{part['load_before']}, after: {part['load_after']}",
        "",
    ]


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# Training throughput: `lenet5-train` vs a bare loop vs the tutorial path",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB; {m['gpu']}. The "
        "machine may be shared: each part records the load average before and after it; "
        "compare ratios of paths run back to back rather than absolute speeds.  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()),
        "",
    ]
    for key in sorted(k for k in result["parts"] if k.startswith("throughput")):
        lines += throughput_markdown(result["parts"][key])
    for key, render in (("startup", startup_markdown), ("memory", memory_markdown)):
        if key in result["parts"]:
            lines += render(result["parts"][key])
    return "\n".join(lines)


def throughput_markdown(tp: dict) -> list[str]:
    lines = [
        f"## Images/s (torch threads: {tp['torch_threads']}; model=modern, SGD "
        f"lr={tp['lr']}; updates per run: "
        + ", ".join(f"batch {bs}: {n}" for bs, n in tp["updates"].items())
        + ")",
        "",
        *part_header(tp),
        "(a) project = `lenet5.train.run(overrides)` timed from `on_train_start` to the "
        "last `on_train_batch_end`; (b) bare loop over the same preloaded uint8 tensors; "
        "(c) torchvision MNIST + Pad/ToTensor/Normalize + DataLoader(num_workers=0). "
        "Ratios are the medians of the per-repeat ratios (a, b, c of one repeat ran back "
        "to back).",
        "",
        "Project overrides: `" + " ".join(tp["project_overrides"]) + "`",
        "",
    ]
    n_rep = len(next(iter(tp["runs"].values()))["project"])
    head = "| batch | path | " + " | ".join(f"rep {i + 1}" for i in range(n_rep))
    lines += [head + " | median | median per CPU-s |", "|---" * (n_rep + 4) + "|"]
    for bs, by_method in tp["runs"].items():
        for m in by_method:
            vals = [f"{r['images_per_s']:.0f}" for r in by_method[m]]
            med = tp["summary"][bs]["median_images_per_s"][m]
            cpu = tp["summary"][bs]["median_images_per_cpu_s"][m]
            lines.append(f"| {bs} | {m} | " + " | ".join(vals) + f" | {med:.0f} | {cpu:.0f} |")
    lines += [
        "",
        "Ratios (wall time; the targets apply to these). CPU-time ratios divide images per "
        "CPU-second of the process (all paths at the same thread count): with one thread, "
        "less sensitive to the other load; with two on a loaded machine, spin-waiting "
        "threads make both measures erratic.",
        "",
        "| batch | a/b | a/c | a/b per repeat | a/c per repeat | CPU a/b | CPU a/c | "
        "(a) whole fit images/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for bs, s in tp["summary"].items():
        tb, tc = TARGETS.get(int(bs), (None, None))
        lines.append(
            f"| {bs} | {fmt_ratio(s['a_over_b'], tb)} | {fmt_ratio(s['a_over_c'], tc)} | "
            + ", ".join(f"{x:.2f}" for x in s["a_over_b_per_repeat"])
            + " | "
            + ", ".join(f"{x:.2f}" for x in s["a_over_c_per_repeat"])
            + f" | {s['cpu_a_over_b']:.2f} | {s['cpu_a_over_c']:.2f}"
            + f" | {s['median_fit_images_per_s']:.0f} |"
        )
    lines += [
        "",
        "(a) serves C samples per Lightning step (the default `data.chunk_size`) and makes one "
        "update per batch inside it. project_per_step (a') = the same run with "
        "`data.chunk_size=<batch>`: one update per Lightning step, Lightning's automatic "
        "optimization (what gradient clipping needs), so its per-step cost (logging, "
        "progress bar, loop hooks) is paid once per update.",
        "",
        "| batch | C | a'/b | a'/b per repeat | a'/c | CPU a'/b |",
        "|---|---|---|---|---|---|",
    ]
    for bs, s in tp["summary"].items():
        if "per_step_over_b" not in s:
            lines.append(f"| {bs} | {s.get('chunk_size', '?')} | - | - | - | - |")
            continue
        lines.append(
            f"| {bs} | {s['chunk_size']} | {s['per_step_over_b']:.2f} | "
            + ", ".join(f"{x:.2f}" for x in s["per_step_over_b_per_repeat"])
            + f" | {s['per_step_over_c']:.2f} | {s['cpu_per_step_over_b']:.2f} |"
        )
    lines.append("")
    return lines


def startup_markdown(su: dict) -> list[str]:
    pm = su["probe_median"]
    return [
        "## Start-up of `lenet5-train`",
        "",
        *part_header(su),
        "| what | median wall s |",
        "|---|---|",
        *(f"| `{k}` | {v:.2f} |" for k, v in su["median_wall_seconds"].items()),
        f"| 1-step subset run, first into a fresh SQLite store | "
        f"{su['cold_store_run_seconds']:.2f} |",
        "",
        "Probe (the same 1-step run through `lenet5.train.main()` with a callback "
        "stamping wall-clock times): process start -> `fit` starts "
        f"{pm['to_fit_start']:.2f} s, -> first training step {pm['to_first_step']:.2f} s "
        f"(**start-up**); after training ends (test, artifacts, exit) "
        f"{pm['after_train_end']:.2f} s; total {pm['wall']:.2f} s.",
        "",
    ]


def memory_markdown(me: dict) -> list[str]:
    s0, s5 = me["datamodule_setup"]["0"], me["datamodule_setup"]["5000"]
    steady = me["setup_resident_cost_mb"] / me["dataset_uint8_mb"]
    peak = me["setup_peak_cost_mb"] / me["dataset_uint8_mb"]
    return [
        "## Memory",
        "",
        *part_header(me),
        f"Dataset as padded uint8: {me['dataset_uint8_mb']:.1f} MiB "
        f"({DATASET_BYTES / 1e6:.1f} MB).",
        "",
        "| measure | val_size=0 | val_size=5000 |",
        "|---|---|---|",
        f"| tensors held by the datamodule, MiB | {s0['tensor_bytes_held_mb']:.1f} | "
        f"{s5['tensor_bytes_held_mb']:.1f} |",
        f"| RSS growth over `setup()`, MiB | "
        f"{s0['rss_after_setup_mb'] - s0['rss_before_setup_mb']:.1f} | "
        f"{s5['rss_after_setup_mb'] - s5['rss_before_setup_mb']:.1f} |",
        f"| peak RSS growth over `setup()`, MiB | "
        f"{s0['peak_after_setup_mb'] - s0['peak_before_setup_mb']:.1f} | "
        f"{s5['peak_after_setup_mb'] - s5['peak_before_setup_mb']:.1f} |",
        f"| RSS before `setup()` (imports), MiB | {s0['rss_before_setup_mb']:.0f} | "
        f"{s5['rss_before_setup_mb']:.0f} |",
        "",
        f"Peak RSS (`ru_maxrss` from `os.wait4`) of a `lenet5-train` child: full MNIST "
        f"{me['lenet5_train_full_mnist']['peak_rss_mb']:.0f} MiB, the 5,000-digit subset "
        f"{me['lenet5_train_subset']['peak_rss_mb']:.0f} MiB (same model, 20 steps, the "
        "test at the end).  ",
        f"Full: `{me['lenet5_train_full_mnist']['cmd']}`",
        "",
        f"In-memory dataset (default val_size=5000): resident cost {steady:.2f}x its uint8 "
        f"size ({'met' if steady <= 2 else 'MISSED'}: target <= 2x); transient peak during "
        f"`setup()` {peak:.2f}x.",
        "",
    ]


def parse_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--updates", default="1280,150,50",
                   help="updates per run: one number, or one per batch size")  # fmt: skip
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-sizes", default="1,64,256")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads, all paths")
    p.add_argument("--lr", type=float, default=0.01, help="SGD learning rate, all paths")
    p.add_argument("--per-step", action="store_true",
                   help="also time the project with one update per Lightning step")  # fmt: skip
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--parts", default="throughput,startup,memory")
    p.add_argument("--startup-repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--render-only", action="store_true", help="rewrite the .md from the .json")
    args = p.parse_args()
    if args.render_only:
        result = json.loads((args.out / "throughput.json").read_text())
        (args.out / "throughput.md").write_text(markdown(result) + "\n")
        return
    args.batch_sizes = parse_ints(args.batch_sizes)
    args.updates = parse_ints(args.updates)
    if len(args.updates) == 1:
        args.updates *= len(args.batch_sizes)
    parts = set(args.parts.split(","))
    if not (args.data_dir / "MNIST" / "raw").is_dir():
        sys.exit(f"no MNIST under {args.data_dir}/MNIST/raw: pass --data-dir")

    command = shlex.join([".venv/bin/python", "benchmarks/throughput.py", *sys.argv[1:]])
    out_json = args.out / "throughput.json"
    # Parts not run this time are kept from the last file, each with its own command.
    old = json.loads(out_json.read_text()) if out_json.is_file() else {}
    result = {"machine": machine(), "versions": versions(), "parts": old.get("parts", {})}
    runners = {
        "throughput": throughput,
        "startup": lambda a: startup(
            argparse.Namespace(**{**vars(a), "repeats": a.startup_repeats})
        ),
        "memory": memory,
    }
    for name in ("throughput", "startup", "memory"):
        if name not in parts:
            continue
        before = load()
        print(f"{name}: load average before {before}", flush=True)
        date = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        try:
            part = runners[name](args)
        finally:
            for path in TEMP_DIRS:
                shutil.rmtree(path, ignore_errors=True)
        part.update(command=command, date_utc=date, load_before=before, load_after=load())
        key = f"throughput_threads{args.threads}" if name == "throughput" else name
        result["parts"][key] = json.loads(json.dumps(part))
    text = markdown(result)
    args.out.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "throughput.md").write_text(text + "\n")
    print()
    print(text)


if __name__ == "__main__":
    main()

"""Images/s of (a) the project, (a') the project with one update per Lightning step
(`--per-step`), (b) the bare loop and (c) the tutorial path (`bench.loops`).

The methods run interleaved (a, b, c at each batch size, then the next repeat), so a change
in the machine's load hits all of them alike; the summary gives the medians and the paired
ratios a/b and a/c (median over repeats of the ratio of runs made back to back).

`--device cuda`: all paths train on the GPU (see `bench.loops`); the warm-up then runs (a)
at every batch size (kernels, cuDNN and cuBLAS handles per shape), not only at 64.
"""

from __future__ import annotations

import gc
import statistics
import sys
from pathlib import Path

from bench.common import load, scratch
from bench.loops import (
    bare_split,
    overrides,
    quiet_process,
    run_bare,
    run_project,
    run_tutorial,
    tutorial_dataset,
)

METHODS = ("project", "project_per_step", "bare", "tutorial")  # project_per_step: --per-step


def methods_for(args) -> list[str]:
    return [m for m in METHODS if args.per_step or m != "project_per_step"]


def ratios(num: list[float], den: list[float]) -> list[float]:
    """Per-repeat ratios: runs of the same repeat ran back to back."""
    return [a / b for a, b in zip(num, den, strict=True)]


def summarize(runs: dict, updates: int, chunk: int) -> dict:
    """Medians and paired ratios of one batch size's runs ({method: [run, ...]})."""
    ips = {m: [r["images_per_s"] for r in runs[m]] for m in runs}
    cps = {m: [r["images_per_cpu_s"] for r in runs[m]] for m in runs}
    med = {m: statistics.median(v) for m, v in ips.items()}
    a_b, a_c = ratios(ips["project"], ips["bare"]), ratios(ips["project"], ips["tutorial"])
    cpu_a_b, cpu_a_c = ratios(cps["project"], cps["bare"]), ratios(cps["project"], cps["tutorial"])
    summary = {
        "updates": updates,
        "median_images_per_s": med,
        "median_fit_images_per_s": statistics.median(
            r["fit_images_per_s"] for r in runs["project"]
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
        "chunk_size": chunk,  # (a) runs with the default data.chunk_size
    }
    if "project_per_step" in runs:
        ps_b = ratios(ips["project_per_step"], ips["bare"])
        summary.update(
            per_step_over_b_per_repeat=ps_b,
            per_step_over_b=statistics.median(ps_b),
            per_step_over_c=statistics.median(ratios(ips["project_per_step"], ips["tutorial"])),
            cpu_per_step_over_b=statistics.median(ratios(cps["project_per_step"], cps["bare"])),
        )
    return summary


def run(args) -> dict:
    import torch

    from lenet5.cli.train import compose
    from lenet5.training.build import build_datamodule
    from lenet5.training.chunks import chunk_size

    quiet_process(args.threads)
    updates = dict(zip(args.batch_sizes, args.updates, strict=True))
    for bs, n in updates.items():
        if n * bs > 60_000:
            sys.exit(f"{n} updates at batch {bs} run past one pass over MNIST: ask for fewer")

    store = scratch("lenet5-throughput-")

    def config(bs: int):
        return compose(overrides(bs, 1, args.threads, args.lr, args.data_dir, store, args.device))

    cfg = config(64)
    # (b) reads the same preloaded tensors as (a); its chunk size is irrelevant. setup()
    # without a trainer leaves them on the CPU; bare_split moves them to the device once.
    datamodule = build_datamodule(cfg)
    datamodule.setup()
    split = bare_split(datamodule, args.device)
    dataset = tutorial_dataset(args.data_dir)
    chunks = {bs: chunk_size(config(bs)) for bs in args.batch_sizes}

    # Warm-up, untimed: creates the MLflow store, imports what fit imports lazily, and
    # runs each kernel once.
    print("warm-up ...", flush=True)
    for bs in [64] if args.device == "cpu" else args.batch_sizes:
        run_project(args, bs, 5, store)
    for bs in args.batch_sizes:
        run_bare(cfg, split, datamodule.normalize, bs, 5)
        run_tutorial(cfg, dataset, bs, 5, args.device)

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
                    r = run_bare(cfg, split, datamodule.normalize, bs, updates[bs])
                else:
                    r = run_tutorial(cfg, dataset, bs, updates[bs], args.device)
                r["repeat"], r["load_before"] = rep, load_before
                runs[bs][method].append(r)
                print(
                    f"repeat {rep + 1}/{args.repeats} batch {bs:>3} {method:<16} "
                    f"{r['images_per_s']:8.1f} images/s, {r['images_per_cpu_s']:8.1f} per CPU-s "
                    f"({r['updates']} updates, {r['seconds']:.2f} s; load {load_before[0]})",
                    flush=True,
                )
    return {
        # cpu results keep the layout they had before --device: no key, read as "cpu"
        **({"device": args.device} if args.device != "cpu" else {}),
        "updates": updates,
        "threads": args.threads,
        "torch_threads": torch.get_num_threads(),
        "lr": args.lr,
        "project_overrides": overrides(
            "<B>", "<N>", args.threads, args.lr, args.data_dir, Path("<tmp>"), args.device
        ),
        "runs": runs,
        "summary": {bs: summarize(runs[bs], updates[bs], chunks[bs]) for bs in args.batch_sizes},
    }

"""The paper recipe's per-sample pass time: N updates of `recipe=paper` (SDLM, batch 1, 128
samples served to a Lightning step) through `lenet5.cli.train.run`, exactly `lenet5-train`:

    lenet5-train recipe=paper model=paper data=mnist data.val_size=0 +trainer.max_steps=N ...

timed from the inside by `bench.timing.StepTimer` (added through the config). Per run:
updates/s from the first training step's start to the last step's end (the per-sample
updates alone); the seconds from `on_train_start` to the first step (SDLM's curvature
estimate on its 500 samples, appendix C, and the first chunk); and from the two, the time of
one pass over the 60,000 training images. `--device cuda` trains on the GPU
(`trainer.accelerator=gpu`), where each stamp waits for the device.
"""

from __future__ import annotations

import gc
import statistics
from pathlib import Path

from bench.common import accelerator_overrides, load, scratch
from bench.loops import quiet_process, run_timed, store_and_timer

PASS = 60_000  # per-sample updates in one pass over full MNIST with data.val_size=0
WARM_UP = 128  # one Lightning step of the recipe


def overrides(args, updates: int, store: Path) -> list[str]:
    return [
        "recipe=paper",
        "model=paper",
        "data=mnist",
        f"data.root={args.data_dir}",
        "data.val_size=0",
        f"+trainer.max_steps={updates}",
        f"threads={args.threads}",
        "seed=0",
        *store_and_timer(store, "paper-pass"),
        *accelerator_overrides(args.device),
    ]


def one_run(args, updates: int, store: Path) -> dict:
    t, test_error, wall = run_timed("recipe=paper", overrides(args, updates, store), store, updates)
    start, first, end = t["train_start"], t["first_step"], t["last_batch_end"]
    seconds, cpu = end["perf"] - first["perf"], end["cpu"] - first["cpu"]
    before_first = first["perf"] - start["perf"]
    return {
        "updates": updates,
        "seconds": seconds,
        "updates_per_s": updates / seconds,
        "cpu_seconds": cpu,
        "updates_per_cpu_s": updates / cpu,
        "before_first_step_seconds": before_first,
        "pass_seconds": PASS * seconds / updates + before_first,
        "run_seconds": wall,
        "test_error": test_error,
    }


def run(args) -> dict:
    quiet_process(args.threads)
    store = scratch("lenet5-paper-")
    n = args.paper_updates
    if n > PASS:
        raise SystemExit(f"--paper-updates {n} runs past one pass ({PASS}): ask for fewer")
    print("warm-up ...", flush=True)
    one_run(args, WARM_UP, store)
    runs = []
    for rep in range(args.repeats):
        gc.collect()
        load_before = load()
        r = one_run(args, n, store)
        r["repeat"], r["load_before"] = rep, load_before
        runs.append(r)
        print(
            f"repeat {rep + 1}/{args.repeats} recipe=paper {r['updates_per_s']:8.1f} updates/s, "
            f"{r['updates_per_cpu_s']:8.1f} per CPU-s ({n} updates, {r['seconds']:.2f} s; "
            f"before the first step {r['before_first_step_seconds']:.2f} s; "
            f"pass {r['pass_seconds']:.0f} s; load {load_before[0]})",
            flush=True,
        )
    keys = ("updates_per_s", "updates_per_cpu_s", "before_first_step_seconds", "pass_seconds")
    return {
        "device": args.device,
        "threads": args.threads,
        "updates": n,
        "overrides": overrides(args, "<N>", Path("<tmp>")),
        "runs": runs,
        "median": {k: statistics.median(r[k] for r in runs) for k in keys},
    }

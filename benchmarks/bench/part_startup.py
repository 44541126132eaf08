"""Start-up of `lenet5-train`, in child processes: the imports alone, a config error path
(`--cfg job`), and a 1-step run on the subset, whole and stamped from the inside.

The stamped run is the same `lenet5-train` command with a StepTimer added through the
config; its wall-clock stamps are compared with the parent's time.time() at launch, so
"to first step" runs from process start to the first training step's start.
"""

from __future__ import annotations

import shlex
import statistics

from bench.common import (
    PYTHON,
    TRAIN,
    child_env,
    read_timer,
    scratch,
    store_overrides,
    timed,
    timer_overrides,
)


def run(args) -> dict:
    store = scratch("lenet5-startup-")
    # One training step, then the epoch's validation and the test: the same run as the
    # recorded results (limit_train_batches=1 ends the epoch after one step).
    run_args = [
        "data=mnist_subset",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=1",
        f"threads={args.threads}",
        *store_overrides(store),
    ]
    commands = {
        "import lenet5.training.build": [PYTHON, "-c", "import lenet5.training.build"],
        "import torch+lightning+mlflow+torchvision": [
            PYTHON,
            "-c",
            "import torch, pytorch_lightning, mlflow, torchvision, lenet5.training.module, lenet5.data.datamodule",
        ],
        "lenet5-train --cfg job": [TRAIN, "--cfg", "job"],
        "lenet5-train 1-step subset run": [TRAIN, *run_args],
    }
    probe_out = store / "probe.json"
    probe_cmd = [TRAIN, *run_args, *timer_overrides(probe_out)]
    # The first run creates the SQLite store (schema migrations): report it apart.
    cold, _ = timed(commands["lenet5-train 1-step subset run"])
    walls: dict[str, list[float]] = {k: [] for k in commands}
    probes = []
    for rep in range(args.startup_repeats):
        for name, cmd in commands.items():
            walls[name].append(timed(cmd)[0])
        probe_out.unlink(missing_ok=True)  # a stale file must not pass for this run's stamps
        wall, start = timed(probe_cmd, env=child_env())  # child_env: it imports bench.timing
        s = read_timer(probe_out)
        probes.append(
            {
                "wall": wall,
                "to_fit_start": s["fit_start"]["wall"] - start,
                "to_first_step": s["first_step"]["wall"] - start,
                "after_train_end": start + wall - s["train_end"]["wall"],
            }
        )
        print(f"start-up repeat {rep + 1}: to first step {probes[-1]['to_first_step']:.2f} s")
    return {
        "commands": {k: shlex.join(v) for k, v in commands.items()},
        "probe_command": shlex.join(probe_cmd),
        "cold_store_run_seconds": cold,
        "wall_seconds": walls,
        "median_wall_seconds": {k: statistics.median(v) for k, v in walls.items()},
        "probe": probes,
        "probe_median": {k: statistics.median(p[k] for p in probes) for k in probes[0]},
    }

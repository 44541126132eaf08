"""Whole process: `lenet5-train model=modern data=mnist data.batch_size=64
trainer.max_epochs=E` against `probes/bare_train.py` (a bare PyTorch loop doing the same work,
with only its own imports), alternating, and where the project's fixed seconds go.

Each repeat times, in an order that alternates between repeats (train, bare, yardsticks; then
bare, train, yardsticks; ...), child processes from launch to exit: the project's run, the
bare loop, and three yardsticks that import and leave at once (`YARDSTICKS`): the stack's own
imports (torch, Lightning, MLflow, Hydra: the yardstick of start-up), the same with MLflow's
SQL store, and the bare loop's imports; from them, what the imports alone add to a run.
The project's run logs one `timings:` line
(`lenet5.core.stages`): its seconds per stage, which are summed here into imports, data,
store, Lightning (start-up: to the first training step), then training, test and record.
Both run with `--threads` torch threads (`--threads 0`: torch's default, as the plain
command has it). A first, untimed project run creates the SQLite store, so that every timed run opens an
existing store, as a study's runs do.
"""

from __future__ import annotations

import os
import shlex
import statistics
import subprocess
import time

from bench.common import (
    PROBES,
    PYTHON,
    ROOT,
    TRAIN,
    accelerator_overrides,
    failed,
    scratch,
    store_overrides,
)

# Yardsticks, each a process that imports and leaves without Python's teardown (os._exit), as
# lenet5-train now ends (lenet5.core.process.exit_now): the stack's own imports; the same with
# MLflow's SQL store (SQLAlchemy, alembic), which a sqlite:// store imports beyond `import
# mlflow`; and the bare loop's own (torch, numpy), for what the imports alone add to a run.
QUICK_EXIT = "import os; os._exit(0)"
STACK_IMPORTS = f"import torch, pytorch_lightning, mlflow, hydra; {QUICK_EXIT}"
STORE_IMPORTS = f"import torch, pytorch_lightning, mlflow, hydra, mlflow.store.tracking.sqlalchemy_store; {QUICK_EXIT}"
BARE_IMPORTS = f"import torch, numpy; {QUICK_EXIT}"
YARDSTICKS = ("imports", "imports_store", "bare_imports")
# The stages of the project's `timings:` line, grouped as the table shows them.
GROUPS = {
    "imports": ("python+hydra", "config+torch", "lightning import", "mlflow import"),
    "data": ("data",),
    "store": ("store",),
    "lightning": ("lightning setup",),
}
AFTER = ("train", "test", "record", "end run")
TARGET_RATIO, TARGET_OVER_IMPORTS_S, TARGET_RECORD_S = 1.20, 1.0, 1.0


def timed_output(cmd: list[str], env: dict) -> tuple[float, str]:
    """(wall seconds from launch to exit, stdout + stderr) of a child; raises if it fails."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise failed(cmd, proc.stderr + proc.stdout)
    return wall, proc.stdout + proc.stderr


def stages(output: str) -> dict[str, float]:
    from lenet5.core.stages import parse  # the project's own reader of its line

    found = parse(output)
    if not found:
        raise RuntimeError("lenet5-train logged no `timings:` line:\n" + output[-3000:])
    grouped = {g: sum(found.get(s, 0.0) for s in names) for g, names in GROUPS.items()}
    grouped["to first step"] = sum(grouped.values())
    # Start-up beyond the imports, read inside the one process (not against another
    # process's imports, which a busy machine makes noisy).
    grouped["beyond imports"] = grouped["to first step"] - grouped["imports"]
    grouped.update({s: found.get(s, 0.0) for s in AFTER})
    return {"stages": found, "grouped": grouped}


def run(args) -> dict:
    store = scratch("lenet5-process-")
    epochs = args.process_epochs
    env = {**os.environ, "LENET5_DATA_DIR": str(args.data_dir)}
    commands = {
        "project": [
            TRAIN,
            "model=modern",
            "data=mnist",
            "data.batch_size=64",
            f"trainer.max_epochs={epochs}",
            *([f"threads={args.threads}"] if args.threads else []),
            *accelerator_overrides("cpu"),
            *store_overrides(store),
        ],
        "bare": [
            PYTHON,
            str(PROBES / "bare_train.py"),
            str(args.data_dir),
            str(epochs),
            "64",
            *([str(args.threads)] if args.threads else []),
        ],
        "imports": [PYTHON, "-c", STACK_IMPORTS],
        "imports_store": [PYTHON, "-c", STORE_IMPORTS],
        "bare_imports": [PYTHON, "-c", BARE_IMPORTS],
    }
    cold, _ = timed_output(commands["project"], env)  # creates the store; not in the medians
    walls: dict[str, list[float]] = {k: [] for k in commands}
    runs = []
    for rep in range(args.process_repeats):
        order = ["project", "bare"] if rep % 2 == 0 else ["bare", "project"]
        for name in [*order, *YARDSTICKS]:
            wall, output = timed_output(commands[name], env)
            walls[name].append(wall)
            if name == "project":
                runs.append(stages(output))
        ratio = walls["project"][-1] / walls["bare"][-1]
        print(
            f"process repeat {rep + 1}: project {walls['project'][-1]:.1f} s, bare "
            f"{walls['bare'][-1]:.1f} s ({ratio:.2f}x), stack imports {walls['imports'][-1]:.1f} s",
            flush=True,
        )
    ratios = [p / b for p, b in zip(walls["project"], walls["bare"], strict=True)]
    grouped = {k: statistics.median(r["grouped"][k] for r in runs) for k in runs[0]["grouped"]}
    imports = statistics.median(walls["imports"])
    # What importing the stack (with MLflow's SQL store) costs beyond the bare loop's imports,
    # against the bare loop's wall: the share of the ratio's budget that imports alone take.
    imports_store = statistics.median(walls["imports_store"])
    extra = imports_store - statistics.median(walls["bare_imports"])
    return {
        "commands": {k: shlex.join(v) for k, v in commands.items()},
        "epochs": epochs,
        "cold_store_project_seconds": cold,
        "wall_seconds": walls,
        "median_wall_seconds": {k: statistics.median(v) for k, v in walls.items()},
        "ratios": ratios,
        "median_ratio": statistics.median(ratios),
        "runs": runs,
        "median_stages": grouped,
        "first_step_over_imports": grouped["to first step"] - imports,
        "first_step_over_imports_store": grouped["to first step"] - imports_store,
        "imports_over_bare_s": extra,
        "imports_over_bare_fraction": extra / statistics.median(walls["bare"]),
        "targets": {
            "ratio": TARGET_RATIO,
            "first_step_over_imports_s": TARGET_OVER_IMPORTS_S,
            "record_s": TARGET_RECORD_S,
        },
    }

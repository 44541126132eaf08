"""Resident memory: the full-MNIST datamodule's `setup()` (probes/memory_probe.py, one fresh
process per val_size) and the peak RSS of whole `lenet5-train` runs, full MNIST and subset."""

from __future__ import annotations

import json
import resource
import shlex
import subprocess

from bench.common import (
    DATASET_BYTES,
    PROBES,
    PYTHON,
    ROOT,
    TRAIN,
    child_env,
    child_peak_rss,
    failed,
    scratch,
    store_overrides,
)


def setup_probe(data_dir, val_size: int) -> dict:
    cmd = [PYTHON, str(PROBES / "memory_probe.py"), str(data_dir), str(val_size)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=child_env())
    if proc.returncode:
        raise failed(cmd, proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


# Linux carries a parent's peak RSS over fork/vfork + exec into the child's ru_maxrss, so a
# child's peak (and the probe's peak before setup) reads as at least this process's: it
# means the child's own only while this process stays small. The entry runs this part
# first, before anything imports torch here; a heavier caller is refused.
LAUNCHER_LIMIT_MB = 200


def run(args) -> dict:
    launcher_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if launcher_mb > LAUNCHER_LIMIT_MB:
        raise RuntimeError(
            f"this process peaked at {launcher_mb:.0f} MiB: the children's peak RSS would "
            "read as at least that; run the memory part first, from a fresh process"
        )
    setup = {val_size: setup_probe(args.data_dir, val_size) for val_size in (0, 5000)}
    store = scratch("lenet5-memory-")
    common = [
        "model=modern",
        "optimizer=sgd",
        "optimizer.lr=0.01",
        "+trainer.max_steps=20",
        "data.val_size=0",  # as in the recorded results: 20 steps, no validation
        f"threads={args.threads}",
        *store_overrides(store),
    ]
    full_cmd = [TRAIN, "data=mnist", f"data.root={args.data_dir}", *common]
    subset_cmd = [TRAIN, "data=mnist_subset", *common]
    child_peak_rss(subset_cmd)  # creates the store, so both measured runs find it
    full_peak, full_wall = child_peak_rss(full_cmd)
    subset_peak, subset_wall = child_peak_rss(subset_cmd)
    s = setup[5000]
    return {
        "launcher_peak_rss_mb": launcher_mb,  # the floor under every peak below
        "dataset_uint8_mb": DATASET_BYTES / 2**20,
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

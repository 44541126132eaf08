"""`StepTimer`: the Lightning callback that times a `lenet5-train` run from the inside.

It is added through the config, like any callback (`lenet5.training.build.build_callbacks`
instantiates every node under `callbacks`), so the project's code runs exactly as it does
from the shell:

    lenet5-train ... +callbacks.step_timer._target_=bench.timing.StepTimer \\
        +callbacks.step_timer.out=/tmp/timer.json

`bench.common.timer_overrides(out)` gives those overrides and `read_timer(out)` reads the
file back; they live there, not here, so a part that only launches `lenet5-train` children
does not import Lightning itself. `bench` must be importable in the process that trains:
`benchmarks/throughput.py` puts benchmarks/ on sys.path for its in-process
`lenet5.cli.train.run` calls, and a child `lenet5-train` gets it on PYTHONPATH
(`bench.common.child_env`).

On a GPU (`trainer.accelerator=gpu`) CUDA kernels run asynchronously: each stamp first waits
for the module's device (`torch.cuda.synchronize`), so the GPU work queued before a stamp is
counted before it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytorch_lightning as pl
import torch


def stamp() -> dict[str, float]:
    """One instant on three clocks: `wall` (time.time, comparable with another process's:
    start-up is measured from the parent's launch), `perf` (perf_counter, for durations)
    and `cpu` (process_time, CPU seconds of this process, all its threads)."""
    return {"wall": time.time(), "perf": time.perf_counter(), "cpu": time.process_time()}


class StepTimer(pl.Callback):
    """Stamps fit start, train start, the first training step's start, the last training
    step's end, train end and fit end, then writes them and the update count (Lightning's
    `global_step`) as JSON to `out` when fit ends, before the run's test. On a CUDA device
    every stamp waits for the GPU first."""

    def __init__(self, out: str):
        self.out = Path(out)
        self.stamps: dict[str, dict[str, float]] = {}

    def _stamp(self, name: str, pl_module) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)  # the queued kernels count before it
        self.stamps[name] = stamp()

    def on_fit_start(self, trainer, pl_module):
        self._stamp("fit_start", pl_module)

    def on_train_start(self, trainer, pl_module):
        self._stamp("train_start", pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if "first_step" not in self.stamps:
            self._stamp("first_step", pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._stamp("last_batch_end", pl_module)

    def on_train_end(self, trainer, pl_module):
        self._stamp("train_end", pl_module)

    def on_fit_end(self, trainer, pl_module):
        self._stamp("fit_end", pl_module)
        self.out.write_text(json.dumps({**self.stamps, "updates": trainer.global_step}))

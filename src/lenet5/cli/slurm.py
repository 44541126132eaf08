"""`hydra/launcher=slurm`: Hydra's submitit launcher, except that a task which ends without
handing back its result fails only its own job instead of holding the sweep forever.

submitit learns that a task ended from the result file the task writes, or from `sacct`. A
task killed outright past Slurm's own stop (SIGKILL to its process, the out-of-memory killer,
a node lost) writes no result; on a cluster that keeps no accounting `sacct` fails too, and
submitit waits for it forever. Here the sweep also asks `squeue`: a task that has left the
queue without its result (`lost_after_s` later, for a shared filesystem to show the file) is
lost. Its run, which it could not end, is ended KILLED with the cause, the other tasks go
on, and the sweep's end names the lost jobs and the command that continues them in their
own runs, as for a worker process killed under `hydra/launcher=joblib`
(`lenet5.cli.launcher`).

The sweep's command itself may die (SIGKILL, a login node lost) while its tasks go on in
Slurm. Its parent run notes each array it submitted (`lenet5.slurm_arrays`); the relaunch of
the same command cancels those tasks still in the queue (each ends its run KILLED with its
checkpoint) before it submits, then continues their runs, as for any stopped sweep.
"""

from __future__ import annotations

import getpass
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf

from lenet5.cli.launcher import STOP_WAIT_S, lose
from lenet5.core.names import SLURM_ARRAYS, SLURM_TASK
from lenet5.tracking import parent
from lenet5.tracking.stores import client_for

log = logging.getLogger("lenet5.sweep")
POLL_S = 2.0  # how often the sweep looks for its tasks' result files
SQUEUE_S = 10.0  # how often it asks squeue (each call is a request to slurmctld)


def queued() -> set[str] | None:
    """The ids of this user's Slurm jobs in the queue, array tasks one by one
    (<job>_<task>); None where squeue cannot say (then only results and sacct end a wait, as
    in submitit)."""
    command = ["squeue", "-h", "-r", "-o", "%i", "-u", getpass.getuser()]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return set(out.stdout.split()) if out.returncode == 0 else None


def submit(params: dict[str, Any], fn, *args: list) -> list:
    """Submit `fn` over `args` as one Slurm array (one task per item), with the submitit
    plugin's keys `params` (its `submitit_folder`, `partition`, `mem_gb`, ...); its jobs.
    First, in a relaunch, cancel what the earlier launch left in the queue
    (`cancel_earlier`); after, note the array on the sweep's parent run (`record_array`)."""
    import submitit  # the plugin imports it only once a sweep launches, as here

    params = dict(params)
    init = {"folder": params.pop("submitit_folder")}
    if "max_num_timeout" in params:
        init["slurm_max_num_timeout"] = params.pop("max_num_timeout")
    executor = submitit.AutoExecutor(cluster="slurm", **init)
    common = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in common else f"slurm_{k}": v for k, v in params.items()})
    cancel_earlier()
    jobs = executor.map_array(fn, *args)
    if jobs:
        record_array(jobs[0].job_id.split("_")[0])
    return jobs


def submitted(client, info: dict) -> list[str]:
    """The Slurm arrays the sweep `info` submitted so far (its parent run's tag)."""
    tag = client.get_run(info["parent_run_id"]).data.tags.get(SLURM_ARRAYS, "")
    return [a for a in tag.split(",") if a]


def record_array(array: str) -> None:
    """Note the submitted array on the sweep's parent run, for a relaunch to find."""
    info = parent.current()
    if info is None:
        return
    client = client_for(info["tracking_uri"])
    arrays = [*submitted(client, info), array]
    client.set_tag(info["parent_run_id"], SLURM_ARRAYS, ",".join(arrays))


def cancel_earlier() -> None:
    """A relaunch of a sweep whose command died (SIGKILL, a lost login node) while its tasks
    went on: cancel those still in Slurm's queue (SIGTERM: each ends its runs KILLED with
    their last checkpoints) and wait for them to leave it, so that this launch continues
    their runs instead of racing them with second runs of the same configs."""
    info = parent.current()
    if info is None or not info.get("resumed"):
        return
    earlier = set(submitted(client_for(info["tracking_uri"]), info))

    def still() -> list[str]:
        return sorted(t for t in queued() or () if t.split("_")[0] in earlier)

    tasks = still()
    if not tasks:
        return
    log.warning(
        "this sweep's earlier launch still has %d task(s) in Slurm's queue (%s): cancelling "
        "them; their runs end KILLED with their last checkpoints and continue here",
        len(tasks), ", ".join(tasks),
    )  # fmt: skip
    subprocess.run(["scancel", *sorted(earlier)], capture_output=True, timeout=60)
    deadline = time.monotonic() + STOP_WAIT_S
    while still() and time.monotonic() < deadline:
        time.sleep(POLL_S)


def wait(jobs: list, task_jobs: list[list[tuple[int, list[str]]]], lost_after_s: float) -> list:
    """Each task's result, as it hands it back; for a task gone from the queue without one
    (`lost_after_s` later), the returns of its jobs (`task_jobs`), which are lost
    (`lenet5.cli.launcher.lose`)."""
    results: dict[int, Any] = {}
    gone_at: dict[int, float] = {}
    asked: float | None = None  # when squeue was last asked
    while len(results) < len(jobs):
        if asked is None or time.monotonic() - asked >= SQUEUE_S:
            in_queue, asked = queued(), time.monotonic()
        for k, job in enumerate(jobs):
            if k in results:
                continue
            if job.done():  # its result file, or sacct where there is accounting
                results[k] = job.results()[0]
            elif in_queue is not None and job.job_id not in in_queue:
                since = gone_at.setdefault(k, time.monotonic())
                if time.monotonic() - since >= lost_after_s:
                    reason = (
                        f"its Slurm task {job.job_id} ended without handing back its "
                        "result (killed outright: SIGKILL, out of memory?, or its node lost)"
                    )
                    where = {SLURM_TASK: job.job_id}
                    results[k] = lose(task_jobs[k], reason, where, f"task {job.job_id}")
        if len(results) < len(jobs):
            time.sleep(POLL_S)
    return [results[k] for k in range(len(jobs))]


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    """The submitit plugin's Slurm launcher (its keys, its task function); `lost_after_s`:
    how long a task may be out of the queue without its result before it counts as lost."""

    def __init__(self, lost_after_s: float = 30.0, **params: Any) -> None:
        super().__init__(**params)
        self.lost_after_s = float(lost_after_s)

    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        """Submit the jobs as one array (as the plugin does), then wait for each."""
        assert self.config is not None
        log.info("Submitit 'slurm' sweep output dir : %s", self.config.hydra.sweep.dir)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        nums = list(range(initial_job_idx, initial_job_idx + len(job_overrides)))
        for num, overrides in zip(nums, job_overrides, strict=True):
            log.info("\t#%d : %s", num, " ".join(filter_overrides(overrides)))
        n, state = len(nums), Singleton.get_state()
        jobs = submit(
            self.params, self, [list(o) for o in job_overrides], ["hydra.sweep.dir"] * n, nums,
            [f"job_id_for_{num}" for num in nums], [state] * n,
        )  # fmt: skip
        numbered = [[(num, list(o))] for num, o in zip(nums, job_overrides, strict=True)]
        results = wait(jobs, numbered, self.lost_after_s)
        return [r[0] if isinstance(r, list) else r for r in results]  # lost: [its return]

"""Whether a RUNNING run still runs: where it runs, a heartbeat, and reaping the orphans.

A process killed with SIGKILL (the OOM killer, a lost node, `kill -9`) or one whose
tracking server went away cannot end its own run, which would then stay RUNNING forever.
So every run (and every sweep's parent run) records where it runs (host, pid and the pid's
start time, which tells a reused pid apart) and refreshes a heartbeat tag from a
background thread. A RUNNING run is stale when its process is gone (same host: the pid is
dead or now another process) or, seen from another host, when its heartbeat is older than
a threshold; `lenet5-report --reap` ends such runs KILLED with the reason
(`reap`), after which
`lenet5-train resume=<run id>` continues one from its last checkpoint.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lenet5.core.names import (
    FAILURE_REASON,
    HEARTBEAT,
    HOST,
    PID,
    PID_START,
    SLURM_TASK,
    SWEEP_ID,
)
from lenet5.tracking.stores import client_for

log = logging.getLogger("lenet5")
# MLflow is imported inside the functions that use it (see lenet5.tracking.stores).

HEARTBEAT_S = 60.0  # how often a run refreshes its heartbeat
STALE_AFTER_S = 600.0  # a heartbeat older than this, from a process we cannot check, is stale


def pid_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux's /proc), or None: with the
    pid it names one process, even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def slurm_task() -> str | None:
    """The Slurm job this process runs in, as submitit and squeue name it (an array's task:
    <array job>_<task>), or None outside Slurm."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID")


def here() -> dict[str, str]:
    """The tags that say where this process runs, and a first heartbeat."""
    tags = {HOST: socket.gethostname(), PID: str(os.getpid()), HEARTBEAT: f"{time.time():.0f}"}
    start = pid_start(os.getpid())
    if start is not None:
        tags[PID_START] = start
    task = slurm_task()
    if task is not None:  # a lost task's runs are found by it (lenet5.cli.slurm)
        tags[SLURM_TASK] = task
    return tags


def process_alive(pid: int, start: str | None) -> bool:
    """Whether process `pid` of this host runs and is the one that started the run."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    return start is None or pid_start(pid) in (None, start)


class Heartbeat:
    """Refreshes a run's heartbeat tag every `every` seconds, in a daemon thread, until
    stopped. A failed refresh (a tracking server briefly away) is logged, not raised: the
    training itself decides whether the store is lost."""

    def __init__(self, client, run_id: str, every: float = HEARTBEAT_S) -> None:
        self.client, self.run_id, self.every = client, run_id, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="lenet5-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self.client.set_tag(self.run_id, HEARTBEAT, f"{time.time():.0f}")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> Heartbeat:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _beat(self) -> None:
        warned = False
        while not self._stop.wait(self.every):
            try:
                self.client.set_tag(self.run_id, HEARTBEAT, f"{time.time():.0f}")
            except Exception as e:
                if not warned:
                    log.warning("heartbeat of run %s not recorded: %s", self.run_id, e)
                    warned = True


def claim(client, run_id: str) -> None:
    """Record that this process now runs `run_id` (a new run, or one resumed here): one
    request for all its tags."""
    from mlflow.entities import RunTag

    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in here().items()])


def why_stale(run, now: float | None = None, stale_after: float = STALE_AFTER_S) -> str | None:
    """Why a RUNNING run no longer runs, or None while it may still (or has ended)."""
    if run.info.status != "RUNNING":
        return None
    now = time.time() if now is None else now
    tags = run.data.tags
    host, pid = tags.get(HOST), tags.get(PID)
    if host == socket.gethostname() and pid:
        if process_alive(int(pid), tags.get(PID_START)):
            return None  # checked directly: an old heartbeat only means a slow store
        return f"its process {pid} on {host} is gone (killed, or the machine restarted)"
    beats = [float(tags[HEARTBEAT])] if HEARTBEAT in tags else []
    last = max([run.info.start_time / 1000, *beats])
    if now - last <= stale_after:
        return None
    where = f" from {host}" if host else ""
    seen = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last))
    return f"no heartbeat{where} for {now - last:.0f} s (last {seen}; limit {stale_after:.0f} s)"


@dataclass(frozen=True)
class Stale:
    run_id: str
    name: str
    reason: str


def stale_runs(runs, stale_after: float = STALE_AFTER_S) -> list[Stale]:
    """Those of `runs` (MLflow runs) that are RUNNING but whose process is gone."""
    now = time.time()
    found = []
    for run in runs:
        reason = why_stale(run, now, stale_after)
        if reason:
            found.append(Stale(run.info.run_id, run.info.run_name or run.info.run_id, reason))
    return found


def end_run(client, run_id: str, status: str, reason: str) -> None:
    """End a run that did not finish, its cause in the tag `failure_reason`."""
    client.set_tag(run_id, FAILURE_REASON, reason[:5000])
    client.set_terminated(run_id, status)


def reap(client, stale: list[Stale], by: str = "lenet5-report --reap") -> None:
    """End each stale run KILLED, the reason (and who found it) in its `failure_reason`."""
    for s in stale:
        end_run(client, s.run_id, "KILLED", f"reaped by {by}: {s.reason}")


def end_runs_where(
    tracking_uri: str, experiment_id: str, sweep_id: str, tags: dict[str, str], reason: str
) -> list[str]:
    """End KILLED, with `reason`, the runs of sweep `sweep_id` left RUNNING with these `tags`
    (where a process that could not end its own runs ran them); their ids."""
    client = client_for(tracking_uri)
    found = " and ".join(f"tags.`{k}` = '{v}'" for k, v in {SWEEP_ID: sweep_id, **tags}.items())
    runs = client.search_runs([experiment_id], f"{found} and attributes.status = 'RUNNING'")
    for run in runs:
        end_run(client, run.info.run_id, "KILLED", reason)
    return [run.info.run_id for run in runs]

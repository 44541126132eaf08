"""`hydra/launcher=joblib`: parallel jobs, each in a process of its own, so that a worker
killed outright (the kernel's out-of-memory killer, `kill -9`) loses only its own job.

Joblib's loky pool treats a dead worker as the death of the pool: every pending job fails
with `TerminatedWorkerError`, the job on the other worker with it, and the sweep ends in
tracebacks. Here each job runs in a fresh process forked from a server that has already
imported torch and Lightning (multiprocessing's forkserver: a job starts in milliseconds),
at most `n_jobs` at a time. A job whose process dies without handing back its result is
*lost*: its run, which it could not end, is ended KILLED here with the cause, the other jobs
go on, and the sweep's end (`lenet5.cli.sweep`) names the lost jobs and the command that
continues them (the relaunch continues a KILLED run from its checkpoint, in the same run).

The job itself is Hydra's, as the joblib launcher runs it (its `execute_job`: the sweep
config loaded for the job's overrides, then `run_job`); the config keeps joblib's keys, so
`hydra.launcher.n_jobs=N` works as before. With one worker the jobs run in this process, as
joblib does. Hydra loads launchers only from `hydra_plugins`: `hydra_plugins.lenet5_launcher`
names this class there; conf/hydra/launcher/joblib.yaml selects it.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import cloudpickle  # as joblib pickles Hydra's task function (it pickles by value)
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from lenet5.core.names import HOST, PID
from lenet5.tracking import parent
from lenet5.tracking.liveness import end_runs_where

log = logging.getLogger("lenet5.sweep")
# Imported once by the fork server, so each job's process starts with them loaded (torch and
# Lightning, MLflow and its SQL store: under load, 30 s and 8 s of imports a job otherwise).
PRELOAD = [
    "hydra_plugins.hydra_joblib_launcher._core",  # `_execute_job`'s, ready in every job
    "lenet5.cli.train",
    "lenet5.training.build",
    "mlflow.tracking",
    "mlflow.store.tracking.sqlalchemy_store",
]
INTERRUPTED = 130  # a job's exit status when SIGTERM or Ctrl-C stopped it (its run is KILLED)
STOP_WAIT_S = 120  # how long a stopped sweep waits for its jobs to end their runs


@dataclass(frozen=True)
class Lost:
    """A job whose process died before handing back its result."""

    num: int
    overrides: tuple[str, ...]
    reason: str
    runs: tuple[str, ...]

    def __str__(self) -> str:
        return f"#{self.num} ({' '.join(filter_overrides(self.overrides))})"


# The jobs lost in this process's sweep, for its end line (`lenet5.cli.sweep` reads and resets it).
LOST: list[Lost] = []


def cause(exitcode: int | None) -> str:
    """Why a job's process ended without its result, as its run's failure_reason says."""
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        oom = " (out of memory?)" if -exitcode == signal.SIGKILL else ""
        return f"its worker process was killed by {name}{oom}"
    if exitcode == INTERRUPTED:
        return "its worker process was stopped (SIGTERM or Ctrl-C)"
    return f"its worker process exited with status {exitcode} before the job ended"


def n_workers(n_jobs: int | None) -> int:
    """Joblib's meaning of n_jobs: N, or -1 for every core, -2 for all but one, ..."""
    cores = os.cpu_count() or 1
    n = int(n_jobs or 1)
    return max(cores + 1 + n, 1) if n < 0 else max(n, 1)


def die_with_parent() -> None:
    """Ask Linux to send this job SIGTERM when the fork server dies (it does when the sweep's
    main process dies, even by SIGKILL): the job then ends its run KILLED with its checkpoint
    rather than training on unwatched."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the job runs to its end


def _execute_job():
    """Hydra's joblib launcher's `execute_job`, imported where a job runs: importing joblib
    sets KMP_INIT_AT_FORK in the environment, and importing lenet5 changes none."""
    from hydra_plugins.hydra_joblib_launcher._core import execute_job

    return execute_job


def send(conn, value: Any) -> None:
    """Hand a worker's result back to the sweep's process."""
    try:
        conn.send_bytes(cloudpickle.dumps(value))
        conn.close()
    except OSError:  # the sweep's main process is gone: the runs recorded their end
        os._exit(0)


def _job(conn, payload: bytes, job: tuple[int, list[str]]) -> None:
    """A job's process: run the job as joblib would, hand back [its JobReturn]."""
    die_with_parent()
    execute_job = _execute_job()
    try:
        ret = [execute_job(*job, *cloudpickle.loads(payload))]
    except KeyboardInterrupt:  # SIGTERM or Ctrl-C: the training already ended its run KILLED
        os._exit(INTERRUPTED)
    except Exception as e:  # Hydra could not load the job's config: the sweep stops, as before
        ret = e
    send(conn, ret)


def _worker(target, threads: int, *args) -> None:
    """A worker process: torch's CPU threads a share of the cores, as joblib's loky pool gives
    its workers (`n_jobs` processes of torch's default, every core, slow each other down
    several times; a config's `threads=` still sets its own), then `target(*args)`."""
    import torch

    torch.set_num_threads(threads)
    target(*args)


@dataclass(frozen=True)
class Unit:
    """What one worker process runs: `target(conn, payload, arg)` hands back a list of
    JobReturns, one per job in `jobs` ((number, overrides): one job, or a cohort's), which a
    lost unit's record names."""

    key: int
    arg: Any
    jobs: tuple[tuple[int, tuple[str, ...]], ...]


class IsolatedLauncher(Launcher):
    """Runs a sweep's jobs `n_jobs` at a time, each in a process of its own. The other keys
    of joblib's config (backend, prefer, batch_size, ...) are accepted and have no effect."""

    def __init__(self, **joblib: Any) -> None:
        self.joblib = joblib
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config, self.task_function, self.hydra_context = config, task_function, hydra_context

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        workers = n_workers(self.joblib.get("n_jobs"))
        log.info("launching %d jobs, %d at a time, into %s", len(job_overrides), workers, sweep_dir)
        jobs = [(initial_job_idx + i, list(o)) for i, o in enumerate(job_overrides)]
        for idx, overrides in jobs:
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        context = (self.hydra_context, self.config, self.task_function, Singleton.get_state())
        if workers == 1:  # as joblib with one worker: in this process
            execute_job = _execute_job()
            return [execute_job(idx, overrides, *context) for idx, overrides in jobs]
        units = [Unit(idx, (idx, o), ((idx, tuple(o)),)) for idx, o in jobs]
        results = Pool(workers, cloudpickle.dumps(context), _job).run(units)
        return [results[idx][0] for idx, _ in jobs]


class Pool:
    """At most `workers` processes at a time, each running one `Unit` with `target`; a lost
    one is recorded and replaced."""

    def __init__(self, workers: int, payload: bytes, target) -> None:
        self.workers, self.payload, self.target = workers, payload, target
        self.threads = max(1, (os.cpu_count() or 1) // workers)  # each worker's share
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(PRELOAD)
        self.running: dict[int, tuple[Any, Any, Unit]] = {}  # by sentinel
        self.results: dict[int, Any] = {}

    def run(self, units: list[Unit]) -> dict[int, list[JobReturn]]:
        waiting = deque(units)
        try:
            while waiting or self.running:
                while waiting and len(self.running) < self.workers:
                    self._start(waiting.popleft())
                self._collect()
        except BaseException:  # Ctrl-C, SIGTERM (via the sweep's handlers): stop the jobs
            self._stop()
            raise
        for value in self.results.values():
            if isinstance(value, Exception):
                raise value
        return self.results

    def _start(self, unit: Unit) -> None:
        receive, send = self.context.Pipe(duplex=False)
        process = self.context.Process(
            target=_worker,
            args=(self.target, self.threads, send, self.payload, unit.arg),
            name=f"lenet5-{unit.key}",
        )
        process.start()
        send.close()  # the job's end only: EOF here once it is gone
        self.running[process.sentinel] = (process, receive, unit)

    def _collect(self) -> None:
        """Wait until a unit hands back its result or its process ends."""
        pipes = {conn: s for s, (_, conn, _) in self.running.items()}
        for ready in wait([*pipes, *self.running]):
            if ready in pipes:  # read before the process ends: a large result blocks its exit
                self._receive(*self.running[pipes[ready]][1:])
        for sentinel in wait(list(self.running), timeout=0):
            process, conn, unit = self.running.pop(sentinel)
            process.join()
            if unit.key not in self.results and conn.poll():
                self._receive(conn, unit)
            conn.close()
            if unit.key not in self.results:
                self.results[unit.key] = self._lost(unit, process)

    def _receive(self, conn, unit: Unit) -> None:
        with contextlib.suppress(EOFError):  # the process died: its sentinel says so
            self.results[unit.key] = cloudpickle.loads(conn.recv_bytes())

    def _lost(self, unit: Unit, process) -> list[JobReturn]:
        where = {PID: str(process.pid), HOST: socket.gethostname()}
        return lose(unit.jobs, cause(process.exitcode), where, process.name)

    def _stop(self) -> None:
        """SIGTERM to every running job (each ends its run KILLED with its checkpoint), then
        wait for them."""
        for process, *_ in self.running.values():
            if process.is_alive():
                process.terminate()
        for process, conn, _ in self.running.values():
            process.join(STOP_WAIT_S)
            if process.is_alive():
                process.kill()
                process.join()
            conn.close()
        self.running.clear()


def lose(
    jobs: Sequence[tuple[int, Sequence[str]]], reason: str, where: dict[str, str], what: str
) -> list[JobReturn]:
    """Jobs whose process (`what`) ended without handing back their results: end their runs,
    which it left RUNNING with the tags `where`, KILLED with `reason`; each job's value is
    NaN, as for a job that failed; the sweep's end names them (`LOST`)."""
    info = parent.current()
    runs: list[str] = []
    if info is not None:
        try:
            runs = end_runs_where(
                info["tracking_uri"], info["experiment_id"], info["sweep_id"], where, reason
            )
        except Exception as e:  # the store away: the relaunch takes the runs over instead
            log.warning("%s: its runs could not be ended KILLED: %s", what, e)
    plural = "s" if len(runs) > 1 else ""
    ended = f"its run{plural} {', '.join(runs)} ended KILLED" if runs else "it had no run yet"
    rets = []
    for num, overrides in jobs:
        lost = Lost(num, tuple(overrides), reason, tuple(runs))
        LOST.append(lost)
        log.warning("job %s lost: %s; %s; the sweep goes on", lost, reason, ended)
        rets.append(nan_return(overrides))
    return rets


def nan_return(overrides: Sequence[str]) -> JobReturn:
    """The return of a job that ended without its own (lost, or stopped): NaN, as the value
    of a failed job (`lenet5-train`'s job function returns NaN for one)."""
    ret = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
    ret.return_value = float("nan")
    return ret


def continue_command() -> str:
    """The command that continues this sweep: the same one (its login, if it had one, was
    moved out of the command line by `lenet5-train`, so it is not shown)."""
    import shlex

    return shlex.join(["lenet5-train", *sys.argv[1:]])

"""The sweep's command: a Hydra callback that gives each multirun one MLflow parent run.

Registered in conf/config.yaml (`hydra.callbacks.mlflow_sweep`). Before the launcher starts
a job it opens the parent run (`lenet5.tracking.parent`) and hands it to the jobs through the
environment, which the launcher's workers inherit. While the sweep runs, SIGTERM unwinds
like Ctrl-C and an exit hook ends the parent KILLED, so a stopped sweep never leaves its
parent RUNNING; at the end it records the children's counts, puts back every handler and
variable it set, and exits non-zero if any job did not finish.
"""

from __future__ import annotations

import atexit
import logging
from contextlib import ExitStack
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from lenet5.cli import launcher
from lenet5.core.configs import names_as_typed
from lenet5.core.errors import SweepFailed, UserError
from lenet5.core.paths import check_no_login
from lenet5.core.process import environ, interrupts
from lenet5.study.nuisance import check_grid
from lenet5.study.overrides import seed_sampler
from lenet5.tracking import parent
from lenet5.tracking.liveness import HEARTBEAT_S, Heartbeat
from lenet5.tracking.stores import client_for, http_retries

log = logging.getLogger(__name__)


class MLflowSweep(Callback):
    """`resume` (default true): relaunching a sweep that did not finish (same study, same
    overrides) continues it under the same parent run, skipping the jobs that FINISHED."""

    def __init__(self, resume: bool = True) -> None:
        self.resume = resume
        self.state: dict[str, Any] | None = None
        self.scope: ExitStack | None = None  # what the sweep set, put back at its end

    def __getstate__(self) -> dict:
        # Launchers pickle the callbacks into their workers (joblib); the heartbeat's thread
        # and the process state stay with the process that runs the sweep.
        return {**self.__dict__, "scope": None}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_grid(config)  # study.nuisance as the sweep expands it, else SweepFailed
        try:
            check_no_login(str(config.mlflow.tracking_uri))
        except UserError as e:
            raise SweepFailed(f"lenet5: {e}") from None
        seed_sampler(config)  # called before Hydra makes the sweeper, which reads it
        launcher.LOST.clear()  # jobs whose worker process dies, named at the sweep's end
        scope = ExitStack()
        # A sweep stopped by Ctrl-C or SIGTERM must not leave its parent RUNNING.
        scope.enter_context(interrupts())
        scope.enter_context(http_retries(config.mlflow))
        try:
            names_as_typed(config)  # mlflow.experiment_name=2026: "2026", not the int
            self.state = parent.open_sweep(config, self.resume)
        except Exception as e:  # no parent run, no sweep: stop before any job starts
            scope.close()
            raise SweepFailed(f"lenet5: cannot start the sweep's MLflow parent run: {e}") from e
        scope.enter_context(environ(parent.published(self.state)))
        client = client_for(self.state["tracking_uri"])
        every = config.mlflow.get("heartbeat_s", HEARTBEAT_S)
        scope.enter_context(Heartbeat(client, self.state["parent_run_id"], every))
        atexit.register(self._close, "KILLED")
        scope.callback(atexit.unregister, self._close)
        self.scope = scope

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        info = parent.current()
        if info is not None:
            parent.log_progress(info)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        summary = self._close(None)
        lost = launcher.LOST[:]
        if summary and lost and summary["finished"] == summary["expected"]:
            # Every job's run FINISHED: the worker that was "lost" died after its run ended
            # (between the run's end and handing back its result), so nothing is. Failing here
            # would leave a FINISHED parent that the same command does not continue.
            log.warning(
                "%d job(s) FINISHED before their worker process ended (%s): nothing lost",
                len(lost),
                lost[0].reason,
            )
            lost = []
        if summary and lost:
            raise SweepFailed(
                f"sweep {summary['sweep_id']}: {len(lost)} job(s) lost, "
                f"{lost[0].reason}{' (or the like)' if len(lost) > 1 else ''}: "
                f"{', '.join(map(str, lost))}; their runs are KILLED; continue them in those "
                f"runs with the same command: {launcher.continue_command()}"
            )
        if summary and summary["missing"] + summary["failed"]:
            raise SweepFailed(
                f"sweep {summary['sweep_id']}: {summary['finished']} of "
                f"{'?' if summary['expected'] is None else summary['expected']} "
                f"jobs finished, {summary['failed']} failed, {summary['missing']} missing; "
                f"see the FAILED runs under parent run {summary['parent_run_id']} (tag "
                "failure_reason)"
            )

    def _close(self, status: str | None) -> dict | None:
        """Put back what the sweep set, then end its parent run; idempotent."""
        if self.state is None:
            return None
        state, self.state = self.state, None
        if self.scope is not None:
            self.scope.close()  # the jobs' variable, the heartbeat, the handlers
            self.scope = None
        return parent.close_sweep(state, status)

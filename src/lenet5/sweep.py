"""One MLflow parent run per Hydra multirun, created before any job starts.

Registered as a Hydra callback in conf/config.yaml. Before the launcher starts a job it
creates the store, the experiment and the parent run, so parallel jobs find them made
(`lenet5.store` also serializes creating them across any processes). Jobs
find the parent through the environment (the launcher's workers inherit it) and become
its children. At the end, the parent records how many children finished and failed, and
the sweep exits non-zero if any did not finish.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("lenet5.sweep")
ENV = "LENET5_SWEEP"  # JSON: parent run id, sweep id, study, store


class SweepFailed(SystemExit):
    """Ends the sweep with exit status 1 and this message.

    A SystemExit, because Hydra turns any Exception raised in a callback into a warning
    and would exit 0.
    """


def current() -> dict | None:
    """The sweep this process runs a job of, or None outside a sweep."""
    raw = os.environ.get(ENV)
    return json.loads(raw) if raw else None


def child_tags(info: dict | None) -> dict[str, str]:
    """Tags that make a job's run a child of its sweep's parent run."""
    if not info:
        return {}
    return {
        "mlflow.parentRunId": info["parent_run_id"],
        "lenet5.sweep_id": info["sweep_id"],
        "lenet5.study": info["study"],
        "lenet5.role": "trial",  # with lenet5.sweep_id, a filter that selects the trials only
    }


@dataclass(frozen=True)
class Earlier:
    """What a relaunched sweep already has of a job: a FINISHED run's test error (skip the
    job), or a KILLED run to continue from its last checkpoint."""

    error: float | None = None
    resume: str | None = None


def earlier_attempt(cfg: DictConfig, into: Path) -> Earlier | None:
    """In a relaunched sweep (or a requeued task): the earlier run of this exact config (same sweep, same config
    hash) that the job should skip or continue, else None (the job runs afresh).

    A KILLED run with a checkpoint (Ctrl-C, SIGTERM, a scheduler's time limit or `scancel`)
    is continued in the same MLflow run. Other earlier attempts (FAILED, or stopped before
    their first checkpoint) are tagged superseded: they stay in the store (nothing is
    deleted) but no longer count against the sweep. `into`: where a checkpoint kept only by
    the tracking server is downloaded.
    """
    info = current()
    # A relaunched sweep, or a task Slurm requeued (preempted) under the same sweep.
    if not (info and (info.get("resumed") or os.environ.get("SLURM_RESTART_COUNT"))):
        return None
    from lenet5.resume import last_checkpoint
    from lenet5.store import StoreError
    from lenet5.tracking import client_for, config_hash

    client = client_for(info["tracking_uri"])
    twins = client.search_runs(
        [info["experiment_id"]],
        f"tags.`lenet5.sweep_id` = '{info['sweep_id']}' and "
        f"tags.`lenet5.config_hash` = '{config_hash(cfg)}'",
        order_by=["attributes.start_time DESC"],
    )
    finished = [r for r in twins if r.info.status == "FINISHED"]
    if finished:
        log.info("skipping: run %s already FINISHED this job", finished[0].info.run_id)
        return Earlier(error=finished[0].data.metrics["test/error"])
    for run in twins:
        if run.info.status == "KILLED" and run.data.tags.get("lenet5.superseded") != "true":
            try:
                last_checkpoint(client, run, into)
            except StoreError:
                continue  # no checkpoint: it runs again from the start
            log.info("continuing run %s from its last checkpoint", run.info.run_id)
            return Earlier(resume=run.info.run_id)
    for run in twins:
        client.set_tag(run.info.run_id, "lenet5.superseded", "true")
    return None


def sweep_key(cfg: DictConfig) -> str:
    """Identity of a sweep: its study, its command-line overrides and its sweep values."""
    import hashlib

    params = OmegaConf.to_container(cfg.hydra.sweeper.get("params") or OmegaConf.create())
    key = [cfg.mlflow.experiment_name, cfg.study.name, sorted(cfg.hydra.overrides.task), params]
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def overrides_of(cfg: DictConfig) -> dict[str, tuple[Any, bool]]:
    """Each key the command line or the study's sweep (`hydra.sweeper.params`) sets -> (the
    override that counts, set on the command line?): the command line wins, as in Hydra."""
    params = cfg.hydra.sweeper.get("params") or {}
    task = list(cfg.hydra.overrides.task)
    args = [*task, *(f"{k}={v}" for k, v in params.items())]
    out: dict[str, tuple[Any, bool]] = {}
    for i, override in enumerate(OverridesParser.create().parse_overrides(args)):
        out.setdefault(override.get_key_element(), (override, i < len(task)))
    return out


def count_jobs(cfg: DictConfig) -> int:
    """Jobs in the sweep: the product of the sweep values of every override."""
    total = 1
    for override, _ in overrides_of(cfg).values():
        if override.is_sweep_override():
            total *= len(list(override.sweep_string_iterator()))
    return total


def children_counts(client, experiment_id: str, sweep_id: str) -> tuple[int, int]:
    """(finished, failed or killed) children of a sweep; superseded attempts do not count."""
    runs = client.search_runs(
        [experiment_id], f"tags.`lenet5.sweep_id` = '{sweep_id}'", max_results=50_000
    )
    statuses = [
        run.info.status
        for run in runs
        if run.data.tags.get("lenet5.role") != "sweep"
        and run.data.tags.get("lenet5.superseded") != "true"
    ]
    return statuses.count("FINISHED"), statuses.count("FAILED") + statuses.count("KILLED")


class MLflowSweep(Callback):
    """`resume` (default true): relaunching a sweep that did not finish (same study, same
    overrides) continues it under the same parent run, skipping the jobs that FINISHED."""

    def __init__(self, resume: bool = True) -> None:
        self.resume = resume
        self.state: dict[str, Any] | None = None
        self.heartbeat = None  # the parent run's, while the sweep runs (lenet5.liveness)

    def __getstate__(self) -> dict:
        # Launchers pickle the callbacks into their workers (joblib); the heartbeat's thread
        # stays with the process that runs the sweep.
        return {**self.__dict__, "heartbeat": None}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from lenet5.report.nuisance import check_grid

        check_grid(config)  # study.nuisance as the sweep expands it, else SweepFailed
        try:
            self._open(config)
        except Exception as e:  # no parent run, no sweep: stop before any job starts
            raise SweepFailed(f"lenet5: cannot start the sweep's MLflow parent run: {e}") from e

    def _open(self, cfg: DictConfig) -> None:
        from lenet5 import liveness
        from lenet5.config import names_as_typed
        from lenet5.store import bound_http_retries
        from lenet5.tracking import client_for, ensure_experiment

        names_as_typed(cfg)  # mlflow.experiment_name=2026: the experiment "2026", not the int
        bound_http_retries(cfg.mlflow)
        client = client_for(cfg.mlflow.tracking_uri)
        exp_id = ensure_experiment(client, cfg.mlflow.experiment_name, cfg.mlflow.artifact_root)
        study = cfg.study.name or "adhoc"
        expected = count_jobs(cfg)
        key = sweep_key(cfg)
        unfinished = client.search_runs(
            [exp_id],
            f"tags.`lenet5.sweep_key` = '{key}' and attributes.status != 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if self.resume and unfinished:
            parent = unfinished[0]
            run_id, sweep_id = parent.info.run_id, parent.data.tags["lenet5.sweep_id"]
            client.update_run(run_id, status="RUNNING")
            liveness.claim(client, run_id)
            self._publish(client, run_id, sweep_id, study, exp_id, cfg, expected, resumed=True)
            self._view(client, cfg, describe=False)
            log.info("sweep %s resumed: FINISHED jobs are skipped (parent %s)", sweep_id, run_id)
            return
        sweep_id = f"{study}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        tags = {
            "lenet5.sweep_key": key,
            "lenet5.role": "sweep",
            "lenet5.sweep_id": sweep_id,
            "lenet5.study": study,
            "lenet5.factors": json.dumps(list(cfg.study.factors)),
            "lenet5.baseline": json.dumps(OmegaConf.to_container(cfg.study.baseline) or {}),
            "lenet5.expected_runs": str(expected),
            **liveness.here(),
        }
        from lenet5.runinfo import context_tags

        parent = client.create_run(exp_id, run_name=f"sweep {sweep_id}", tags=context_tags(tags))
        run_id = parent.info.run_id
        with tempfile.TemporaryDirectory() as tmp:
            overrides = list(cfg.hydra.overrides.task)
            Path(tmp, "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
            params = cfg.hydra.sweeper.get("params") or OmegaConf.create()
            Path(tmp, "sweep_params.yaml").write_text(OmegaConf.to_yaml(params))
            study_file = cfg.study.get("file")
            if study_file and Path(study_file).is_file():
                client.log_artifact(run_id, study_file, "study")
            client.log_artifacts(run_id, tmp)
        self._publish(client, run_id, sweep_id, study, exp_id, cfg, expected, resumed=False)
        log.info("sweep %s: %d jobs, parent MLflow run %s", sweep_id, expected, run_id)
        self._view(client, cfg, describe=True)

    def _view(self, client, cfg: DictConfig, describe: bool) -> None:
        """Save the sweep's view of the experiment and print its link (lenet5.views)."""
        from lenet5 import views
        from lenet5.report.nuisance import grid

        assert self.state is not None
        self.state["view_factors"] = views.factors_of(cfg)  # kept for the update at the end
        self.state["view_nuisance"] = list(grid(cfg))
        self.state["baseline"] = OmegaConf.to_container(cfg.study.baseline) or {}
        views.publish(client, self.state, describe=describe)

    def _publish(self, client, run_id, sweep_id, study, exp_id, cfg, expected, resumed) -> None:
        """Hand the parent to the jobs (the launcher's workers inherit the environment)."""
        self.state = {
            "parent_run_id": run_id,
            "sweep_id": sweep_id,
            "study": study,
            "experiment_id": exp_id,
            "tracking_uri": cfg.mlflow.tracking_uri,
            "expected": expected,
            "resumed": resumed,
        }
        os.environ[ENV] = json.dumps(self.state)
        from lenet5.liveness import HEARTBEAT_S, Heartbeat

        self.heartbeat = Heartbeat(
            client, run_id, cfg.mlflow.get("heartbeat_s", HEARTBEAT_S)
        ).start()
        # A sweep stopped by Ctrl-C or SIGTERM must not leave its parent RUNNING.
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        atexit.register(self._close, "KILLED")

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        info = current()
        if info is None:
            return
        from lenet5.tracking import client_for

        done, failed = children_counts(
            client_for(info["tracking_uri"]), info["experiment_id"], info["sweep_id"]
        )
        log.info(
            "sweep %s: %d/%d finished, %d failed", info["sweep_id"], done, info["expected"], failed
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        summary = self._close(None)
        if summary and summary["missing"] + summary["failed"]:
            raise SweepFailed(
                f"sweep {summary['sweep_id']}: {summary['finished']} of {summary['expected']} "
                f"jobs finished, {summary['failed']} failed, {summary['missing']} missing; "
                f"see the FAILED runs under parent run {summary['parent_run_id']} (tag "
                "failure_reason)"
            )

    def _close(self, status: str | None) -> dict | None:
        """Record the children's counts on the parent and end it; idempotent."""
        if self.state is None:
            return None
        state, self.state = self.state, None
        os.environ.pop(ENV, None)
        if self.heartbeat is not None:
            self.heartbeat.stop()
        from lenet5.tracking import client_for

        client = client_for(state["tracking_uri"])
        finished, failed = children_counts(client, state["experiment_id"], state["sweep_id"])
        missing = max(state["expected"] - finished - failed, 0)
        run_id = state["parent_run_id"]
        for key, value in (("children_finished", finished), ("children_failed", failed)):
            client.log_metric(run_id, key, value)
        client.log_metric(run_id, "children_missing", missing)
        if "view_factors" in state:  # the view again, with the baseline run for its difference
            from lenet5 import views

            views.publish(client, state, final=True)
        if status is None:
            status = "FINISHED" if finished == state["expected"] else "FAILED"
        client.set_terminated(run_id, status)
        return {**state, "finished": finished, "failed": failed, "missing": missing}


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")

"""A sweep's parent run: one per Hydra multirun, created before any job starts, its jobs'
runs its children.

`open_sweep` creates the store, the experiment and the parent run (or, for a relaunch of a
sweep that did not finish, reopens its parent), so parallel jobs find them made; the jobs find
the parent through the environment variable LENET5_SWEEP, which the sweep's command
(`lenet5.cli.sweep`) sets for its launcher's workers to inherit. `close_sweep` records how
many children finished and failed, and ends the parent. A relaunched job skips what FINISHED
and continues what was KILLED (`earlier_attempt`).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lenet5.core import names
from lenet5.core.errors import StoreError
from lenet5.study.nuisance import grid
from lenet5.study.overrides import count_jobs, sweep_key
from lenet5.tracking import liveness, views
from lenet5.tracking.resume import last_checkpoint
from lenet5.tracking.runinfo import config_hash, context_tags
from lenet5.tracking.stores import client_for, ensure_experiment

log = logging.getLogger("lenet5.sweep")
# What the jobs of a sweep are told of it (LENET5_SWEEP, JSON).
PUBLIC = (
    "parent_run_id",
    "sweep_id",
    "study",
    "experiment_id",
    "tracking_uri",
    "expected",
    "resumed",
)


def current() -> dict | None:
    """The sweep this process runs a job of, or None outside a sweep."""
    raw = os.environ.get(names.SWEEP_ENV)
    return json.loads(raw) if raw else None


def published(state: dict) -> dict[str, str]:
    """The environment that tells a sweep's jobs their parent (`current` reads it)."""
    return {names.SWEEP_ENV: json.dumps({k: state[k] for k in PUBLIC})}


def child_tags(info: dict | None) -> dict[str, str]:
    """Tags that make a job's run a child of its sweep's parent run."""
    if not info:
        return {}
    return {
        names.PARENT_RUN: info["parent_run_id"],
        names.SWEEP_ID: info["sweep_id"],
        names.STUDY: info["study"],
        names.ROLE: names.ROLE_TRIAL,  # with the sweep id, a filter that selects the trials
    }


@dataclass(frozen=True)
class Earlier:
    """What a relaunched sweep already has of a job: a FINISHED run's test error and best
    validation accuracy (skip the job), or a KILLED run to continue from its checkpoint."""

    error: float | None = None
    resume: str | None = None
    val_acc: float | None = None


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
    client = client_for(info["tracking_uri"])
    twins = client.search_runs(
        [info["experiment_id"]],
        f"tags.`{names.SWEEP_ID}` = '{info['sweep_id']}' and "
        f"tags.`{names.CONFIG_HASH}` = '{config_hash(cfg)}'",
        order_by=["attributes.start_time DESC"],
    )
    # Runs of this job left RUNNING by a process that is gone (a worker killed outright, a
    # lost node): ended KILLED here, so that they are continued like any other KILLED run.
    orphans = liveness.stale_runs(twins)
    liveness.reap(client, orphans, by="the relaunch of its sweep")
    taken = {o.run_id for o in orphans}
    # FINISHED with its test error: an older release's Lightning logger marked a run FINISHED
    # when fit ended, so one killed during its test has none, and runs again.
    finished = [
        r for r in twins if r.info.status == "FINISHED" and names.TEST_ERROR in r.data.metrics
    ]
    if finished:
        log.info("skipping: run %s already FINISHED this job", finished[0].info.run_id)
        metrics = finished[0].data.metrics
        return Earlier(error=metrics[names.TEST_ERROR], val_acc=metrics.get(names.FINAL_VAL_ACC))
    for run in twins:
        killed = run.info.status == "KILLED" or run.info.run_id in taken
        if killed and run.data.tags.get(names.SUPERSEDED) != "true":
            try:
                last_checkpoint(client, run, into)
            except StoreError:
                continue  # no checkpoint: it runs again from the start
            log.info("continuing run %s from its last checkpoint", run.info.run_id)
            return Earlier(resume=run.info.run_id)
    for run in twins:
        client.set_tag(run.info.run_id, names.SUPERSEDED, "true")
    return None


def children_counts(client, experiment_id: str, sweep_id: str) -> tuple[int, int]:
    """(finished, failed or killed) children of a sweep; superseded attempts do not count."""
    runs = client.search_runs(
        [experiment_id], f"tags.`{names.SWEEP_ID}` = '{sweep_id}'", max_results=50_000
    )
    statuses = [
        run.info.status
        for run in runs
        if run.data.tags.get(names.ROLE) != names.ROLE_SWEEP
        and run.data.tags.get(names.SUPERSEDED) != "true"
    ]
    return statuses.count("FINISHED"), statuses.count("FAILED") + statuses.count("KILLED")


def open_sweep(cfg: DictConfig, resume: bool = True) -> dict:
    """Create the sweep's parent run, or with `resume` reopen the parent of the same sweep
    (same study, same overrides) that did not finish; save its view in the UI. Returns the
    sweep's state (`PUBLIC` keys, and what `close_sweep` needs)."""
    client = client_for(cfg.mlflow.tracking_uri)
    exp_id = ensure_experiment(client, cfg.mlflow.experiment_name, cfg.mlflow.artifact_root)
    study = cfg.study.name or "adhoc"
    key = sweep_key(cfg)
    unfinished = client.search_runs(
        [exp_id],
        f"tags.`{names.SWEEP_KEY}` = '{key}' and attributes.status != 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    resumed = bool(resume and unfinished)
    expected, searched = count_jobs(cfg), views.searched_of(cfg)
    if resumed:
        run_id, sweep_id = unfinished[0].info.run_id, unfinished[0].data.tags[names.SWEEP_ID]
        client.update_run(run_id, status="RUNNING")
        liveness.claim(client, run_id)
    else:
        sweep_id = f"{study}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        run_id = _create_parent(client, exp_id, cfg, sweep_id, study, key, expected, searched)
    state = {
        "parent_run_id": run_id,
        "sweep_id": sweep_id,
        "study": study,
        "experiment_id": exp_id,
        "tracking_uri": cfg.mlflow.tracking_uri,
        "expected": expected,
        "resumed": resumed,
        # The saved view, written now and again at the end with its baseline run.
        "view_factors": views.factors_of(cfg),
        "view_nuisance": list(dict.fromkeys([*grid(cfg), *searched])),
        "baseline": OmegaConf.to_container(cfg.study.baseline) or {},
    }
    if resumed:
        log.info("sweep %s resumed: FINISHED jobs are skipped (parent %s)", sweep_id, run_id)
    else:
        jobs = "an unknown number of" if state["expected"] is None else state["expected"]
        log.info("sweep %s: %s jobs, parent MLflow run %s", sweep_id, jobs, run_id)
    views.publish(client, state, describe=not resumed)
    return state


def _create_parent(
    client,
    exp_id: str,
    cfg: DictConfig,
    sweep_id: str,
    study: str,
    key: str,
    expected: int | None,
    searched: list[str],
):
    """A new parent run with the study's design as tags, its command line and study file as
    artifacts; its id."""
    tags = {
        names.SWEEP_KEY: key,
        names.ROLE: names.ROLE_SWEEP,
        names.SWEEP_ID: sweep_id,
        names.STUDY: study,
        names.FACTORS: json.dumps(list(cfg.study.factors)),
        names.BASELINE: json.dumps(OmegaConf.to_container(cfg.study.baseline) or {}),
        names.MARGIN: str(cfg.study.margin),
        **liveness.here(),
    }
    if searched:
        tags[names.SEARCHED] = json.dumps(searched)
    if expected is not None:  # no tag where the sweeper cannot say: the report shows "?"
        tags[names.EXPECTED_RUNS] = str(expected)
    parent = client.create_run(exp_id, run_name=f"sweep {sweep_id}", tags=context_tags(tags))
    run_id = parent.info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "overrides.yaml").write_text(OmegaConf.to_yaml(list(cfg.hydra.overrides.task)))
        params = cfg.hydra.sweeper.get("params") or OmegaConf.create()
        Path(tmp, "sweep_params.yaml").write_text(OmegaConf.to_yaml(params))
        study_file = cfg.study.get("file")
        if study_file and Path(study_file).is_file():
            client.log_artifact(run_id, study_file, "study")
        client.log_artifacts(run_id, tmp)
    return run_id


def log_progress(info: dict) -> None:
    """One line after each job: how many of the sweep's jobs finished and failed so far."""
    client = client_for(info["tracking_uri"])
    done, failed = children_counts(client, info["experiment_id"], info["sweep_id"])
    log.info(
        "sweep %s: %d/%s finished, %d failed",
        info["sweep_id"],
        done,
        "?" if info["expected"] is None else info["expected"],
        failed,
    )


def close_sweep(state: dict, status: str | None = None) -> dict:
    """Record the children's counts on the parent run, update its view (with the baseline
    run) and end it: `status`, or FINISHED where every job finished, else FAILED. Returns
    `state` with the counts."""
    client = client_for(state["tracking_uri"])
    finished, failed = children_counts(client, state["experiment_id"], state["sweep_id"])
    expected = state["expected"]  # None: the sweeper could not say how many it launches
    missing = 0 if expected is None else max(expected - finished - failed, 0)
    run_id = state["parent_run_id"]
    for key, value in (
        (names.CHILDREN_FINISHED, finished),
        (names.CHILDREN_FAILED, failed),
        (names.CHILDREN_MISSING, missing),
    ):
        client.log_metric(run_id, key, value)
    views.publish(client, state, final=True)
    if status is None:
        every = finished > 0 and failed == 0 if expected is None else finished == expected
        status = "FINISHED" if every else "FAILED"
    client.set_terminated(run_id, status)
    return {**state, "finished": finished, "failed": failed, "missing": missing}

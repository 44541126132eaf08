"""One MLflow run per training, and its lifecycle.

`tracked_run` owns a run's lifecycle, for every entry point: it opens the run (or reopens
one to resume), records the config, and ends it FINISHED, FAILED with its reason, or KILLED
(Ctrl-C, SIGTERM, a scheduler's stop), never RUNNING. Runs are created with `MlflowClient`
(Lightning's `MLFlowLogger` then logs metrics into the same run by id), so that this module,
not the logger, decides the run's tags, params and final status. Turning signals into
KeyboardInterrupt is the command's job (`lenet5.core.process.interrupts`), not this one's.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from lenet5.core import names, process
from lenet5.core.errors import StoreError
from lenet5.core.paths import local_path
from lenet5.study.design import CHOICE_TAGS, tags_for
from lenet5.tracking import liveness, parent, resume, runinfo
from lenet5.tracking.stores import client_for, ensure_experiment, unreachable

log = logging.getLogger("lenet5")
# MLflow is imported inside the functions that use it (see lenet5.tracking.stores).
_member = threading.local()  # tags of the runs this thread opens (a cohort's member)


@contextmanager
def member_tags(tags: dict[str, str]) -> Iterator[None]:
    """Runs this thread opens while inside get `tags` besides their own (a cohort's member
    is tagged with its cohort: `lenet5.cohort`)."""
    before = getattr(_member, "tags", {})
    _member.tags = {**before, **tags}
    try:
        yield
    finally:
        _member.tags = before


def _extra_tags() -> dict[str, str]:
    return getattr(_member, "tags", {})


def command_overrides() -> list[str]:
    """The command line's overrides of the job being run (none outside Hydra)."""
    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:
        return []


def start_run(cfg: DictConfig, choices: dict, extra_tags: dict[str, str] | None = None):
    """Create the run with its tags (design choices, MLflow's run context, name, colour,
    description: `lenet5.tracking.runinfo`), each design choice as a short param and the
    whole resolved config as params."""
    from mlflow.entities import Param

    client = client_for(cfg.mlflow.tracking_uri)
    try:
        exp_id = ensure_experiment(client, cfg.mlflow.experiment_name, cfg.mlflow.artifact_root)
        choice = tags_for(choices, cfg.seed)
        tags = {**choice, **(extra_tags or {})}
        tags[names.CONFIG_HASH] = runinfo.config_hash(cfg)
        ui = runinfo.ui_tags(cfg, tags, command_overrides(), CHOICE_TAGS)
        name = ui.pop("run_name")
        tags = runinfo.context_tags({**ui, **tags})
        run = client.create_run(exp_id, run_name=name, tags=tags)
    except StoreError:
        raise
    except Exception as e:
        raise StoreError(
            f"cannot open or write the MLflow store {cfg.mlflow.tracking_uri}: {e}. Point "
            "mlflow.tracking_uri=... (or MLFLOW_TRACKING_URI) at a writable location."
        ) from e
    # A short param per design choice and the seed (activation=relu), as their tags: the UI's
    # parallel-coordinates chart and Group-by offer params, not tags.
    flat = {**runinfo.flatten(cfg), **choice}
    params = [Param(k, v) for k, v in flat.items()]
    for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run.info.run_id, params=params[i : i + 100])
    return client, run


@contextmanager
def refusals_recorded(cfg: DictConfig, choices: dict) -> Iterator[None]:
    """In a sweep, a job refused before training (a bad sweep value, absent data) still gets
    a FAILED run with the reason, so the sweep's record shows it; alone, nothing is opened."""
    try:
        yield
    except Exception as e:
        in_sweep = parent.current()
        if in_sweep:
            tags = {**parent.child_tags(in_sweep), **_extra_tags()}
            client, run = start_run(cfg, choices, tags)
            liveness.end_run(client, run.info.run_id, "FAILED", f"{type(e).__name__}: {e}")
        raise


@dataclass
class TrackedRun:
    """An open MLflow run: where its checkpoints go, and what to resume from."""

    client: object
    run_id: str
    tracking_uri: str
    experiment_name: str
    checkpoint_dir: Path
    resume_from: Path | None  # last.ckpt of the run being resumed


def _open(cfg: DictConfig, choices: dict, output_dir: Path):
    """(client, run, the checkpoint to resume from): `resume=` reopens its run, else a new
    run (a child of the sweep's parent in a sweep) is created."""
    if cfg.resume:
        client, run = resume.run_to_resume(cfg.mlflow.tracking_uri, cfg.resume)
        resume_from = resume.last_checkpoint(client, run, output_dir / "resumed_from")
        client.update_run(run.info.run_id, status="RUNNING")
        liveness.claim(client, run.info.run_id)
        return client, run, resume_from
    tags = {**parent.child_tags(parent.current()), **liveness.here(), **_extra_tags()}
    client, run = start_run(cfg, choices, tags)
    return client, run, None


def _record_config(client, run_id: str, cfg: DictConfig, overrides: list[str]) -> None:
    """The resolved config (a password masked) and the command line, as artifacts."""
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "config.yaml").write_text(OmegaConf.to_yaml(runinfo.recordable(cfg)))
        Path(tmp, "overrides.yaml").write_text(OmegaConf.to_yaml(list(overrides)))
        client.log_artifacts(run_id, tmp)


def _server_lost(cfg: DictConfig, run_id: str, checkpoints: Path, lost: str) -> StoreError:
    """Nothing more can be recorded: say where the work is and how to go on."""
    uri = cfg.mlflow.tracking_uri
    kept = (
        f"its checkpoints are kept at {checkpoints}"
        if checkpoints.is_dir()
        else "it stopped before its first checkpoint"
    )
    return StoreError(
        f"the MLflow tracking server {uri} stopped answering ({lost}) during run {run_id}; "
        f"{kept}. When the server answers again: lenet5-report --reap --tracking-uri {uri}, "
        f"then lenet5-train resume={run_id} mlflow.tracking_uri={uri}"
    )


def _ending(e: BaseException) -> tuple[str, str]:
    """(status, reason) of a run that an exception ended. Stopped from outside is KILLED, not
    FAILED: Ctrl-C, SIGTERM (scancel, a time limit), or submitit's own stop at the signal it
    asks Slurm to send before the time limit."""
    if type(e).__name__ == "UncompletedJobError":
        return "KILLED", f"stopped by the scheduler: {e}"
    if isinstance(e, (KeyboardInterrupt, SystemExit)) or process.stopped_by() is not None:
        return "KILLED", "interrupted (Ctrl-C or SIGTERM)"
    return "FAILED", f"{type(e).__name__}: {e}"


@contextmanager
def tracked_run(cfg: DictConfig, choices: dict, overrides: list[str]) -> Iterator[TrackedRun]:
    """Open the run (`resume`: reopen it), record the config, end it with its final status.

    An exception ends the run FAILED with `failure_reason`; KeyboardInterrupt and SystemExit
    (Lightning turns a Ctrl-C into SystemExit after its own graceful shutdown) end it KILLED.
    Checkpoints go straight into the run's artifact folder when it is local, so a crash still
    leaves them referenced from the run; otherwise they are kept in the Hydra output folder
    (its path tagged `lenet5.checkpoint_dir`) and uploaded when the run ends. The run's host,
    pid and a heartbeat are tagged (`lenet5.tracking.liveness`), so a process killed outright
    leaves a run that `lenet5-report --reap` can tell is orphaned. A tracking server that
    stops answering mid-run (after a bounded number of retries) stops the run with its
    checkpoints kept locally and their path in the message.
    """
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    client, run, resume_from = _open(cfg, choices, output_dir)
    run_id = run.info.run_id
    log.info("MLflow run %s (%s) in %s", run.info.run_name, run_id, cfg.mlflow.tracking_uri)
    artifact_dir = local_path(run.info.artifact_uri)
    checkpoints = (artifact_dir or output_dir) / "checkpoints"
    uploaded = artifact_dir is None  # checkpoints kept here, uploaded when the run ends
    try:
        if uploaded:
            client.set_tag(run_id, names.CHECKPOINT_DIR, str(checkpoints))
        if resume_from is None:
            _record_config(client, run_id, cfg, overrides)
        heartbeat_s = cfg.mlflow.get("heartbeat_s", liveness.HEARTBEAT_S)
        with liveness.Heartbeat(client, run_id, heartbeat_s), runinfo.system_metrics(cfg, run_id):
            yield TrackedRun(
                client,
                run_id,
                cfg.mlflow.tracking_uri,
                cfg.mlflow.experiment_name,
                checkpoints,
                resume_from,
            )
        if uploaded:
            client.log_artifacts(run_id, str(checkpoints), "checkpoints")
        client.set_terminated(run_id, "FINISHED")
    except BaseException as e:
        process.release_frames(e)  # a stop inside a store read holds SQLite's lock through them
        lost = unreachable(cfg.mlflow.tracking_uri)
        if lost is not None:
            raise _server_lost(cfg, run_id, checkpoints, lost) from e
        status, reason = _ending(e)
        if uploaded and checkpoints.is_dir():  # resumable from another machine
            client.log_artifacts(run_id, str(checkpoints), "checkpoints")
        liveness.end_run(client, run_id, status, reason)
        if status == "KILLED":
            log.warning("run %s KILLED; continue it with: lenet5-train resume=%s", run_id, run_id)
        raise

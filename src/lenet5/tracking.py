"""MLflow bookkeeping: the store, the experiment, and one run per training.

`tracked_run` owns a run's lifecycle, for every entry point: it opens the run (or reopens
one to resume), records the config, and ends it FINISHED, FAILED with its reason, or KILLED
(Ctrl-C, SIGTERM), never RUNNING. Runs are created with `MlflowClient` (Lightning's
`MLFlowLogger` then logs metrics into the same run by id), so that this module, not the
logger, decides the run's tags, params and final status.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf

from lenet5.config import PROJECT_ROOT
from lenet5.store import (
    StoreError,
    bound_http_retries,
    client_for,
    local_path,
    store_lock,
    unreachable,
)

log = logging.getLogger("lenet5")

# Hydra choice names -> MLflow tag names (the design choices the UI groups and filters by).
CHOICE_TAGS = {
    "model": "preset",
    "model/activation": "activation",
    "model/pooling": "pooling",
    "model/connectivity": "connectivity",
    "model/head": "head",
    "model/loss": "loss",
    "model/init": "init",
    "optimizer": "optimizer",
    "scheduler": "scheduler",
    "data": "data",
    "augment": "augment",
    "recipe": "recipe",
    "model/norm": "norm",
    "model/dropout": "dropout",
}


def ensure_experiment(client, name: str, artifact_root: str | None) -> str:
    """The id of experiment `name`, created with its artifacts under `artifact_root` (None:
    the project's mlruns/artifacts for a local store, the server's own for a tracking server);
    one process at a time creates it, the others then read it (none lands in "Default").
    On a tracking server no lock spans the clients: one that loses the race to create it
    (RESOURCE_ALREADY_EXISTS, seen with 8 clients on PostgreSQL) reads the winner's."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    with store_lock(client.tracking_uri):
        exp = client.get_experiment_by_name(name)  # made while this process waited?
        if exp is not None:
            return exp.experiment_id
        location = None  # a tracking server's own artifact store
        if artifact_root is not None or urlparse(client.tracking_uri).scheme not in (
            "http",
            "https",
        ):
            root = artifact_root or str(PROJECT_ROOT / "mlruns" / "artifacts")
            location = (
                Path(root, name).as_uri() if local_path(root) else f"{root.rstrip('/')}/{name}"
            )
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return client.get_experiment_by_name(name).experiment_id


def recordable(cfg: DictConfig) -> dict:
    """The resolved config as it may be recorded (params, config.yaml): a password written
    into the tracking URI (http://user:secret@host) is masked. Credentials belong in the
    environment (MLFLOW_TRACKING_USERNAME/PASSWORD), which no run records."""
    from urllib.parse import urlsplit, urlunsplit

    plain = OmegaConf.to_container(cfg, resolve=True)
    uri = str(plain.get("mlflow", {}).get("tracking_uri", ""))
    parts = urlsplit(uri)
    if parts.password:
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        plain["mlflow"]["tracking_uri"] = urlunsplit(parts._replace(netloc=netloc))
    return plain


def flatten(cfg: DictConfig) -> dict[str, str]:
    """The resolved config as dotted keys -> strings, the form MLflow params take."""
    out: dict[str, str] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        else:
            out[prefix] = str(node)

    walk(recordable(cfg), "")
    return out


def tags_for(choices: dict[str, str | None], seed: int) -> dict[str, str]:
    tags = {tag: str(choices[group]) for group, tag in CHOICE_TAGS.items() if group in choices}
    tags["seed"] = str(seed)
    return tags


def command_overrides() -> list[str]:
    """The command line's overrides of the job being run (none outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:
        return []


def start_run(cfg: DictConfig, choices: dict, extra_tags: dict[str, str] | None = None):
    """Create the run with its tags (design choices, MLflow's run context, name, colour,
    description: `lenet5.runinfo`), each design choice as a short param and the whole
    resolved config as params."""
    from mlflow.entities import Param

    from lenet5 import runinfo

    client = client_for(cfg.mlflow.tracking_uri)
    try:
        exp_id = ensure_experiment(client, cfg.mlflow.experiment_name, cfg.mlflow.artifact_root)
        choice = tags_for(choices, cfg.seed)
        tags = {**choice, **(extra_tags or {})}
        tags["lenet5.config_hash"] = config_hash(cfg)
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
    flat = {**flatten(cfg), **choice}
    params = [Param(k, v) for k, v in flat.items()]
    for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run.info.run_id, params=params[i : i + 100])
    return client, run


def end_run(client, run_id: str, status: str, reason: str) -> None:
    """End a run that did not finish, its cause in the tag `failure_reason`."""
    client.set_tag(run_id, "failure_reason", reason[:5000])
    client.set_terminated(run_id, status)


@contextmanager
def refusals_recorded(cfg: DictConfig, choices: dict) -> Iterator[None]:
    """In a sweep, a job refused before training (a bad sweep value, absent data) still gets
    a FAILED run with the reason, so the sweep's record shows it; alone, nothing is opened."""
    from lenet5 import sweep

    try:
        yield
    except Exception as e:
        in_sweep = sweep.current()
        if in_sweep:
            client, run = start_run(cfg, choices, sweep.child_tags(in_sweep))
            end_run(client, run.info.run_id, "FAILED", f"{type(e).__name__}: {e}")
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

    def record_device(self, device) -> None:
        """Tag where the run trains: `cpu`, or the GPU's name (runs can share one GPU)."""
        import torch

        name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
        self.client.set_tag(self.run_id, "device", name)

    def logger(self):
        """Lightning's MLflow logger, writing into this run."""
        from pytorch_lightning.loggers import MLFlowLogger

        return MLFlowLogger(
            tracking_uri=self.tracking_uri, experiment_name=self.experiment_name, run_id=self.run_id
        )


@contextmanager
def tracked_run(cfg: DictConfig, choices: dict, overrides: list[str]) -> Iterator[TrackedRun]:
    """Open the run (`resume`: reopen it), record the config, end it with its final status.

    An exception ends the run FAILED with `failure_reason`; Ctrl-C and SIGTERM (made to
    unwind like Ctrl-C here; Lightning turns them into SystemExit after its own graceful
    shutdown) end it KILLED. Checkpoints go straight into the run's artifact folder when it
    is local, so a crash still leaves them referenced from the run; otherwise they are kept
    in the Hydra output folder (its path tagged `lenet5.checkpoint_dir`) and uploaded when
    the run ends. The run's host, pid and a heartbeat are tagged (`lenet5.liveness`), so a
    process killed outright leaves a run that `lenet5-report --reap` can tell is orphaned.
    A tracking server that stops answering mid-run (after a bounded number of retries)
    stops the run with its checkpoints kept locally and their path in the message.
    """
    from hydra.core.hydra_config import HydraConfig

    from lenet5 import liveness, resume, runinfo, sweep
    from lenet5.faults import interrupt_on_signals

    interrupt_on_signals()
    bound_http_retries(cfg.mlflow)
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    if cfg.resume:
        client, run = resume.run_to_resume(cfg.mlflow.tracking_uri, cfg.resume)
        resume_from = resume.last_checkpoint(client, run, output_dir / "resumed_from")
        client.update_run(run.info.run_id, status="RUNNING")
        liveness.claim(client, run.info.run_id)
    else:
        tags = {**sweep.child_tags(sweep.current()), **liveness.here()}
        client, run = start_run(cfg, choices, tags)
        resume_from = None
    run_id = run.info.run_id
    log.info("MLflow run %s (%s) in %s", run.info.run_name, run_id, cfg.mlflow.tracking_uri)
    artifact_dir = local_path(run.info.artifact_uri)
    checkpoints = (artifact_dir or output_dir) / "checkpoints"
    try:
        if artifact_dir is None:
            client.set_tag(run_id, resume.CHECKPOINT_DIR, str(checkpoints))
        if resume_from is None:
            with tempfile.TemporaryDirectory() as tmp:
                Path(tmp, "config.yaml").write_text(OmegaConf.to_yaml(recordable(cfg)))
                Path(tmp, "overrides.yaml").write_text(OmegaConf.to_yaml(list(overrides)))
                client.log_artifacts(run_id, tmp)
        with (
            liveness.Heartbeat(client, run_id, cfg.mlflow.get("heartbeat_s", liveness.HEARTBEAT_S)),
            runinfo.system_metrics(cfg, run_id),
        ):
            yield TrackedRun(
                client,
                run_id,
                cfg.mlflow.tracking_uri,
                cfg.mlflow.experiment_name,
                checkpoints,
                resume_from,
            )
        if artifact_dir is None:
            client.log_artifacts(run_id, str(checkpoints), "checkpoints")
        client.set_terminated(run_id, "FINISHED")
    except BaseException as e:
        lost = unreachable(cfg.mlflow.tracking_uri)
        if lost is not None:  # nothing more can be recorded: say where the work is, how to go on
            kept = (
                f"its checkpoints are kept at {checkpoints}"
                if checkpoints.is_dir()
                else "it stopped before its first checkpoint"
            )
            raise StoreError(
                f"the MLflow tracking server {cfg.mlflow.tracking_uri} stopped answering "
                f"({lost}) during run {run_id}; {kept}. When "
                f"the server answers again: lenet5-report --reap --tracking-uri "
                f"{cfg.mlflow.tracking_uri}, then lenet5-train resume={run_id} "
                f"mlflow.tracking_uri={cfg.mlflow.tracking_uri}"
            ) from e
        # Stopped from outside, not failed: Ctrl-C, SIGTERM (scancel, a time limit), or
        # submitit's own stop at the signal it asks Slurm to send before the time limit.
        scheduler = type(e).__name__ == "UncompletedJobError"
        killed = isinstance(e, (KeyboardInterrupt, SystemExit)) or scheduler
        reason = "interrupted (Ctrl-C or SIGTERM)" if killed else f"{type(e).__name__}: {e}"
        if scheduler:
            reason = f"stopped by the scheduler: {e}"
        if artifact_dir is None and checkpoints.is_dir():  # resumable from another machine
            client.log_artifacts(run_id, str(checkpoints), "checkpoints")
        end_run(client, run_id, "KILLED" if killed else "FAILED", reason)
        if killed:
            log.warning("run %s KILLED; continue it with: lenet5-train resume=%s", run_id, run_id)
        raise


# Keys that change where or how visibly a run is recorded, not what it computes.
NOT_HASHED = ("mlflow", "threads", "resume", "study", "trainer.enable_progress_bar")


def config_hash(cfg: DictConfig) -> str:
    """Identity of what a run computes: equal hashes, same training (given the seed)."""
    import hashlib

    flat = {k: v for k, v in flatten(cfg).items() if not k.startswith(NOT_HASHED)}
    return hashlib.sha256(repr(sorted(flat.items())).encode()).hexdigest()[:16]

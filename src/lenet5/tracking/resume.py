"""`resume=<run id>`: continue a KILLED or FAILED run from its last checkpoint, with the
config it was started with, in the same MLflow run.

The checkpoint is found where the run kept it: its local artifact folder; else the local
folder it trained in (tag `lenet5.checkpoint_dir`, when that folder is on this machine:
a run whose tracking server went away mid-run kept it there); else its uploaded
`checkpoints/` artifacts, downloaded.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lenet5.core.errors import ConfigError, StoreError
from lenet5.core.names import CHECKPOINT_DIR
from lenet5.core.paths import local_path
from lenet5.tracking.liveness import why_stale
from lenet5.tracking.stores import client_for


def run_to_resume(tracking_uri: str, run_id: str):
    """(client, run) of a run that can be resumed, or StoreError saying why not: a KILLED or
    FAILED run, or a RUNNING one whose process is gone (`lenet5.liveness`)."""
    client = client_for(tracking_uri)
    try:
        run = client.get_run(run_id)
    except Exception as e:
        raise StoreError(f"resume={run_id}: no such run in {tracking_uri} ({e})") from e
    if run.info.status == "FINISHED":
        raise StoreError(f"resume={run_id}: the run already FINISHED; there is nothing to resume")
    if run.info.status == "RUNNING" and why_stale(run) is None:
        raise StoreError(
            f"resume={run_id}: the run is still RUNNING (its process is alive, or its heartbeat "
            f"is recent). If it is gone, `lenet5-report --reap --stale-after SECONDS "
            f"--tracking-uri {tracking_uri}` marks it KILLED; then resume it"
        )
    return client, run


def _download(client, run, path: str, into: Path) -> Path | None:
    target = into / Path(path).name
    if target.is_file():
        return target  # fetched already, by this same command
    try:
        got = client.download_artifacts(run.info.run_id, path, str(into))
    except Exception:
        return None
    return Path(got) if Path(got).is_file() else None


def last_checkpoint(client, run, into: Path) -> Path:
    """The run's last.ckpt (downloaded into `into` when only the store has it)."""
    folder = local_path(run.info.artifact_uri)
    candidates = [folder / "checkpoints"] if folder else []
    if CHECKPOINT_DIR in run.data.tags:
        candidates.append(Path(run.data.tags[CHECKPOINT_DIR]))
    for candidate in candidates:
        if (candidate / "last.ckpt").is_file():
            return candidate / "last.ckpt"
    if folder is None:
        into.mkdir(parents=True, exist_ok=True)
        got = _download(client, run, "checkpoints/last.ckpt", into)
        if got is not None:
            return got
    where = " or ".join(str(c / "last.ckpt") for c in candidates) or "its artifacts"
    raise StoreError(
        f"resume={run.info.run_id}: no checkpoint at {where}; the run stopped before its "
        "first epoch ended, so start it again instead"
    )


def stored_config(client, run, into: Path) -> DictConfig:
    """The resolved config the run was started with (its `config.yaml` artifact)."""
    folder = local_path(run.info.artifact_uri)
    if folder is not None and (folder / "config.yaml").is_file():
        return OmegaConf.load(folder / "config.yaml")
    into.mkdir(parents=True, exist_ok=True)
    got = _download(client, run, "config.yaml", into)
    if got is None:
        raise StoreError(f"resume={run.info.run_id}: the run has no config.yaml artifact")
    return OmegaConf.load(got)


def resume_config(cfg: DictConfig, overrides: list[str], into: Path) -> DictConfig:
    """The stored config of the run named by `resume=`, so it continues exactly as it began.

    Only `resume` itself (and where the store is) comes from the command line; anything
    else given there is refused rather than silently mixed into a run already half done.
    """
    extra = [o for o in overrides if not o.startswith(("resume=", "mlflow.", "threads="))]
    if extra:
        raise ConfigError(
            f"resume={cfg.resume} continues the run with its own stored config; drop the other "
            f"overrides {extra} (or start a new run with them)"
        )
    client, run = run_to_resume(cfg.mlflow.tracking_uri, cfg.resume)
    last_checkpoint(client, run, into)  # refused now, not after the data has loaded
    stored = stored_config(client, run, into)
    stored.resume, stored.mlflow = cfg.resume, cfg.mlflow
    if cfg.threads:
        stored.threads = cfg.threads
    return stored

"""What a run records about itself: its config as it may be recorded (a password masked) and
the hash of what it computes; and what it shows in the MLflow UI besides its config: a name
that says how it differs from its baseline, a colour per preset, its context (user, entry
point, git commit through MLflow's own context providers, a dirty-tree flag), the data as
dataset inputs, a one-sentence description, and its final metrics as single values.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import subprocess
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from omegaconf import DictConfig, OmegaConf

from lenet5.core import names
from lenet5.core.paths import PROJECT_ROOT
from lenet5.study import nuisance

log = logging.getLogger("lenet5")
# MLflow is imported inside the functions that use it (see lenet5.tracking.stores).

# Short forms of the design choices in run names (tag -> prefix); a tag not here is its own.
SHORT = {
    "activation": "act",
    "pooling": "pool",
    "connectivity": "c3",
    "optimizer": "opt",
    "scheduler": "sched",
    "augment": "aug",
    "dropout": "drop",
}
# One colour per preset in the runs table and the charts (mlflow.runColor).
PRESET_COLOURS = {
    "paper": "#e4572e",
    "modern": "#29335c",
    "tutorial_tanh_avg": "#f3a712",
    "tutorial_tanh_max": "#669bbc",
}
OTHER_COLOURS = ("#4daf4a", "#984ea3", "#a65628", "#f781bf", "#999999", "#17becf")
SEP = "\u00b7"  # the middle dot between the parts of a run name
ROUND = 6  # digits of a final metric: float32 noise (0.11000001) hidden


def recordable(cfg: DictConfig) -> dict:
    """The resolved config as it may be recorded (params, config.yaml): a password written
    into the tracking URI (http://user:secret@host) is masked. Credentials belong in the
    environment (MLFLOW_TRACKING_USERNAME/PASSWORD), which no run records."""
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


# Keys that change where or how visibly a run is recorded, not what it computes.
NOT_HASHED = ("mlflow", "threads", "resume", "study", "trainer.enable_progress_bar")


def config_hash(cfg: DictConfig) -> str:
    """Identity of what a run computes: equal hashes, same training (given the seed)."""
    flat = {k: v for k, v in flatten(cfg).items() if not k.startswith(NOT_HASHED)}
    return hashlib.sha256(repr(sorted(flat.items())).encode()).hexdigest()[:16]


def run_name(
    tags: dict[str, str], baseline: dict | None, overrides: list[str], groups: dict[str, str]
) -> str:
    """How a run differs from its baseline, then its seed: `paper·s0`, `pool=max·s1`,
    `modern·s2`. In a study the baseline is the study's; alone, it is the preset, and the
    design choices overridden on the command line are named (`paper·pool=max·s0`)."""
    seed = f"s{tags.get('seed', '?')}"
    preset = tags.get("preset", "lenet5")
    if baseline:
        diff = [
            tags.get(f, "?") if f == "preset" else f"{SHORT.get(f, f)}={tags.get(f, '?')}"
            for f, level in baseline.items()
            if tags.get(f) != str(level)
        ]
        return SEP.join([*(diff or [preset]), seed])
    parts = []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        tag = groups.get(key)
        if tag and tag != "preset" and tag in tags:
            part = f"{SHORT.get(tag, tag)}={tags[tag]}"
            if part not in parts:
                parts.append(part)
    return SEP.join([preset, *parts, seed])


def colour(preset: str | None) -> str:
    if preset in PRESET_COLOURS:
        return PRESET_COLOURS[preset]
    return OTHER_COLOURS[sum(map(ord, preset or "")) % len(OTHER_COLOURS)]


def description(cfg: DictConfig, tags: dict[str, str]) -> str:
    """The run's config in a sentence (the run page's Description, Markdown); the first line
    is plain text, as the runs table shows it raw."""
    t = lambda k: tags.get(k, "?")  # noqa: E731
    epochs = cfg.trainer.get("max_epochs")
    extras = [
        f"{k} {tags[k]}"
        for k in ("norm", "dropout", "augment")
        if tags.get(k) not in (None, "none")
    ]
    lines = [
        f"LeNet-5 ({t('preset')} preset): {t('activation')} activation, {t('pooling')} pooling, "
        f"{t('connectivity')} C3, {t('head')} head with {t('loss')} loss, {t('init')} init"
        + "".join(f", {e}" for e in extras)
        + f"; {t('optimizer')} (lr {cfg.optimizer.get('lr', '?')}), batch {cfg.data.batch_size}, "
        f"{epochs} epoch{'s' if epochs != 1 else ''} on {t('data')}, seed {t('seed')}.",
    ]
    if cfg.study.get("name"):
        lines += ["", f"A trial of the study **{cfg.study.name}**."]
    return "\n".join(lines)


@functools.lru_cache(maxsize=1)
def git_dirty() -> str | None:
    """'true' where the project's checkout has uncommitted changes to tracked files, 'false'
    where it is clean, None outside a git checkout (or without git)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return "true" if out.stdout.strip() else "false"


def context_tags(tags: dict[str, str]) -> dict[str, str]:
    """`tags` with MLflow's own run context (mlflow.user, mlflow.source.name/type, and in a
    git checkout mlflow.source.git.commit), resolved by its context registry, and the
    dirty-tree flag `lenet5.git_dirty`."""
    from mlflow.tracking.context.registry import resolve_tags

    dirty = git_dirty()
    extra = {names.GIT_DIRTY: dirty} if dirty is not None else {}
    resolved = resolve_tags({**extra, **tags})
    if "mlflow.source.git.commit" not in resolved:
        # The entry point (lenet5-train in a virtual environment, pytest) sits where git
        # ignores it: resolve the checkout the lenet5 code itself runs from, with MLflow's own
        # git helpers and tag names.
        resolved = {**git_tags(), **resolved}
    return resolved


@functools.lru_cache(maxsize=1)
def git_tags() -> dict[str, str]:
    from mlflow.utils import git_utils
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_BRANCH, MLFLOW_GIT_COMMIT, MLFLOW_GIT_REPO_URL

    code = str(Path(__file__).resolve())
    found = {
        MLFLOW_GIT_COMMIT: git_utils.get_git_commit(code),
        MLFLOW_GIT_BRANCH: git_utils.get_git_branch(code),
        MLFLOW_GIT_REPO_URL: git_utils.get_git_repo_url(code),
    }
    return {k: v for k, v in found.items() if v}


def ui_tags(cfg: DictConfig, tags: dict[str, str], overrides: list[str], groups) -> dict:
    """Name, colour and description of a new run, as create_run takes them."""
    baseline = dict(cfg.study.get("baseline") or {}) if cfg.study.get("name") else {}
    name, extra = run_name(tags, baseline, overrides, groups), nuisance.run_tags(cfg)
    if extra:  # a study's nuisance setting before the seed: act=relu·lr=0.001·s0
        head, _, seed = name.rpartition(SEP)
        name = SEP.join([head, nuisance.short(extra[names.NUISANCE]), seed])
    return {
        "run_name": name,
        "mlflow.runColor": colour(tags.get("preset")),
        "mlflow.note.content": description(cfg, tags),
        **extra,  # lenet5.nuisance: the run's nuisance values (lenet5-report tunes per arm)
    }


def log_datasets(
    client, run_id: str, datamodule, name: str, source: str | None, inputs: list | None = None
) -> None:
    """The data's splits as MLflow dataset inputs (name, digest, shapes) in the contexts
    training, validation and test (`inputs`: `dataset_inputs` made beforehand)."""
    if inputs is None:
        inputs = dataset_inputs(datamodule, name, source)
    if inputs:
        try:
            client.log_inputs(run_id, datasets=inputs)
        except Exception as e:
            # Runs logging the same dataset at once race to create its row on a server's
            # database (PostgreSQL: unique violation on dataset_pk; seen with 2 Slurm tasks):
            # the row exists now, so once more links this run to it.
            log.info("log_inputs of run %s again after: %s", run_id, str(e)[:200])
            client.log_inputs(run_id, datasets=inputs)


def dataset_inputs(datamodule, name: str, source: str | None) -> list:
    """The MLflow dataset inputs of the data's splits (their digests hash the images: ~0.1-0.2
    s for MNIST), not yet logged."""
    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag

    splits = getattr(datamodule, "splits", None) or {}
    inputs = []
    for split, context in (("train", "training"), ("val", "validation"), ("test", "test")):
        if split not in splits or len(splits[split][1]) == 0:
            continue
        x, y = splits[split]
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": a local path
            warnings.simplefilter("ignore", UserWarning)
            ds = mlflow.data.from_numpy(
                x.cpu().numpy(), targets=y.cpu().numpy(), source=source or "lenet5", name=name
            )
        # The entity log_input builds (mlflow.tracking.fluent.log_input), by id here: the run
        # is the client's, not a fluent active run.
        inputs.append(
            DatasetInput(ds._to_mlflow_entity(), [InputTag("mlflow.data.context", context)])
        )
    return inputs


def log_final(client, run_id: str, result: dict, best_val_acc: float | None) -> dict:
    """The run's result once, at step 0, rounded: a bar per run in the UI's charts."""
    from mlflow.entities import Metric

    final = {
        names.FINAL_TEST_ERROR: result.get(names.TEST_ERROR),
        names.FINAL_TEST_ACC: result.get(names.TEST_ACC),
        names.FINAL_VAL_ACC: best_val_acc,
    }
    final = {k: round(float(v), ROUND) for k, v in final.items() if v is not None}
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in final.items()])
    return final


@contextmanager
def system_metrics(cfg: DictConfig, run_id: str) -> Iterator[None]:
    """MLflow's CPU, memory, disk and network charts of the run while it trains, where
    `mlflow.system_metrics` asks for them and psutil is installed (else a warning)."""
    if not cfg.mlflow.get("system_metrics"):
        yield
        return
    try:
        import psutil  # noqa: F401
    except ImportError:
        log.warning("mlflow.system_metrics=true needs psutil (pip install -e .[system]): skipped")
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(
        run_id, sampling_interval=2, tracking_uri=cfg.mlflow.tracking_uri
    )
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()

"""Reading a sweep back from the MLflow store.

Only reads (the CLI alone logs the report files to the parent run), and rides out the
SQLite lock of a writer, so it is safe while the sweep is still writing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lenet5.core import names
from lenet5.core.paths import sqlite_path
from lenet5.core.process import environ
from lenet5.report.inference import DEFAULT_MARGIN
from lenet5.report.stats import Counts, Run, counts
from lenet5.tracking.stores import client_for, store_ready

# What the report reads of each run: the test error it compares, the best validation
# accuracy a tuned arm is selected on, and the per-epoch validation accuracy of the curves.
ERROR_METRIC, VAL_METRIC, CURVE_METRIC = names.TEST_ERROR, names.FINAL_VAL_ACC, names.VAL_ACC
ENDED = ("FINISHED", "FAILED", "KILLED")


class ReportError(RuntimeError):
    """Nothing to report on (no store, experiment or sweep); the message says what exists."""


@dataclass(frozen=True)
class SweepInfo:
    """Everything the report shows about one sweep, read in one pass."""

    study: str
    sweep_id: str
    parent_run_id: str
    parent_status: str
    experiment: str
    tracking_uri: str
    factors: list[str]
    baseline: dict[str, str]  # factor -> its baseline level
    children: list[Run]  # superseded attempts left out
    counts: Counts
    searched: list[str] = field(default_factory=list)  # config values the sweep varies
    margin: float = DEFAULT_MARGIN  # study.margin: the smallest difference that matters
    adaptive: dict | None = None  # {looks, alpha} where the sweep ran with adaptive seeds


def _locked(e: BaseException | None) -> bool:
    while e is not None:
        if "database is locked" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def retry(fn: Callable, *args, tries: int = 6, **kwargs):
    """Call fn, retrying briefly while a writer holds the SQLite lock."""
    for attempt in range(tries):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if attempt == tries - 1 or not _locked(e):
                raise
            time.sleep(0.1 * 2**attempt)
    raise AssertionError("unreachable")


def search_all(client, exp_id: str, filter_string: str, order_by=None) -> list:
    """Every matching run, page by page (read-only)."""
    runs, token = [], None
    while True:
        page = retry(
            client.search_runs,
            [exp_id],
            filter_string=filter_string,
            max_results=1000,
            order_by=order_by,
            page_token=token,
        )
        runs += list(page)
        token = page.token
        if not token:
            return runs


def plain(run, searched: list[str] = ()) -> Run:
    """The fields the report uses, detached from MLflow's entities."""
    return Run(
        settings={k: run.data.params.get(k, "?") for k in searched},
        run_id=run.info.run_id,
        name=run.info.run_name or run.info.run_id,
        status=run.info.status,
        tags=dict(run.data.tags),
        error=run.data.metrics.get(ERROR_METRIC),
        val=run.data.metrics.get(VAL_METRIC, run.data.metrics.get(CURVE_METRIC)),
        flops=run.data.metrics.get(names.FINAL_TRAIN_FLOPS),
    )


def open_experiment(uri: str, name: str):
    db = sqlite_path(uri)
    # Opening a missing SQLite file would create an empty store: refuse instead.
    if db is not None and not db.is_file():
        raise ReportError(f"no MLflow store at {db} (tracking URI {uri}): run a sweep first")
    if db is not None and not store_ready(db):
        raise ReportError(f"the MLflow store {db} is still being created; try again in a moment")
    # Opening checks the schema (a read that can meet a lock); reading needs no write access.
    client = retry(client_for, uri, write=False)
    exp = retry(client.get_experiment_by_name, name)
    if exp is None:
        existing = [e.name for e in retry(client.search_experiments)]
        raise ReportError(
            f"no experiment {name!r} in {uri}; experiments there: {', '.join(existing) or 'none'}"
        )
    return client, exp


def _describe(sweeps: list) -> str:
    if not sweeps:
        return "none"
    return ", ".join(
        f"{s.data.tags.get(names.SWEEP_ID)} (study {s.data.tags.get(names.STUDY)}, {s.info.status})"
        for s in sweeps[:20]
    ) + (f", ... ({len(sweeps)} in all)" if len(sweeps) > 20 else "")


def find_sweep(client, exp, sweep_id: str | None = None, study: str | None = None):
    """The parent run asked for (latest first); ReportError naming what exists otherwise."""
    sweeps = search_all(
        client,
        exp.experiment_id,
        f"tags.`{names.ROLE}` = '{names.ROLE_SWEEP}'",
        order_by=["attributes.start_time DESC"],
    )
    if sweep_id is not None:
        hits = [s for s in sweeps if s.data.tags.get(names.SWEEP_ID) == sweep_id]
        what = f"sweep id {sweep_id!r}"
    elif study is not None:
        hits = [s for s in sweeps if s.data.tags.get(names.STUDY) == study]
        what = f"study {study!r}"
    else:
        hits, what = sweeps, "any sweep"
    if not hits:
        raise ReportError(
            f"no sweep parent run (tag {names.ROLE}={names.ROLE_SWEEP}) with {what} in experiment "
            f"{exp.name!r}; sweeps there: {_describe(sweeps)}"
        )
    return hits[0]


def design_of(parent) -> tuple[list[str], dict[str, str], int | None]:
    """(factors, baseline, expected number of runs) from the parent run's tags."""
    tags = parent.data.tags
    try:
        factors = json.loads(tags[names.FACTORS])
        baseline = json.loads(tags[names.BASELINE])
    except (KeyError, json.JSONDecodeError) as e:
        raise ReportError(
            f"sweep parent run {parent.info.run_id} lacks a valid {names.FACTORS} / "
            f"{names.BASELINE} tag (JSON): {e}"
        ) from e
    missing = [f for f in factors if f not in baseline]
    if missing:
        raise ReportError(f"{names.BASELINE} of run {parent.info.run_id} lacks {missing}")
    try:
        expected = int(tags[names.EXPECTED_RUNS])
    except (KeyError, ValueError):
        expected = None
    return factors, {f: str(baseline[f]) for f in factors}, expected


def children_of(client, exp_id: str, parent_id: str, searched: list[str] = ()) -> list[Run]:
    runs = search_all(
        client,
        exp_id,
        f"tags.`{names.PARENT_RUN}` = '{parent_id}'",
        order_by=["attributes.start_time ASC"],
    )
    # Earlier failed attempts that a relaunch of the sweep re-ran are kept but not counted.
    return [plain(r, searched) for r in runs if r.data.tags.get(names.SUPERSEDED) != "true"]


def collect(client, exp, parent, uri: str) -> SweepInfo:
    """The sweep of `parent`: its design (from the parent's tags), its children, counts."""
    factors, baseline, expected = design_of(parent)
    searched = json.loads(parent.data.tags.get(names.SEARCHED, "[]"))
    children = children_of(client, exp.experiment_id, parent.info.run_id, searched)
    return SweepInfo(
        study=parent.data.tags.get(names.STUDY, "?"),
        sweep_id=parent.data.tags.get(names.SWEEP_ID, "?"),
        parent_run_id=parent.info.run_id,
        parent_status=parent.info.status,
        experiment=exp.name,
        tracking_uri=uri,
        factors=factors,
        baseline=baseline,
        children=children,
        counts=counts(children, expected),
        searched=searched,
        margin=float(parent.data.tags.get(names.MARGIN, DEFAULT_MARGIN)),
        adaptive=json.loads(parent.data.tags[names.ADAPTIVE])
        if names.ADAPTIVE in parent.data.tags
        else None,
    )


def watch(client, exp, parent, uri: str, every: float):
    """Print progress every `every` seconds until the parent run has ended; Ctrl-C stops."""
    try:
        while True:
            info = collect(client, exp, parent, uri)
            c = info.counts
            print(
                f"[{time.strftime('%H:%M:%S')}] {info.sweep_id}: {c.finished} finished, "
                f"{c.failed + c.killed} failed, {c.running} running, "
                f"{c.missing} missing of {c.expected or '?'} ({parent.info.status})",
                flush=True,
            )
            if parent.info.status in ENDED:
                return parent
            time.sleep(every)
            parent = retry(client.get_run, parent.info.run_id)
    except KeyboardInterrupt:
        print("watch stopped; reporting what is there", flush=True)
        return retry(client.get_run, parent.info.run_id)


def curves(client, runs: list[Run], metric: str = CURVE_METRIC) -> dict[str, list[float]]:
    """Each run's `metric` history in step order (one value per epoch for val/acc)."""
    out = {}
    for r in runs:
        if not r.done:
            continue
        history = retry(client.get_metric_history, r.run_id, metric)
        by_step = {m.step: m.value for m in history}  # a resumed run may log a step twice
        out[r.run_id] = [by_step[s] for s in sorted(by_step)]
    return out


def download(client, run_id: str, path: str, into: str) -> str:
    """An artifact of a run into a local folder, without MLflow's progress bar on stderr (a
    report downloads one per run)."""
    with environ({"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}):
        return retry(client.download_artifacts, run_id, path, into)


def predictions(client, run_id: str) -> tuple[list[int], list[int]] | None:
    """A run's per-example test predictions (predictions/test.csv): (targets, predicted) in
    the test set's order; None where the run has none (runs recorded before they existed)."""
    import csv
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = download(client, run_id, "predictions/test.csv", tmp)
        except Exception:
            return None
        with open(path) as f:
            rows = list(csv.DictReader(f))
    return [int(r["target"]) for r in rows], [int(r["predicted"]) for r in rows]

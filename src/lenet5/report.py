"""`lenet5-report`: which design choices of a sweep matter, read from the MLflow store.

    lenet5-report                        # the latest sweep of experiment "lenet5"
    lenet5-report --study one_at_a_time  # the latest sweep of that study
    lenet5-report --sweep-id ID --out DIR
    lenet5-report --watch 30             # follow a running sweep, report when it ends

A sweep is one parent run (tag `lenet5.role=sweep`) whose children each train one job. For
each factor of the study the report compares the levels of that factor with the other
factors at their baseline levels (simple effects; for a one-at-a-time study these are all
its contrasts), and, for a factorial study, over all runs (main effects). Test errors are
in %; differences to the baseline level come with Welch's 95% confidence interval.

Only reads the store, except for logging the report files as artifacts of the parent run,
so it is safe to run while the sweep is still writing.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from statistics import mean, stdev

from lenet5.config import PROJECT_ROOT

SECTIONS = {
    "simple": "Simple effects at the baseline (other factors at their baseline levels)",
    "main": "Main effects (all runs at each level, marginal over the other factors)",
}
ERROR_METRIC = "test/error"
ENDED = ("FINISHED", "FAILED", "KILLED")
CSV_COLUMNS = [
    "sweep_id",
    "study",
    "section",
    "factor",
    "level",
    "is_baseline",
    "n",
    "mean_error_pct",
    "std_error_pct",
    "mean_ci95_half_pct",
    "diff_pct",
    "diff_ci95_low_pct",
    "diff_ci95_high_pct",
]


class ReportError(RuntimeError):
    """Nothing to report on (no store, experiment or sweep); the message says what exists."""


# ---------------------------------------------------------------- statistics (pure) ----


def _t975(df: float) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def mean_ci_half(values: list[float]) -> float | None:
    """Half-width of the 95% t interval of the mean; None below two values."""
    if len(values) < 2:
        return None
    return _t975(len(values) - 1) * stdev(values) / math.sqrt(len(values))


def welch_ci(a: list[float], b: list[float]) -> tuple[float, float] | None:
    """95% Welch t interval of mean(a) - mean(b); None unless both have two values."""
    if len(a) < 2 or len(b) < 2:
        return None
    diff = mean(a) - mean(b)
    va, vb = stdev(a) ** 2 / len(a), stdev(b) ** 2 / len(b)
    if va + vb == 0:  # identical values on both sides: no spread, Welch's df is 0/0
        return diff, diff
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = _t975(df) * math.sqrt(va + vb)
    return diff - half, diff + half


def _level_row(section, factor, level, is_base, errors, base_errors) -> dict:
    pct = [100 * e for e in errors]
    base_pct = [100 * e for e in base_errors]
    row = {
        "section": section,
        "factor": factor,
        "level": level,
        "is_baseline": is_base,
        "n": len(pct),
        "mean": mean(pct) if pct else None,
        "std": stdev(pct) if len(pct) > 1 else None,
        "ci_half": mean_ci_half(pct),
        "diff": None,
        "diff_low": None,
        "diff_high": None,
    }
    if is_base:
        row["diff"] = 0.0 if pct else None
    elif pct and base_pct:
        row["diff"] = mean(pct) - mean(base_pct)
        ci = welch_ci(pct, base_pct)
        if ci is not None:
            row["diff_low"], row["diff_high"] = ci
    return row


def _sort_key(row: dict):
    # By mean error, best first; levels without finished runs last.
    return (row["mean"] is None, row["mean"] or 0.0, str(row["level"]))


def off_baseline(tags: dict, factors: list[str], baseline: dict) -> int:
    return sum(tags.get(f) != baseline[f] for f in factors)


def is_factorial(runs: Iterable[dict], factors: list[str], baseline: dict) -> bool:
    """True when some run moves two or more factors off their baseline at once."""
    return any(off_baseline(r["tags"], factors, baseline) >= 2 for r in runs)


def _errors(done, factors, baseline, factor, level, marginal: bool) -> list[float]:
    """Errors of the runs at `level` of `factor`: all of them (marginal), or only those
    whose other factors sit at their baseline (the simple effect at the baseline)."""
    return [
        r["error"]
        for r in done
        if r["tags"].get(factor) == level
        and (marginal or all(r["tags"].get(g) == baseline[g] for g in factors if g != factor))
    ]


def summarize(runs: list[dict], factors: list[str], baseline: dict[str, str]) -> list[dict]:
    """One row per section x factor x level; errors in %, levels sorted by mean error.

    `runs`: dicts with `status`, `tags` (design choice -> level) and `error` (test error as
    a fraction, None when not logged). Only FINISHED runs with an error enter the
    statistics; the others still contribute their levels, so a level whose runs have not
    finished shows up with n = 0 instead of silently disappearing.
    """
    done = [r for r in runs if r["status"] == "FINISHED" and r["error"] is not None]
    sections = ["simple", "main"] if is_factorial(runs, factors, baseline) else ["simple"]
    rows = []
    for section in sections:
        for factor in factors:
            levels = {r["tags"].get(factor) for r in runs} | {baseline[factor]}
            levels.discard(None)

            marginal = section == "main"
            base_errors = _errors(done, factors, baseline, factor, baseline[factor], marginal)
            block = [
                _level_row(
                    section,
                    factor,
                    lvl,
                    lvl == baseline[factor],
                    _errors(done, factors, baseline, factor, lvl, marginal),
                    base_errors,
                )
                for lvl in levels
            ]
            rows += sorted(block, key=_sort_key)
    return rows


def counts(children: list[dict], expected: int | None) -> dict[str, int | None]:
    by = {s: sum(r["status"] == s for r in children) for s in ("FINISHED", "FAILED", "KILLED")}
    running = len(children) - sum(by.values())  # RUNNING or SCHEDULED
    not_started = max(0, expected - len(children)) if expected is not None else None
    return {
        "finished": by["FINISHED"],
        "failed": by["FAILED"],
        "killed": by["KILLED"],
        "running": running,
        "not_started": not_started,
        "missing": running + (not_started or 0),
        "expected": expected,
    }


# ---------------------------------------------------------------------- formatting ----


def _num(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.2f}" if signed else f"{x:.2f}"


def _cells(row: dict) -> list[str]:
    level = f"{row['level']} (baseline)" if row["is_baseline"] else str(row["level"])
    if row["is_baseline"]:
        diff, ci = "-", "-"
    else:
        diff = _num(row["diff"], signed=True)
        ci = (
            "n/a"
            if row["diff_low"] is None
            else f"[{row['diff_low']:+.2f}, {row['diff_high']:+.2f}]"
        )
    return [level, str(row["n"]), _num(row["mean"]), _num(row["std"]), diff, ci]


def _table_header(factor: str) -> list[str]:
    return [factor, "n", "mean %", "std %", "diff %", "95% CI of diff (Welch)"]


def _blocks(rows: list[dict]):
    """(section, factor, rows) in report order."""
    seen: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        seen.setdefault((row["section"], row["factor"]), []).append(row)
    for (section, factor), block in seen.items():
        yield section, factor, block


def header_lines(info: dict) -> list[str]:
    c = info["counts"]
    expected = "?" if c["expected"] is None else c["expected"]
    lines = [
        f"study: {info['study']}",
        f"sweep id: {info['sweep_id']}",
        f"parent run: {info['parent_run_id']} ({info['parent_status']})",
        f"experiment: {info['experiment']} ({info['tracking_uri']})",
        f"factors: {', '.join(info['factors'])}",
        "baseline: " + ", ".join(f"{f}={info['baseline'][f]}" for f in info["factors"]),
        f"runs: {c['finished']} finished / {c['failed']} failed / {c['killed']} killed / "
        f"{c['running']} running / {expected} expected",
    ]
    if c["missing"]:
        not_started = "?" if c["not_started"] is None else c["not_started"]
        lines.append(
            f"sweep incomplete: {c['missing']} runs still missing "
            f"({c['running']} running, {not_started} not started); reporting what is there"
        )
    return lines


def _problem_lines(info: dict) -> list[str]:
    lines = [
        f"{r['name']} [{r['status']}]: {r['tags'].get('failure_reason', 'no failure_reason tag')}"
        for r in info["children"]
        if r["status"] in ("FAILED", "KILLED")
    ]
    lines += [
        f"{r['name']} [FINISHED]: no {ERROR_METRIC} metric"
        for r in info["children"]
        if r["status"] == "FINISHED" and r["error"] is None
    ]
    return lines


def render_text(info: dict, rows: list[dict]) -> str:
    out = [*header_lines(info), ""]
    problems = _problem_lines(info)
    if problems:
        out += ["Failed or incomplete runs (excluded from the statistics):"]
        out += [f"  {p}" for p in problems] + [""]
    tables: dict[str, list[list[list[str]]]] = {}
    for section, factor, block in _blocks(rows):
        tables.setdefault(section, []).append([_table_header(factor), *(_cells(r) for r in block)])
    for section, section_tables in tables.items():
        out += [SECTIONS[section] + ", test error in %:", ""]
        # One set of column widths per section, so the factors' tables line up.
        lines = [line for table in section_tables for line in table]
        widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
        for table in section_tables:
            for line in table:
                # Level left-aligned, numbers right-aligned so the decimals line up.
                first = line[0].ljust(widths[0])
                rest = [cell.rjust(w) for cell, w in zip(line[1:], widths[1:], strict=True)]
                out.append("  " + "  ".join([first, *rest]).rstrip())
            out.append("")
    if not rows:
        out.append("no runs to compare yet")
    return "\n".join(out).rstrip() + "\n"


def render_markdown(info: dict, rows: list[dict]) -> str:
    out = [f"# Sweep report: {info['study']} ({info['sweep_id']})", ""]
    out += [f"- {line}" for line in header_lines(info)] + [""]
    problems = _problem_lines(info)
    if problems:
        out += ["## Failed or incomplete runs (excluded)", ""]
        out += [f"- {p}" for p in problems] + [""]
    current = None
    for section, factor, block in _blocks(rows):
        if section != current:
            out += [f"## {SECTIONS[section]}", "", "Test error in %.", ""]
            current = section
        out += [f"### {factor}", ""]
        out.append("| " + " | ".join(_table_header("level")) + " |")
        out.append("| --- " + "| ---: " * 5 + "|")
        for row in block:
            cells = _cells(row)
            if row["is_baseline"]:
                cells[0] = f"**{cells[0]}**"
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def write_csv(path: Path, info: dict, rows: list[dict]) -> None:
    keys = ["mean", "std", "ci_half", "diff", "diff_low", "diff_high"]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for r in rows:
            nums = ["" if r[k] is None else f"{r[k]:.6g}" for k in keys]
            w.writerow(
                [
                    info["sweep_id"],
                    info["study"],
                    r["section"],
                    r["factor"],
                    r["level"],
                    int(r["is_baseline"]),
                    r["n"],
                    *nums,
                ]
            )


def write_chart(path: Path, info: dict, rows: list[dict]) -> None:
    """Mean test error per level, one panel per section x factor, bars = 95% CI of the mean."""
    # Figure without pyplot: the Agg canvas, no global backend state, no display needed.
    from matplotlib.figure import Figure

    blocks = list(_blocks(rows))
    sections = list(dict.fromkeys(s for s, _, _ in blocks)) or ["simple"]
    factors = info["factors"]
    fig = Figure(figsize=(3.2 * max(1, len(factors)), 3.4 * len(sections)), layout="constrained")
    # A shared y axis per section makes the factors' effects comparable at a glance.
    axes = fig.subplots(len(sections), max(1, len(factors)), squeeze=False, sharey="row")
    for ax in axes.flat:
        ax.set_axis_off()
    for section, factor, block in blocks:
        ax = axes[sections.index(section)][factors.index(factor)]
        ax.set_axis_on()
        shown = [r for r in block if r["mean"] is not None]
        x = range(len(shown))
        for i, r in zip(x, shown, strict=True):
            ax.errorbar(
                i,
                r["mean"],
                yerr=r["ci_half"] or 0,
                fmt="o",
                capsize=4,
                color="tab:red" if r["is_baseline"] else "tab:blue",
            )
            if r["is_baseline"]:
                ax.axhline(r["mean"], color="tab:red", lw=0.8, ls="--")
        ax.set_xticks(
            list(x),
            [f"{r['level']}\n(n={r['n']})" for r in shown],
            rotation=0 if len(shown) <= 3 else 25,
            fontsize=8,
        )
        ax.set_xlim(-0.6, max(len(shown), 1) - 0.4)
        ax.set_title(f"{factor} ({section})", fontsize=10)
        if factors.index(factor) == 0:
            ax.set_ylabel("test error (%)")
        ax.grid(axis="y", alpha=0.3)
        if not shown:
            ax.text(0.5, 0.5, "no finished runs", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(
        f"{info['study']} / {info['sweep_id']}: mean test error, bars = 95% CI of the mean "
        "(red = baseline)",
        fontsize=10,
    )
    fig.savefig(path, dpi=110)


# ------------------------------------------------------------------- store access ----


def _locked(e: BaseException) -> bool:
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


def plain(run) -> dict:
    """The fields the report uses, detached from MLflow's entities."""
    return {
        "run_id": run.info.run_id,
        "name": run.info.run_name or run.info.run_id,
        "status": run.info.status,
        "tags": dict(run.data.tags),
        "error": run.data.metrics.get(ERROR_METRIC),
    }


def tracking_uri(flag: str | None) -> str:
    return (
        flag
        or os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{PROJECT_ROOT}/mlruns/mlflow.db"
    )


def open_experiment(uri: str, name: str):
    from lenet5.tracking import client_for, sqlite_path, store_ready

    db = sqlite_path(uri)
    # Opening a missing SQLite file would create an empty store: refuse instead.
    if db is not None and not db.is_file():
        raise ReportError(f"no MLflow store at {db} (tracking URI {uri}): run a sweep first")
    if db is not None and not store_ready(db):
        raise ReportError(f"the MLflow store {db} is still being created; try again in a moment")
    client = retry(client_for, uri)  # opening checks the schema: a read that can meet a lock
    exp = retry(client.get_experiment_by_name, name)
    if exp is None:
        names = [e.name for e in retry(client.search_experiments)]
        raise ReportError(
            f"no experiment {name!r} in {uri}; experiments there: {', '.join(names) or 'none'}"
        )
    return client, exp


def _describe(sweeps: list) -> str:
    if not sweeps:
        return "none"
    return ", ".join(
        f"{s.data.tags.get('lenet5.sweep_id')} (study {s.data.tags.get('lenet5.study')}, "
        f"{s.info.status})"
        for s in sweeps[:20]
    ) + (f", ... ({len(sweeps)} in all)" if len(sweeps) > 20 else "")


def find_sweep(client, exp, sweep_id: str | None = None, study: str | None = None):
    """The parent run asked for (latest first); ReportError naming what exists otherwise."""
    sweeps = search_all(
        client,
        exp.experiment_id,
        "tags.`lenet5.role` = 'sweep'",
        order_by=["attributes.start_time DESC"],
    )
    if sweep_id is not None:
        hits = [s for s in sweeps if s.data.tags.get("lenet5.sweep_id") == sweep_id]
        what = f"sweep id {sweep_id!r}"
    elif study is not None:
        hits = [s for s in sweeps if s.data.tags.get("lenet5.study") == study]
        what = f"study {study!r}"
    else:
        hits, what = sweeps, "any sweep"
    if not hits:
        raise ReportError(
            f"no sweep parent run (tag lenet5.role=sweep) with {what} in experiment "
            f"{exp.name!r}; sweeps there: {_describe(sweeps)}"
        )
    return hits[0]


def design_of(parent) -> tuple[list[str], dict[str, str], int | None]:
    tags = parent.data.tags
    try:
        factors = json.loads(tags["lenet5.factors"])
        baseline = json.loads(tags["lenet5.baseline"])
    except (KeyError, json.JSONDecodeError) as e:
        raise ReportError(
            f"sweep parent run {parent.info.run_id} lacks a valid lenet5.factors / "
            f"lenet5.baseline tag (JSON): {e}"
        ) from e
    missing = [f for f in factors if f not in baseline]
    if missing:
        raise ReportError(f"lenet5.baseline of run {parent.info.run_id} lacks {missing}")
    try:
        expected = int(tags["lenet5.expected_runs"])
    except (KeyError, ValueError):
        expected = None
    return factors, {f: str(baseline[f]) for f in factors}, expected


def children_of(client, exp_id: str, parent_id: str) -> list[dict]:
    runs = search_all(
        client,
        exp_id,
        f"tags.`mlflow.parentRunId` = '{parent_id}'",
        order_by=["attributes.start_time ASC"],
    )
    # Earlier failed attempts that a relaunch of the sweep re-ran are kept but not counted.
    return [plain(r) for r in runs if r.data.tags.get("lenet5.superseded") != "true"]


def collect(client, exp, parent, uri: str) -> dict:
    """Everything the report shows about one sweep, read in one pass."""
    factors, baseline, expected = design_of(parent)
    children = children_of(client, exp.experiment_id, parent.info.run_id)
    return {
        "study": parent.data.tags.get("lenet5.study", "?"),
        "sweep_id": parent.data.tags.get("lenet5.sweep_id", "?"),
        "parent_run_id": parent.info.run_id,
        "parent_status": parent.info.status,
        "experiment": exp.name,
        "tracking_uri": uri,
        "factors": factors,
        "baseline": baseline,
        "children": children,
        "counts": counts(children, expected),
    }


def watch(client, exp, parent, uri: str, every: float):
    """Print progress every `every` seconds until the parent run has ended; Ctrl-C stops."""
    try:
        while True:
            info = collect(client, exp, parent, uri)
            c = info["counts"]
            print(
                f"[{time.strftime('%H:%M:%S')}] {info['sweep_id']}: {c['finished']} finished, "
                f"{c['failed'] + c['killed']} failed, {c['running']} running, "
                f"{c['missing']} missing of {c['expected'] or '?'} ({parent.info.status})",
                flush=True,
            )
            if parent.info.status in ENDED:
                return parent
            time.sleep(every)
            parent = retry(client.get_run, parent.info.run_id)
    except KeyboardInterrupt:
        print("watch stopped; reporting what is there", flush=True)
        return retry(client.get_run, parent.info.run_id)


# --------------------------------------------------------------------------- CLI ----


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="lenet5-report",
        description="Report which design choices matter in a sweep recorded in MLflow.",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--sweep-id", help="the sweep to report (tag lenet5.sweep_id)")
    which.add_argument("--study", help="report the latest sweep of this study (lenet5.study)")
    p.add_argument(
        "--tracking-uri",
        help="MLflow store; default $MLFLOW_TRACKING_URI, else sqlite:///<project>/mlruns/mlflow.db",
    )
    p.add_argument("--experiment", default="lenet5", help="MLflow experiment (default lenet5)")
    p.add_argument(
        "--out", type=Path, help="output folder (default <project>/mlruns/reports/<sweep id>/)"
    )
    p.add_argument(
        "--no-log",
        action="store_true",
        help="do not log the report files as artifacts of the sweep's parent run",
    )
    p.add_argument(
        "--watch",
        type=float,
        metavar="SECONDS",
        help="print progress every SECONDS until the sweep ends, then report",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    uri = tracking_uri(args.tracking_uri)
    try:
        client, exp = open_experiment(uri, args.experiment)
        parent = find_sweep(client, exp, args.sweep_id, args.study)
        if args.watch:
            parent = watch(client, exp, parent, uri, args.watch)
        info = collect(client, exp, parent, uri)
    except ReportError as e:
        print(f"lenet5-report: {e}", file=sys.stderr)
        return 2
    rows = summarize(info["children"], info["factors"], info["baseline"])
    safe_id = info["sweep_id"].replace(os.sep, "_")
    out = args.out or PROJECT_ROOT / "mlruns" / "reports" / safe_id
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "report.md", out / "report.csv", out / "report.png"]
    files[0].write_text(render_markdown(info, rows))
    write_csv(files[1], info, rows)
    write_chart(files[2], info, rows)
    # Files and artifacts before printing, so a closed pipe (| head) cannot skip them.
    status, logged = 0, ""
    if not args.no_log:
        try:
            # Artifacts only: the parent's status, tags and metrics stay as the sweep left them.
            for f in files:
                retry(client.log_artifact, info["parent_run_id"], str(f), "report")
            logged = f"logged them as artifacts report/ of run {info['parent_run_id']}"
        except Exception as e:
            logged = f"could not log them to run {info['parent_run_id']}: {e}"
            status = 1
    print(render_text(info, rows))
    print(f"wrote {', '.join(f.name for f in files)} to {out}")
    if logged:
        print(logged, file=sys.stderr if status else sys.stdout)
    return status


if __name__ == "__main__":
    sys.exit(main())

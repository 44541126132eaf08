"""The `lenet5-report` command line.

    lenet5-report                        # the latest sweep of experiment "lenet5"
    lenet5-report --study one_at_a_time  # the latest sweep of that study
    lenet5-report --sweep-id ID --out DIR
    lenet5-report --watch 30             # follow a running sweep, report when it ends
    lenet5-report --stale                # RUNNING runs whose process is gone
    lenet5-report --reap                 # ... ended KILLED, so they can be resumed
    lenet5-report --register             # register the best run's model (lenet5-<study>)
    lenet5-report --tuned                # per-arm tables, paired/Holm, interactions, any study

Writes report.md, report.csv and report.png, logs them (unless --no-log) as artifacts of
the sweep's parent run, leaving its status, tags and metrics as they are, and prints the
text report.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from lenet5.core import names
from lenet5.core.paths import PROJECT_ROOT, tracking_uri
from lenet5.core.process import exit_now
from lenet5.report.checks import at_edges, check_lines, not_converged
from lenet5.report.cost import cost_lines, costs
from lenet5.report.examples import comparison_line, spread_line
from lenet5.report.figure_tuned import write_tuned_chart
from lenet5.report.html import page
from lenet5.report.reading import (
    ReportError,
    collect,
    curves,
    download,
    find_sweep,
    open_experiment,
    predictions,
    retry,
    search_all,
    watch,
)
from lenet5.report.render import (
    cost_figure,
    render_markdown,
    render_text,
    write_chart,
    write_csv,
)
from lenet5.report.render_tuned import (
    plain_verdict_lines,
    planning_lines,
    render_tuned_markdown,
    render_tuned_text,
    seeds_to_resolve,
    write_tuned_csv,
)
from lenet5.report.robust import summary_line
from lenet5.report.sequential import RESOLVED, seed_differences
from lenet5.report.sequential import verdict_lines as sequential_lines
from lenet5.report.stats import summarize
from lenet5.report.tuning import (
    arm_name,
    arm_runs,
    has_nuisance,
    is_simple,
    select,
    simple_tables,
    tables,
)
from lenet5.tracking import views
from lenet5.tracking.liveness import STALE_AFTER_S, reap, stale_runs


def _sweep_args(p: argparse.ArgumentParser) -> None:
    """Which sweep, in which store and experiment."""
    which = p.add_mutually_exclusive_group()
    which.add_argument("--sweep-id", help=f"the sweep to report (tag {names.SWEEP_ID})")
    which.add_argument("--study", help=f"report the latest sweep of this study ({names.STUDY})")
    p.add_argument(
        "--tracking-uri",
        help="MLflow store; default $MLFLOW_TRACKING_URI, else sqlite:///<project>/mlruns/mlflow.db",
    )
    p.add_argument("--experiment", default="lenet5", help="MLflow experiment (default lenet5)")


def _output_args(p: argparse.ArgumentParser) -> None:
    """Where the report's files go."""
    p.add_argument(
        "--out", type=Path, help="output folder (default <project>/mlruns/reports/<sweep id>/)"
    )
    p.add_argument(
        "--no-log",
        action="store_true",
        help="do not log the report files as artifacts of the sweep's parent run",
    )
    p.add_argument(
        "--html",
        action="store_true",
        help="also write report.html: one self-contained file (figure embedded, links into "
        "the MLflow UI, the study's config) to open offline or send",
    )


def _orphan_args(p: argparse.ArgumentParser) -> None:
    """RUNNING runs whose process is gone, instead of a report."""
    orphans = p.add_mutually_exclusive_group()
    orphans.add_argument(
        "--stale",
        action="store_true",
        help="list the experiment's RUNNING runs whose process is gone, instead of a report",
    )
    orphans.add_argument(
        "--reap",
        action="store_true",
        help=f"end those runs KILLED (reason in {names.FAILURE_REASON}); resume=<run id> "
        "continues one",
    )
    p.add_argument(
        "--stale-after",
        type=float,
        default=STALE_AFTER_S,
        metavar="SECONDS",
        help="a run on another host (or without a pid) is stale when its heartbeat is older "
        f"(default {STALE_AFTER_S:.0f}); on this host its pid is checked",
    )


def _more_args(p: argparse.ArgumentParser) -> None:
    """Registering the best model, the tuned tables, following a running sweep."""
    p.add_argument(
        "--register",
        metavar="NAME",
        nargs="?",
        const="",
        help="register the sweep's best model (lowest final test error) in the Model Registry "
        "as NAME (default lenet5-<study>)",
    )
    p.add_argument(
        "--plan",
        action="store_true",
        help="instead of the report: for each comparison of this (pilot) sweep, the seeds that "
        "would resolve it at the spread seen, and the runs and command for the whole study",
    )
    p.add_argument(
        "--tuned",
        action="store_true",
        help="the tuned report's tables (per-arm selection, paired/Welch intervals with Holm, "
        "verdicts, factorial interactions) for a study without a nuisance grid too",
    )
    p.add_argument(
        "--margin",
        type=float,
        metavar="POINTS",
        help="the smallest difference in test error (points) that matters, for the tuned "
        "report's verdicts (default: the study's study.margin, recorded with the sweep)",
    )
    p.add_argument(
        "--watch",
        type=float,
        metavar="SECONDS",
        help="print progress every SECONDS until the sweep ends, then report",
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="lenet5-report",
        description="Report which design choices matter in a sweep recorded in MLflow.",
    )
    for add in (_sweep_args, _output_args, _orphan_args, _more_args):
        add(p)
    return p.parse_args(argv)


def cli() -> None:
    """The `lenet5-report` command: `main`, then the process ends without the interpreter's
    teardown (`lenet5.core.process.exit_now`)."""
    exit_now(main())


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 reported, 1 reported but not logged to the parent run, 2 nothing to
    report on (the message on stderr says what the store holds)."""
    args = parse_args(argv)
    uri = tracking_uri(args.tracking_uri)
    try:
        client, exp = open_experiment(uri, args.experiment)
        stale = stale_runs(running(client, exp), args.stale_after)
        if args.stale or args.reap:
            return orphans(client, exp, stale, args.reap)
        info = read_sweep(client, exp, uri, args)
    except ReportError as e:
        return refused(e)
    if args.plan:
        print(plan(info))
        return 0
    out = args.out or PROJECT_ROOT / "mlruns" / "reports" / info.sweep_id.replace(os.sep, "_")
    files, text = write_report(client, info, out, args.tuned)
    if args.html:
        files.append(write_html(client, exp, info, out))
    # Files and artifacts before printing, so a closed pipe (| head) cannot skip them.
    status, logged = (0, "") if args.no_log else log_files(client, info, files)
    print(text)
    if stale:
        print(
            f"{len(stale)} RUNNING run(s) of {exp.name!r} have no live process; "
            "lenet5-report --stale lists them, --reap ends them KILLED"
        )
    print(f"wrote {', '.join(f.name for f in files)} to {out}")
    if logged:
        print(logged, file=sys.stderr if status else sys.stdout)
    print(links(uri, exp, info))
    if args.register is not None and not registered(client, info, args.register):
        return 2
    return status


def refused(e: ReportError) -> int:
    """Say why there is nothing to report on; exit status 2."""
    print(f"lenet5-report: {e}", file=sys.stderr)
    return 2


def running(client, exp) -> list:
    """The experiment's RUNNING runs, oldest first."""
    return search_all(
        client,
        exp.experiment_id,
        "attributes.status = 'RUNNING'",
        order_by=["attributes.start_time ASC"],
    )


def read_sweep(client, exp, uri: str, args: argparse.Namespace):
    """The sweep asked for (by id, study, else the latest), once it has ended with --watch."""
    parent = find_sweep(client, exp, args.sweep_id, args.study)
    if args.watch:
        parent = watch(client, exp, parent, uri, args.watch)
    info = collect(client, exp, parent, uri)
    return info if args.margin is None else replace(info, margin=args.margin)


def write_report(client, info, out: Path, tuned: bool) -> tuple[list[Path], str]:
    """report.md, report.csv and report.png written to `out`; (those files, the text report)."""
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "report.md", out / "report.csv", out / "report.png"]
    if tuned or has_nuisance(info.children):  # each arm at its own best setting
        return files, tuned_report(client, info, files)
    return files, plain_report(client, info, files)


def log_files(client, info, files: list[Path]) -> tuple[int, str]:
    """Log the files as artifacts report/ of the sweep's parent run: (exit status, what
    happened, for the user)."""
    try:
        # Artifacts only: the parent's status, tags and metrics stay as the sweep left them.
        for f in files:
            retry(client.log_artifact, info.parent_run_id, str(f), "report")
    except Exception as e:
        return 1, f"could not log them to run {info.parent_run_id}: {e}"
    return 0, f"logged them as artifacts report/ of run {info.parent_run_id}"


def plain_report(client, info, files: list[Path]) -> str:
    """Each factor's levels against the baseline (Welch), and the learning curves."""
    rows = summarize(info.children, info.factors, info.baseline)
    cv = curves(client, info.children)
    checks = not_converged(info.children, cv, info.factors, info.baseline, info.margin)
    simple = [replace(r, table="simple") for r in simple_comparisons(info)]
    spent = compute(info, files)
    tail = [
        adaptive_lines(info),
        plain_verdict_lines(simple, info.margin),
        robust_lines(info),
        planning_lines(simple, info.margin),
        example_lines(client, info),
        cost_lines(spent),
        check_lines(checks),
    ]
    files[0].write_text(render_markdown(info, rows, tail))
    write_csv(files[1], info, rows)
    write_chart(files[2], info, rows, cv)
    return render_text(info, rows, tail)


def tuned_report(client, info, files: list[Path]) -> str:
    """Selections, tuned and fixed-setting tables, factorial effects, learning curves."""
    sels, rows = tables(info.children, info.factors, info.baseline, info.margin)
    cv = curves(client, info.children)
    settings = {cell: s.selected for cell, s in sels.items()}
    checks = not_converged(info.children, cv, info.factors, info.baseline, info.margin, settings)
    checks += at_edges(sels, info.factors, info.baseline)
    spent = compute(info, files)
    tail = [
        adaptive_lines(info),
        robust_lines(info),
        example_lines(client, info),
        cost_lines(spent),
        check_lines(checks),
    ]
    files[0].write_text(render_tuned_markdown(info, sels, rows, tail))
    write_tuned_csv(files[1], info, sels, rows)
    write_tuned_chart(files[2], info, sels, rows, cv)
    return render_tuned_text(info, sels, rows, tail)


RECORDED = ("study", "sweep_params.yaml", "overrides.yaml")  # what parent.open_sweep logs


def recorded_config(client, run_id: str) -> list[tuple[str, str]]:
    """The study file, the sweep's parameters and its command-line overrides, as the parent
    run recorded them: (artifact path, text)."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for entry in retry(client.list_artifacts, run_id):
            if entry.path not in RECORDED:
                continue
            local = Path(download(client, run_id, entry.path, tmp))
            for f in sorted(local.rglob("*")) if local.is_dir() else [local]:
                if f.is_file():
                    out.append((f"{f.relative_to(tmp)}", f.read_text(errors="replace")))
    return out


def write_html(client, exp, info, out: Path) -> Path:
    """report.html beside the other files, from report.md and report.png."""
    link, saved = sweep_link(info.tracking_uri, exp, info)
    base = views.ui_base(info.tracking_uri)
    ui = [
        ("the sweep's runs" + (" (its saved view)" if saved else ""), link),
        ("the sweep's parent run", views.run_link(base, exp.experiment_id, info.parent_run_id)),
    ]
    pngs = [out / "report.png", out / "cost.png"]
    path = out / "report.html"
    path.write_text(
        page(
            f"lenet5 report: {info.study} ({info.sweep_id})",
            (out / "report.md").read_text(),
            [f.read_bytes() for f in pngs if f.is_file()],
            ui,
            recorded_config(client, info.parent_run_id),
        )
    )
    return path


def example_lines(client, info) -> list[str]:
    """Per-example evidence for each simple effect against the baseline (each at its selected
    setting), from the runs' predictions/test.csv; nothing where the runs have none."""
    factors, baseline = info.factors, info.baseline
    sel = select(info.children, factors)
    base = tuple(baseline[f] for f in factors)
    if base not in sel:
        return []

    def by_seed(cell) -> dict[str, tuple]:
        runs = arm_runs(info.children, factors, cell, sel[cell].selected)
        loaded = {r.tags.get(names.SEED, r.run_id): predictions(client, r.run_id) for r in runs}
        return {seed: p for seed, p in loaded.items() if p is not None}

    base_runs = by_seed(base)
    flips, spreads = [], [spread_line("baseline", list(base_runs.values()))]
    for cell in sorted(sel):
        if not is_simple(cell, factors, baseline):
            continue
        arm = by_seed(cell)
        name = arm_name(cell, factors, baseline)
        pairs = [(arm[s], base_runs[s]) for s in arm if s in base_runs]
        if pairs:
            flips.append(comparison_line(name, pairs))
        spreads.append(spread_line(name, list(arm.values())))
    spreads = [line for line in spreads if line]
    if not flips and not spreads:
        return []
    head = "Per-example evidence (each run's test predictions, paired by seed):"
    return [head, *flips, *spreads, ""]


def simple_comparisons(info) -> list:
    """Each level against the baseline (the simple effects), each at its selected nuisance
    setting: paired by seed where they can be, Holm-adjusted, with its verdict."""
    _, rows = simple_tables(info.children, info.factors, info.baseline, info.margin)
    return [r for r in rows if r.table == "tuned" and not r.is_baseline]


def plan(info) -> str:
    """`--plan`: the seeds each comparison needs (paired, Holm over the study's comparisons,
    against its margin) at the spread of its per-seed differences in this sweep, and what
    running the study with as many takes."""
    rows = simple_comparisons(info)
    lines = [
        f"Plan for study {info.study} from sweep {info.sweep_id} (margin {info.margin:g} "
        f"points; each comparison paired by seed, Holm over {len(rows)}):"
    ]
    need = []
    for r in rows:
        name = f"{r.factor}={r.level}"
        if r.verdict in RESOLVED:
            lines.append(f"  {name}: {r.verdict} already, with {r.n} seeds")
            need.append(r.n)
        elif r.diff is None:
            lines.append(f"  {name}: cannot say (no runs to compare)")
        else:
            k, words = seeds_to_resolve(r.diff, info.margin)
            lines.append(f"  {name}: {words} (at {r.diff.estimate:+.2f} points so far)")
            need += [k] if k else []
    done = [r for r in info.children if r.done]
    if need and done:
        seeds = max(need)
        per_seed = len(done) / len({r.tags.get(names.SEED) for r in done})
        study = f"experiment={info.study}" if info.study != "adhoc" else "<the sweep's overrides>"
        lines += [
            "",
            f"The study with {seeds} seeds: about {seeds * per_seed:.0f} runs "
            f"({per_seed:.0f} per seed):",
            f"  lenet5-train -m {study} 'seed=range({seeds})'",
            "or with seeds only where they are needed (docs/studies.md, adaptive seeds):",
            f"  lenet5-train -m {study} hydra/sweeper=adaptive hydra.sweeper.seeds.max={seeds}",
        ]
    return "\n".join(lines)


def compute(info, files: list[Path]) -> list:
    """Each arm's training FLOPs and test error; cost.png beside the report where the runs
    recorded their FLOPs (added to `files`)."""
    rows = costs(info.children, info.factors, info.baseline)
    figure = cost_figure(files[0].parent / "cost.png", f"study {info.study}", rows)
    if figure:
        files.append(figure)
    return rows


def robust_lines(info) -> list[str]:
    """Point summaries beside the intervals (rliable's): per simple effect, at the settings
    the report selects, from its per-seed differences to the baseline."""
    diffs = seed_differences(info.children, info.factors, info.baseline)
    lines = [
        summary_line(arm_name(cell, info.factors, info.baseline), d)
        for cell, d in diffs.items()
        if d
    ]
    head = "Robust summaries (per-seed differences to the baseline, points of test error):"
    return [head, *lines, ""] if lines else []


def adaptive_lines(info) -> list[str]:
    """A sweep run with adaptive seeds: its verdicts as the sweeper reached them."""
    if not info.adaptive:
        return []
    a = info.adaptive
    return sequential_lines(
        info.children, info.factors, info.baseline, a["looks"], info.margin, a["alpha"], a["hope"]
    )


def sweep_link(uri: str, exp, info) -> tuple[str, bool]:
    """The sweep's runs in the MLflow UI: its saved view where the experiment has it, else the
    classic runs view; and whether it is the saved view."""
    key = views.view_key(info.sweep_id)
    saved = views.TAG_PREFIX + key in (exp.tags or {})
    return views.runs_link(views.ui_base(uri), exp.experiment_id, key if saved else None), saved


def links(uri: str, exp, info) -> str:
    """Where the sweep opens in the MLflow UI (its saved view, the classic runs view)."""
    out = f"in the MLflow UI: {sweep_link(uri, exp, info)[0]}"
    command = views.ui_command(uri)
    return out + (f"\n  (serve it with: {command})" if command else "")


def registered(client, info, name: str) -> bool:
    """--register [NAME]: register the best model, and say so; or say why not (False)."""
    try:
        print(register(client, info, name or f"lenet5-{info.study}"))
    except ReportError as e:
        refused(e)
        return False
    return True


def register(client, info, name: str) -> str:
    """Register the sweep's best FINISHED trial's model (lowest final test error) as `name`."""
    import mlflow  # deferred: about a second to import; only --register needs it

    done = [r for r in info.children if r.status == "FINISHED" and r.error is not None]
    if not done:
        raise ReportError(f"sweep {info.sweep_id} has no FINISHED run to register")
    best = min(done, key=lambda r: r.error)
    models = client.search_logged_models(
        experiment_ids=[client.get_run(best.run_id).info.experiment_id],
        filter_string=f"source_run_id = '{best.run_id}' and name = '{names.MODEL_NAME}'",
    )
    if not models:
        raise ReportError(
            f"run {best.run_id} ({best.name}) has no logged model: it was trained with "
            "mlflow.log_model=false or before lenet5 logged models"
        )
    mlflow.set_tracking_uri(info.tracking_uri)
    version = retry(mlflow.register_model, models[0].model_uri, name)
    return (
        f"registered run {best.run_id} ({best.name}, test error {100 * best.error:.2f}%) as "
        f"model {name!r} version {version.version}; lenet5-predict FILE --model {name}"
    )


def orphans(client, exp, stale, reaping: bool) -> int:
    """List (or reap) the stale runs; exit status 0."""
    if not stale:
        print(f"no stale runs in experiment {exp.name!r}: every RUNNING run is alive")
        return 0
    if reaping:
        retry(reap, client, stale)
    verb = "ended KILLED" if reaping else "stale"
    print(f"{len(stale)} run(s) of experiment {exp.name!r} {verb}:")
    for s in stale:
        print(f"  {s.run_id} {s.name}: {s.reason}")
    hint = "lenet5-train resume=<run id>" if reaping else "lenet5-report --reap"
    print(f"next: {hint}")
    return 0

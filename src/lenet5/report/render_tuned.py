"""The report of a study with a nuisance grid: selections, tuned and fixed-setting tables,
factorial effects, as text, Markdown and CSV (see `tuning`)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from lenet5.core import names
from lenet5.report.inference import MOST_SEEDS, Contrast, seeds_needed
from lenet5.report.reading import SweepInfo
from lenet5.report.render import (
    _num,
    _problem_lines,
    aligned,
    header_lines,
    markdown_table,
    tail_markdown,
)
from lenet5.report.tuning import Cell, Comparison, Selection, arm_name
from lenet5.study.nuisance import short

TITLES = {
    "tuned": "Tuned: each arm at its own selected setting",
    "fixed": "Fixed setting: every arm at the baseline's selected setting",
    "main": "Main effects (each cell at its own selected setting, averaged over matched cells)",
    "interaction": "Two-way interactions (each cell at its own selected setting; "
    "(ab - a - b + base), averaged over matched cells)",
}
CSV_COLUMNS = [
    "sweep_id",
    "study",
    "table",
    "factor",
    "level",
    "is_baseline",
    "setting",
    "val_acc_pct",
    "n",
    "mean_error_pct",
    "std_error_pct",
    "diff_pct",
    "diff_low_pct",
    "diff_high_pct",
    "ci_level",
    "test",
    "n_diff",
    "p",
    "p_holm",
    "verdict",
]


def _title(table: str, sels) -> str:
    if table == "tuned" and not any(_keys(sels)):  # no grid (lenet5-report --tuned)
        return "Simple effects at the baseline (other factors at their baseline levels)"
    return TITLES[table]


def _keys(sels: dict[Cell, Selection]) -> list[str]:
    return sorted({s for sel in sels.values() for s in sel.by_setting})


def selection_table(sels, factors, baseline) -> list[list[str]]:
    settings = _keys(sels)
    head = ["arm", *(short(s) for s in settings), "selected"]
    lines = [head]
    base = tuple(baseline[f] for f in factors)
    for cell in sorted(sels, key=lambda c: (c != base, arm_name(c, factors, baseline))):
        sel = sels[cell]
        cells = []
        for s in settings:
            v, n = sel.by_setting.get(s, (None, 0))
            mark = "*" if s == sel.selected else " "
            cells.append(f"{_num(v)} ({n}){mark}")
        best = sel.by_setting.get(sel.selected, (None, 0))[0]
        ties = [s for s, (v, _) in sel.by_setting.items() if v is not None and v == best]
        tie = f" (tie of {len(ties)})" if len(ties) > 1 else ""
        lines.append([arm_name(cell, factors, baseline), *cells, short(sel.selected) + tie])
    return lines


def _ci(r: Comparison) -> tuple[str, str, str, str]:
    d = r.diff
    if r.is_baseline:
        return "-", "-", "-", "-"
    if d is None:
        return "n/a", "n/a", "n/a", "n/a"
    ci = "n/a" if d.low is None else f"[{d.low:+.2f}, {d.high:+.2f}]"
    level = "n/a" if d.low is None else f"{100 * d.level:.1f}%"
    return _num(d.estimate, signed=True), ci, level, f"{d.test} ({d.n})"


def arm_lines(block: list[Comparison], factor: str) -> list[list[str]]:
    head = [factor, "setting", "val %", "n", "mean %", "std %", "diff %", "CI (Holm)", "level"]
    lines = [[*head, "test (n)", "p Holm", "verdict"]]
    for r in block:
        diff, ci, level, test = _ci(r)
        p = "-" if r.is_baseline else _num(r.diff.p_adj if r.diff else None, digits=3)
        lvl = f"{r.level} (baseline)" if r.is_baseline else r.level
        lines.append(
            [
                lvl,
                short(r.setting),
                _num(r.val),
                str(r.n),
                _num(r.mean),
                _num(r.std),
                diff,
                ci,
                level,
                test,
                p,
                r.verdict,
            ]
        )
    return lines


def effect_lines(block: list[Comparison], factor: str) -> list[list[str]]:
    lines = [[factor, "cells", "effect %", "CI (Holm)", "level", "test (n)", "p Holm", "verdict"]]
    for r in block:
        diff, ci, level, test = _ci(r)
        p = _num(r.diff.p_adj if r.diff else None, digits=3)
        lines.append([r.level, str(r.n), diff, ci, level, test, p, r.verdict])
    return lines


def _blocks(rows: list[Comparison]):
    seen: dict[tuple[str, str], list[Comparison]] = {}
    for r in rows:
        seen.setdefault((r.table, r.factor), []).append(r)
    tables: dict[str, list[tuple[str, list[Comparison]]]] = {}
    for (table, factor), block in seen.items():
        tables.setdefault(table, []).append((factor, block))
    return tables


def _table(table: str, factor: str, block: list[Comparison]) -> list[list[str]]:
    return (arm_lines if table in ("tuned", "fixed") else effect_lines)(block, factor)


def _comparisons(block_map, table) -> int:
    return sum(
        1
        for _, b in block_map[table]
        for r in b
        if not r.is_baseline and r.diff and r.diff.p is not None
    )


def nuisance_line(sels) -> str:
    keys = sorted({k for s in _keys(sels) if s for k in json.loads(s)})
    if not keys:
        return f"nuisance: none (no {names.NUISANCE} tag): one setting per arm"
    return (
        f"nuisance: {', '.join(keys)}, tuned per arm: the setting with the best mean "
        f"validation accuracy over seeds ({names.FINAL_VAL_ACC}) is selected (*), its test "
        "error reported"
    )


def margin_line(info: SweepInfo) -> str:
    """How the verdicts read, with the study's margin."""
    m = f"{info.margin:g}"
    return (
        f"Verdicts against a margin of {m} points of test error (study.margin, or --margin): "
        f"equivalent = the Holm interval lies inside +/-{m}; worse / better = it excludes 0 "
        "and reaches past the margin; else too wide to conclude."
    )


def verdict_lines(rows: list[Comparison]) -> list[str]:
    """Per comparison, the verdict tuned and at the baseline's setting: did tuning change it?"""
    fixed = {(r.factor, r.level): r for r in rows if r.table == "fixed" and not r.is_baseline}
    out = []
    for r in rows:
        f = fixed.get((r.factor, r.level))
        if r.table != "tuned" or r.is_baseline or f is None:
            continue
        est = [_num(x.diff.estimate if x.diff else None, signed=True) for x in (r, f)]
        changed = "  <- changed by tuning" if r.verdict != f.verdict else ""
        out.append(
            f"  {r.factor}={r.level}: tuned {r.verdict} ({est[0]}), at the baseline's setting "
            f"{f.verdict} ({est[1]}){changed}"
        )
    return (
        ["Verdicts, tuned vs at the baseline's setting (test error, points):", *out, ""]
        if out
        else []
    )


def plain_verdict_lines(rows: list[Comparison], margin: float) -> list[str]:
    """The plain report's verdicts: each level against the baseline (the simple effects),
    paired by seed where the seeds match, Holm over them, read against the margin."""
    out = []
    for r in rows:
        if r.is_baseline:
            continue
        diff, ci, level, test = _ci(r)
        out.append(f"  {r.factor}={r.level}: {r.verdict}, {diff} {ci} ({level}, {test})")
    m = len(out)
    head = (
        f"Verdicts against a margin of {margin:g} points (each level vs the baseline; intervals "
        f"Holm-adjusted over the {m} comparison{'s' * (m != 1)}; equivalent = inside "
        f"+/-{margin:g}, worse / better = excludes 0 and reaches past it):"
    )
    return [head, *out, ""] if out else []


def seeds_to_resolve(c: Contrast, margin: float) -> tuple[int | None, str]:
    """The seeds that would resolve a comparison at the spread seen so far (`seeds_needed`),
    and that in words: about k, more than MOST_SEEDS, or why it cannot be said."""
    k = seeds_needed(c, margin)
    if k:
        return k, f"about {k} seeds"
    if not c.paired:
        return None, "cannot say (not paired by seed)"
    if not c.se:
        return None, "cannot say (no spread yet)"
    return None, f"more than {MOST_SEEDS} seeds"


def planning_lines(rows: list[Comparison], margin: float) -> list[str]:
    """For each comparison still too wide to conclude: the seeds that would resolve it."""
    out = []
    for r in rows:
        if r.verdict != "too wide to conclude" or r.diff is None:
            continue
        out.append(f"  {r.table}: {r.factor}={r.level}: {seeds_to_resolve(r.diff, margin)[1]}")
    head = (
        "Seeds that would resolve what is still too wide to conclude (at the spread of the "
        "per-seed differences seen so far, the same level):"
    )
    return [head, *out, ""] if out else []


def render_tuned_text(info: SweepInfo, sels, rows: list[Comparison], tail=()) -> str:
    """The tuned report as printed; `tail`: line blocks after the planning (the adaptive
    seeds' verdicts, the checks)."""
    out = [*header_lines(info), nuisance_line(sels), ""]
    problems = _problem_lines(info)
    if problems:
        out += ["Failed or incomplete runs (excluded from the statistics):"]
        out += [f"  {p}" for p in problems] + [""]
    out += [margin_line(info), ""]
    out += ["Selection per arm: mean validation accuracy in % (runs), * selected:", ""]
    out += aligned([selection_table(sels, info.factors, info.baseline)])
    tables = _blocks(rows)
    for table, blocks in tables.items():
        m = _comparisons(tables, table)
        out += [
            f"{_title(table, sels)}, test error in %; differences to the baseline with intervals "
            f"Holm-adjusted over the table's {m} comparison{'s' * (m != 1)}:",
            "",
        ]
        out += aligned([_table(table, f, b) for f, b in blocks])
    out += verdict_lines(rows)
    out += planning_lines(rows, info.margin)
    for block in tail:
        out += block
    if not rows:
        out.append("no runs to compare yet")
    return "\n".join(out).rstrip() + "\n"


def render_tuned_markdown(info: SweepInfo, sels, rows: list[Comparison], tail=()) -> str:
    out = [f"# Sweep report: {info.study} ({info.sweep_id})", ""]
    out += [f"- {line}" for line in [*header_lines(info), nuisance_line(sels)]] + [""]
    problems = _problem_lines(info)
    if problems:
        out += ["## Failed or incomplete runs (excluded)", ""] + [f"- {p}" for p in problems]
        out.append("")
    out += [margin_line(info), ""]
    out += ["## Selection per arm", "", "Mean validation accuracy in % (runs), * selected.", ""]
    out += [*markdown_table(selection_table(sels, info.factors, info.baseline)), ""]
    tables = _blocks(rows)
    for table, blocks in tables.items():
        m = _comparisons(tables, table)
        out += [
            f"## {_title(table, sels)}",
            "",
            f"Test error in %; Holm over {m} comparison{'s' * (m != 1)}.",
            "",
        ]
        for factor, block in blocks:
            out += [f"### {factor}", "", *markdown_table(_table(table, factor, block)), ""]
    out += tail_markdown([verdict_lines(rows), planning_lines(rows, info.margin), *tail])
    return "\n".join(out).rstrip() + "\n"


def _num6(x: float | None) -> str:
    return "" if x is None else format(x, ".6g")


def _selection_rows(info: SweepInfo, sels) -> Iterator[list]:
    """Per arm and nuisance setting: its mean validation accuracy, runs, whether selected."""
    for cell, sel in sels.items():
        for s, (v, n) in sel.by_setting.items():
            level = arm_name(cell, info.factors, info.baseline)
            yield (
                [info.sweep_id, info.study, "selection", "arm", level, "", s, _num6(v), n]
                + [""] * 10
                + ["selected" if s == sel.selected else ""]
            )


def _comparison_row(info: SweepInfo, r: Comparison) -> list:
    d = r.diff
    return [
        info.sweep_id,
        info.study,
        r.table,
        r.factor,
        r.level,
        int(r.is_baseline),
        r.setting or "",
        _num6(r.val),
        r.n,
        _num6(r.mean),
        _num6(r.std),
        _num6(d.estimate) if d else "",
        _num6(d.low) if d else "",
        _num6(d.high) if d else "",
        _num6(d.level) if d else "",
        d.test if d else "",
        d.n if d else "",
        _num6(d.p) if d else "",
        _num6(d.p_adj) if d else "",
        r.verdict,
    ]


def write_tuned_csv(path: Path, info: SweepInfo, sels, rows: list[Comparison]) -> None:
    """The selections, then every table's rows; numbers to 6 significant digits."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        w.writerows(_selection_rows(info, sels))
        w.writerows(_comparison_row(info, r) for r in rows)

"""The report of one sweep as text (the terminal), Markdown, CSV and a PNG chart."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from lenet5.core import names
from lenet5.report.cost import Cost
from lenet5.report.figure_tuned import blank_grid, simple_curves
from lenet5.report.reading import ERROR_METRIC, SweepInfo
from lenet5.report.stats import Row

SECTIONS = {
    "simple": "Simple effects at the baseline (other factors at their baseline levels)",
    "main": "Main effects (all runs at each level, marginal over the other factors)",
}
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


def _num(x: float | None, signed: bool = False, digits: int = 2) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def aligned(tables: list[list[list[str]]]) -> list[str]:
    """Text tables with one set of column widths, so that tables printed one under another
    line up: the first column left-aligned, the numbers right-aligned (their decimals line
    up); a blank line after each table."""
    lines = [line for table in tables for line in table]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = []
    for table in tables:
        for line in table:
            rest = [cell.rjust(w) for cell, w in zip(line[1:], widths[1:], strict=True)]
            out.append("  " + "  ".join([line[0].ljust(widths[0]), *rest]).rstrip())
        out.append("")
    return out


def _cells(row: Row) -> list[str]:
    level = f"{row.level} (baseline)" if row.is_baseline else row.level
    if row.is_baseline:
        diff, ci = "-", "-"
    else:
        diff = _num(row.diff, signed=True)
        ci = "n/a" if row.diff_low is None else f"[{row.diff_low:+.2f}, {row.diff_high:+.2f}]"
    return [level, str(row.n), _num(row.mean), _num(row.std), diff, ci]


def _table_header(factor: str) -> list[str]:
    return [factor, "n", "mean %", "std %", "diff %", "95% CI of diff (Welch)"]


def _blocks(rows: list[Row]) -> Iterator[tuple[str, str, list[Row]]]:
    """(section, factor, rows) in report order."""
    seen: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        seen.setdefault((row.section, row.factor), []).append(row)
    for (section, factor), block in seen.items():
        yield section, factor, block


def header_lines(info: SweepInfo) -> list[str]:
    c = info.counts
    expected = "?" if c.expected is None else c.expected
    lines = [
        f"study: {info.study}",
        f"sweep id: {info.sweep_id}",
        f"parent run: {info.parent_run_id} ({info.parent_status})",
        f"experiment: {info.experiment} ({info.tracking_uri})",
        f"factors: {', '.join(info.factors)}",
        "baseline: " + ", ".join(f"{f}={info.baseline[f]}" for f in info.factors),
        f"runs: {c.finished} finished / {c.failed} failed / {c.killed} killed / "
        f"{c.running} running / {expected} expected",
    ]
    if c.missing:
        not_started = "?" if c.not_started is None else c.not_started
        lines.append(
            f"sweep incomplete: {c.missing} runs still missing "
            f"({c.running} running, {not_started} not started); reporting what is there"
        )
    return lines


def _problem_lines(info: SweepInfo) -> list[str]:
    lines = [
        f"{r.name} [{r.status}]: "
        + r.tags.get(names.FAILURE_REASON, f"no {names.FAILURE_REASON} tag")
        for r in info.children
        if r.status in ("FAILED", "KILLED")
    ]
    lines += [
        f"{r.name} [FINISHED]: no {ERROR_METRIC} metric"
        for r in info.children
        if r.status == "FINISHED" and r.error is None
    ]
    return lines


def trials(info: SweepInfo) -> list[list[str]]:
    """The finished trials of a sweep that varies config values (a learning rate Optuna
    searches), best first by the validation error a sweeper minimizes (by test error where
    there is no validation): the header, then a row per trial."""
    done = [r for r in info.children if r.done]
    done.sort(key=lambda r: (r.error if r.val is None else 1 - r.val, r.error))
    header = ["rank", "run", *info.searched, "val error %", "test error %", "run id"]
    rows = []
    for i, r in enumerate(done, 1):
        values = [r.settings.get(k, "?") for k in info.searched]
        val = "-" if r.val is None else _num(100 * (1 - r.val))
        rows.append([str(i), r.name, *values, val, _num(100 * r.error), r.run_id])
    return [header, *rows]


def best_line(table: list[list[str]], searched: list[str]) -> str:
    best = dict(zip(table[0], table[1], strict=True))
    settings = " ".join(f"{k}={best[k]}" for k in searched)
    errors = f"validation error {best['val error %']}%, test error {best['test error %']}%"
    return f"best on validation: {settings} (run {best['run id']}, {errors})"


TRIALS = "Trials by validation error, best first"
TRIALS_WHY = (
    "The sweeper minimizes the validation error (the test error where there is none): the "
    "test error of the best trial is reported, never selected on."
)


def markdown_table(lines: list[list[str]]) -> list[str]:
    """A header and rows as a Markdown table: the first column left-aligned, the rest right."""
    out = ["| " + " | ".join(lines[0]) + " |", "| --- " + "| ---: " * (len(lines[0]) - 1) + "|"]
    return out + ["| " + " | ".join(c.replace("|", "/") for c in line) + " |" for line in lines[1:]]


def _trial_text(info: SweepInfo) -> list[str]:
    table = trials(info)
    if not info.searched or len(table) < 2:
        return []
    head = f"{TRIALS} ({', '.join(info.searched)} searched):"
    return [head, "", *aligned([table]), best_line(table, info.searched), TRIALS_WHY, ""]


def _trial_markdown(info: SweepInfo) -> list[str]:
    table = trials(info)
    if not info.searched or len(table) < 2:
        return []
    out = [f"## {TRIALS}", "", TRIALS_WHY, "", *markdown_table(table)]
    return [*out, "", best_line(table, info.searched), ""]


def tail_markdown(blocks) -> list[str]:
    """Line blocks (a title line ending in ':', indented items, a blank line) as Markdown
    sections: the verdicts, the planning, the checks."""
    out = []
    for lines in blocks:
        if lines:
            out += [f"## {lines[0].rstrip(':')}", ""] + [f"- {v.strip()}" for v in lines[1:-1]]
            out.append("")
    return out


def render_text(info: SweepInfo, rows: list[Row], tail=()) -> str:
    """The plain report as printed; `tail`: line blocks after the tables (verdicts,
    planning, checks)."""
    out = [*header_lines(info), ""]
    problems = _problem_lines(info)
    if problems:
        out += ["Failed or incomplete runs (excluded from the statistics):"]
        out += [f"  {p}" for p in problems] + [""]
    trial_lines = _trial_text(info)
    out += trial_lines
    tables: dict[str, list[list[list[str]]]] = {}
    for section, factor, block in _blocks(rows):
        tables.setdefault(section, []).append([_table_header(factor), *(_cells(r) for r in block)])
    for section, section_tables in tables.items():
        out += [SECTIONS[section] + ", test error in %:", ""]
        out += aligned(section_tables)  # one set of widths per section: the factors line up
    for block in tail:
        out += block
    if not rows and not trial_lines:
        out.append("no runs to compare yet")
    return "\n".join(out).rstrip() + "\n"


def render_markdown(info: SweepInfo, rows: list[Row], tail=()) -> str:
    out = [f"# Sweep report: {info.study} ({info.sweep_id})", ""]
    out += [f"- {line}" for line in header_lines(info)] + [""]
    problems = _problem_lines(info)
    if problems:
        out += ["## Failed or incomplete runs (excluded)", ""]
        out += [f"- {p}" for p in problems] + [""]
    out += _trial_markdown(info)
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
            if row.is_baseline:
                cells[0] = f"**{cells[0]}**"
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    out += tail_markdown(tail)
    return "\n".join(out).rstrip() + "\n"


def write_csv(path: Path, info: SweepInfo, rows: list[Row]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for r in rows:
            nums = (r.mean, r.std, r.ci_half, r.diff, r.diff_low, r.diff_high)
            w.writerow(
                [
                    info.sweep_id,
                    info.study,
                    r.section,
                    r.factor,
                    r.level,
                    int(r.is_baseline),
                    r.n,
                    *("" if x is None else f"{x:.6g}" for x in nums),
                ]
            )


def panel_shape(n_factors: int) -> tuple[int, int]:
    """(columns, rows) of a section's panels: a panel per factor, at most 5 a row (more
    factors wrap onto further rows)."""
    cols = min(max(1, n_factors), 5)
    return cols, -(-max(1, n_factors) // cols)


def _level_points(ax, shown: list[Row]) -> None:
    """Each level's mean with its 95% CI of the mean; the baseline red, with a line across."""
    for i, r in enumerate(shown):
        half = r.ci_half or 0
        ax.errorbar(
            i,
            r.mean,
            yerr=[[min(half, r.mean)], [half]],  # an error rate is never below 0%
            fmt="o",
            capsize=4,
            color="tab:red" if r.is_baseline else "tab:blue",
        )
        if r.is_baseline:
            ax.axhline(r.mean, color="tab:red", lw=0.8, ls="--")


def error_panel(ax, title: str, block: list[Row], ylabel: bool) -> None:
    """One factor's levels in one section: mean test error, bars the 95% CI of the mean."""
    ax.set_axis_on()
    shown = [r for r in block if r.mean is not None]
    _level_points(ax, shown)
    ax.set_xticks(
        list(range(len(shown))),
        [f"{r.level}\n(n={r.n})" for r in shown],
        rotation=0 if len(shown) <= 3 else 25,
        fontsize=8,
    )
    ax.set_xlim(-0.6, max(len(shown), 1) - 0.4)
    ax.set_title(title, fontsize=10)
    ax.set_ylim(bottom=0)
    if ylabel:
        ax.set_ylabel("test error (%)")
    ax.grid(axis="y", alpha=0.3)
    if not shown:
        ax.text(0.5, 0.5, "no finished runs", ha="center", va="center", transform=ax.transAxes)


def write_chart(path: Path, info: SweepInfo, rows: list[Row], curves: dict | None = None):
    """Mean test error per level, one panel per section x factor, bars = 95% CI of the mean;
    with `curves` (run id -> val/acc per epoch), a row of learning curves per factor below."""
    # Deferred: matplotlib takes a moment to import, and only the PNG needs it. A Figure
    # without pyplot: the Agg canvas, no global backend state, no display needed.
    from matplotlib.figure import Figure

    blocks = list(_blocks(rows))
    sections = list(dict.fromkeys(s for s, _, _ in blocks)) or ["simple"]
    cols, panel_rows = panel_shape(len(info.factors))
    # At least 6.4 in wide: the title's two lines fit whatever the number of factors.
    height = 3.4 * len(sections) * panel_rows + 0.5
    fig = Figure(
        figsize=(max(6.4, 3.2 * cols), height + (3.4 * panel_rows if curves else 0)),
        layout="constrained",
    )
    curves = curves if curves and any(curves.values()) else None  # no val/acc logged: none
    top = fig
    if curves:
        top, bottom = fig.subfigures(2, 1, height_ratios=[height, 3.4 * panel_rows])
        simple_curves(bottom, info, curves, cols, panel_rows)
    # A shared y axis per section makes the factors' effects comparable at a glance.
    grid = blank_grid(top, len(sections) * panel_rows, cols, sharey="all")
    for section, factor, block in blocks:
        i = info.factors.index(factor)
        ax = grid[sections.index(section) * panel_rows + i // cols][i % cols]
        error_panel(ax, f"{factor} ({section})", block, ylabel=i % cols == 0)
    fig.suptitle(
        f"study {info.study}\nsweep {info.sweep_id}\nmean test error; bars: 95% CI of the "
        "mean (clipped at 0); red: baseline",
        fontsize=10,
    )
    fig.savefig(path, dpi=110)
    return fig


def cost_figure(path: Path, title: str, rows: list[Cost]) -> Path | None:
    """Each arm's mean test error (bars: std over seeds) at its mean training FLOPs."""
    if not rows:
        return None
    from matplotlib.figure import Figure  # deferred: only the PNG needs it

    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for c in rows:
        ax.errorbar(c.flops, c.error, yerr=c.std or 0, fmt="o", capsize=3, label=c.arm)
        ax.annotate(
            c.arm, (c.flops, c.error), textcoords="offset points", xytext=(5, 5), fontsize=8
        )
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs (forward + backward, all samples seen)")
    ax.set_ylabel("test error (%)")
    ax.set_title(f"{title}\ntest error against training compute (bars: std over seeds)", fontsize=9)
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110)
    return path

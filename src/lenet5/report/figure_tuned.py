"""The figure of a tuned report: per factor, the test error of each level tuned and at the
baseline's setting, and the learning curves (validation accuracy per epoch) of each level
at its selected setting, mean over seeds with their range as a band; for a factorial study,
a row of interaction plots (the largest two-way interactions first)."""

from __future__ import annotations

from pathlib import Path

from lenet5.report.reading import SweepInfo
from lenet5.report.stats import Run
from lenet5.report.tuning import Comparison, Selection, arm_cell, arm_runs, tuned_groups
from lenet5.study.nuisance import short


def arm_curves(
    runs: list[Run], curves: dict[str, list[float]], factors: list[str], cell, setting
) -> list[list[float]]:
    """The validation-accuracy curves (%) of the arm's runs at `setting`."""
    return [
        [100 * v for v in curves[r.run_id]]
        for r in arm_runs(runs, factors, cell, setting)
        if curves.get(r.run_id)
    ]


def band(series: list[list[float]]) -> tuple[list[int], list[float], list[float], list[float]]:
    """(epochs 1.., mean, min, max) over the seeds, as long as the shortest curve."""
    k = min(len(s) for s in series)
    cols = [[s[e] for s in series] for e in range(k)]
    return (
        list(range(1, k + 1)),
        [sum(c) / len(c) for c in cols],
        [min(c) for c in cols],
        [max(c) for c in cols],
    )


def blank_grid(parent, rows: int, cols: int, **kw):
    """A rows x cols grid of axes, each off until a panel is drawn on it."""
    grid = parent.subplots(rows, cols, squeeze=False, **kw)
    for ax in grid.flat:
        ax.set_axis_off()
    return grid


def largest_interactions(rows: list[Comparison], n: int) -> list[Comparison]:
    """The `n` two-way interactions with the largest estimates (in size), of those with one."""
    return sorted(
        (r for r in rows if r.table == "interaction" and r.diff is not None),
        key=lambda r: -abs(r.diff.estimate),
    )[:n]


def tuned_error_panel(
    ax, factor: str, tuned: list[Comparison], fixed: dict[str, Comparison], ylabel: bool
) -> None:
    """One factor's levels: test error, mean +/- std, at each arm's selected setting (blue)
    and at the baseline's (grey); the baseline red."""
    for x, r in enumerate(tuned):
        for dx, rr, colour, label in (
            (-0.12, r, "tab:blue", "tuned"),
            (0.12, fixed.get(r.level), "tab:grey", "at the baseline's setting"),
        ):
            if rr is None or rr.mean is None:
                continue
            ax.errorbar(
                x + dx,
                rr.mean,
                yerr=[[min(rr.std or 0, rr.mean)], [rr.std or 0]],
                fmt="o",
                capsize=3,
                color="tab:red" if r.is_baseline else colour,
                label=label if x == 1 else None,
            )
    ax.set_xticks(range(len(tuned)), [f"{r.level}\n{short(r.setting)}" for r in tuned], fontsize=8)
    ax.set_xlim(-0.6, max(len(tuned), 1) - 0.4)
    ax.set_ylim(bottom=0)
    ax.set_title(f"{factor}: test error", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    if ylabel:
        ax.set_ylabel("test error (%), mean +/- std")
    if len(tuned) > 1:
        ax.legend(fontsize=7)


def tuned_curve_panel(
    ax, info: SweepInfo, sels, factor: str, tuned: list[Comparison], curves, ylabel: bool
) -> None:
    """One factor's learning curves: each level at its selected setting."""
    by = {}
    for r in tuned:
        cell = arm_cell(
            info.factors, info.baseline, factor, r.level
        )  # a baseline row: the baseline
        sel = sels.get(cell)
        label = f"{r.level} ({short(sel.selected) if sel else '-'})"
        by[label] = arm_curves(info.children, curves, info.factors, cell, sel and sel.selected)
    draw_curves(ax, by, f"{factor}: validation accuracy")
    if ylabel:
        ax.set_ylabel("val accuracy (%): mean, band min-max over seeds")


def interaction_panels(axes, info: SweepInfo, sels, inter: list[Comparison]) -> None:
    """A panel per interaction in `inter`, each cell at its selected setting; the other
    axes of the row off."""
    groups = tuned_groups(info.children, info.factors, sels)
    for ax in axes:
        ax.set_axis_off()
    for ax, r in zip(axes, inter, strict=False):
        f, h = r.factor.split(" x ")
        means = interaction_means(groups, info.factors, f, h)
        draw_interaction(ax, means, info.baseline, f, h)
        ax.set_title(
            f"{r.factor}: test error (%), each cell tuned\n"
            f"{r.level} interaction {r.diff.estimate:+.2f}" + _interval(r),
            fontsize=9,
        )


def write_tuned_chart(
    path: Path,
    info: SweepInfo,
    sels: dict[tuple, Selection],
    rows: list[Comparison],
    curves: dict[str, list[float]],
):
    """A column per factor: test error tuned and fixed above, learning curves below; for a
    factorial study, a row of its largest interactions under them."""
    # Deferred: matplotlib takes a moment to import, and only the PNG needs it.
    from matplotlib.figure import Figure

    n = max(1, len(info.factors))
    inter = largest_interactions(rows, n)
    fig = Figure(figsize=(max(6.4, 3.4 * n), 10.6 if inter else 7.2), layout="constrained")
    grid = fig.subplots(3 if inter else 2, n, squeeze=False)
    for i, f in enumerate(info.factors):
        tuned = [r for r in rows if r.table == "tuned" and r.factor == f]
        fixed = {r.level: r for r in rows if r.table == "fixed" and r.factor == f}
        tuned_error_panel(grid[0][i], f, tuned, fixed, ylabel=i == 0)
        tuned_curve_panel(grid[1][i], info, sels, f, tuned, curves, ylabel=i == 0)
    if inter:
        interaction_panels(grid[2], info, sels, inter)
    fig.suptitle(
        f"study {info.study}, sweep {info.sweep_id}\neach arm at its selected nuisance setting "
        "(blue), and at the baseline's (grey); red: baseline",
        fontsize=10,
    )
    fig.savefig(path, dpi=110)
    return fig


def _interval(r: Comparison) -> str:
    low, high = r.diff.low, r.diff.high
    return "" if low is None else f" [{low:+.2f}, {high:+.2f}] ({100 * r.diff.level:.1f}%)"


def interaction_means(groups, factors: list[str], f: str, h: str) -> dict[str, dict[str, float]]:
    """h's level -> f's level -> mean test error (%) of the runs of the cells at those
    levels, each cell at its selected setting (the other factors' cells pooled)."""
    i, j = factors.index(f), factors.index(h)
    pooled: dict[str, dict[str, list[float]]] = {}
    for cell, runs in groups.items():
        pooled.setdefault(cell[j], {}).setdefault(cell[i], []).extend(v for _, v in runs)
    return {b: {a: sum(v) / len(v) for a, v in by.items()} for b, by in pooled.items()}


def draw_interaction(ax, means, baseline: dict[str, str], f: str, h: str) -> None:
    """f's levels on x (baseline first), a line per level of h: parallel lines, no interaction."""
    ax.set_axis_on()
    xs = sorted({a for by in means.values() for a in by}, key=lambda a: (a != baseline[f], a))
    for b in sorted(means, key=lambda b: (b != baseline[h], b)):
        pts = [(x, means[b][a]) for x, a in enumerate(xs) if a in means[b]]
        ax.plot(*zip(*pts, strict=True), marker="o", label=f"{h}={b}")
    ax.set_xticks(range(len(xs)), xs, fontsize=8)
    ax.set_xlim(-0.4, len(xs) - 0.6)
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)


def draw_curves(ax, series_by_label: dict[str, list[list[float]]], title: str) -> None:
    """Mean validation accuracy per epoch with the seeds' range as a band, one line each."""
    from matplotlib.ticker import MaxNLocator  # deferred: matplotlib, for the PNG only

    for label, series in series_by_label.items():
        if not series:
            continue
        epochs, m, lo, hi = band(series)
        line = ax.plot(epochs, m, marker="o", ms=3, label=f"{label} (n={len(series)})")[0]
        if len(epochs) > 1:
            ax.fill_between(epochs, lo, hi, alpha=0.2, color=line.get_color())
        else:  # one epoch: the band is a bar
            ax.vlines(epochs, lo, hi, color=line.get_color(), alpha=0.5, lw=4)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)


def simple_curves(subfig, info: SweepInfo, curves, cols: int, panel_rows: int) -> None:
    """Learning curves of a study without a nuisance grid: per factor, each level with the
    other factors at baseline."""
    factors = info.factors
    grid = blank_grid(subfig, panel_rows, cols)
    for i, f in enumerate(factors):
        ax = grid[i // cols][i % cols]
        ax.set_axis_on()
        levels = sorted({r.tags.get(f) for r in info.children if r.tags.get(f)})
        by = {}
        for lvl in levels:
            cell = arm_cell(factors, info.baseline, f, lvl)
            by[lvl] = arm_curves(info.children, curves, factors, cell, "")
        draw_curves(ax, by, f"{f}: validation accuracy (%)")
        if i % cols == 0:
            ax.set_ylabel("mean, band min-max over seeds")

"""Each arm at its own best nuisance setting, selected on validation; the tables around it.

An arm is one cell of the study's design (a combination of factor levels: the baseline and
each level of each factor with the others at baseline in a one-at-a-time study, every cell
of a factorial one). For each arm the nuisance setting (the run tag `lenet5.nuisance`) with
the best mean validation accuracy over seeds (`final/val_acc`) is selected; its test errors
over seeds are the arm's result. Pure: `Run` records in, records out.

Tables (errors and differences in %, intervals from `inference`, Holm within each table):
  tuned        each level vs the baseline, each arm at its own selected setting
  fixed        the same comparisons, every arm at the baseline's selected setting
  main         (factorial) each level vs the baseline level, averaged over matched cells
  interaction  (factorial) two factors' joint effect beyond their separate ones
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from statistics import mean

from lenet5.core import names
from lenet5.report.inference import (
    DEFAULT_MARGIN,
    Contrast,
    Group,
    adjust,
    contrast,
    describe,
    verdict,
)
from lenet5.report.stats import Run, is_factorial

Cell = tuple[str, ...]  # one level per factor, in the study's factor order


@dataclass(frozen=True)
class Selection:
    """One arm's choice: per setting, (mean validation accuracy %, runs); the winner."""

    cell: Cell
    by_setting: dict[str, tuple[float | None, int]]
    selected: str | None  # None: no run of the arm has a validation accuracy


@dataclass(frozen=True)
class Comparison:
    """One row of a table: an arm (or an effect) against the baseline."""

    table: str  # tuned, fixed, main, interaction
    factor: str  # "activation", or "activation x pooling" for an interaction
    level: str  # "relu", or "relu x max"
    is_baseline: bool
    setting: str | None  # the nuisance setting its runs were trained at
    val: float | None  # their mean validation accuracy, %
    n: int
    mean: float | None  # mean test error, %
    std: float | None
    diff: Contrast | None  # against the baseline, in points of %
    verdict: str


def setting_of(run: Run) -> str:
    return run.tags.get(names.NUISANCE) or ""


def has_nuisance(runs: list[Run]) -> bool:
    return any(names.NUISANCE in r.tags for r in runs)


def cell_of(run: Run, factors: list[str]) -> Cell:
    return tuple(run.tags.get(f, "?") for f in factors)


def arm_name(cell: Cell, factors: list[str], baseline: dict[str, str]) -> str:
    """An arm as the report names it: its off-baseline levels, or "baseline"."""
    off = [f"{f}={lvl}" for f, lvl in zip(factors, cell, strict=True) if lvl != baseline[f]]
    return ", ".join(off) or "baseline"


def is_simple(cell: Cell, factors: list[str], baseline: dict[str, str]) -> bool:
    """Whether `cell` is a simple effect: exactly one factor off its baseline level."""
    return sum(lvl != baseline[f] for f, lvl in zip(factors, cell, strict=True)) == 1


def arm_cell(factors: list[str], baseline: dict[str, str], factor: str, level: str) -> Cell:
    """The cell of a simple effect: `factor` at `level`, the others at the baseline."""
    return tuple(level if f == factor else baseline[f] for f in factors)


def select(runs: list[Run], factors: list[str]) -> dict[Cell, Selection]:
    """Per arm, the setting with the best mean validation accuracy over its seeds (ties: the
    one with more runs, then the first by name). Only FINISHED runs with a test error count."""
    arms: dict[Cell, dict[str, list[float]]] = {}
    for r in runs:
        if r.done:
            vals = arms.setdefault(cell_of(r, factors), {}).setdefault(setting_of(r), [])
            if r.val is not None:
                vals.append(100 * r.val)
    out = {}
    for cell, settings in arms.items():
        by = {s: (mean(v) if v else None, len(v)) for s, v in sorted(settings.items())}
        scored = [(v, n, s) for s, (v, n) in by.items() if v is not None]
        best = max(scored, key=lambda x: (x[0], x[1], [-ord(c) for c in x[2]]), default=None)
        if best is None and len(by) == 1:  # one setting, no validation metric: nothing to pick
            best = (None, 0, next(iter(by)))
        out[cell] = Selection(cell, by, best[2] if best else None)
    return out


def arm_runs(runs: list[Run], factors: list[str], cell: Cell, setting: str | None) -> list[Run]:
    """The arm's finished runs at `setting`."""
    return [r for r in runs if r.done and cell_of(r, factors) == cell and setting_of(r) == setting]


def group(runs: list[Run], factors: list[str], cell: Cell, setting: str | None) -> Group:
    """(seed, test error %) of the arm's runs at `setting`."""
    return [
        (r.tags.get(names.SEED, r.run_id), 100 * r.error)
        for r in arm_runs(runs, factors, cell, setting)
    ]


def _row(table, factor, level, is_base, g: Group, sel, setting, diff):
    """A table's row before adjustment: its verdict comes with the Holm interval."""
    n, avg, std = describe([v for _, v in g])
    val = sel.by_setting.get(setting, (None, 0))[0] if sel and setting is not None else None
    return Comparison(
        table=table,
        factor=factor,
        level=level,
        is_baseline=is_base,
        setting=setting,
        val=val,
        n=n,
        mean=avg,
        std=std,
        diff=diff,
        verdict="-" if is_base else "",
    )


def _rederive(rows: list[Comparison], margin: float):
    """The table's rows with Holm-adjusted intervals and the verdicts they give against the
    study's `margin`."""
    adjusted = adjust([r.diff if not r.is_baseline else None for r in rows])
    out = []
    for r, d in zip(rows, adjusted, strict=True):
        if r.is_baseline:
            out.append(r)
            continue
        out.append(replace(r, diff=d, verdict=verdict(d, margin)))
    return out


def simple_tables(
    runs: list[Run], factors: list[str], baseline: dict[str, str], margin: float = DEFAULT_MARGIN
) -> tuple[dict[Cell, Selection], list[Comparison]]:
    """The selections and the `tuned` and `fixed` tables of the simple effects."""
    sel = select(runs, factors)
    base = tuple(baseline[f] for f in factors)
    base_setting = sel[base].selected if base in sel else None
    g0 = group(runs, factors, base, base_setting)
    rows: list[Comparison] = []
    for table in ("tuned", "fixed"):
        block = []
        for f in factors:
            levels = sorted({r.tags.get(f) for r in runs if r.tags.get(f)} | {baseline[f]})
            block.append(_row(table, f, baseline[f], True, g0, sel.get(base), base_setting, None))
            for lvl in levels:
                if lvl == baseline[f]:
                    continue
                cell = arm_cell(factors, baseline, f, lvl)
                s = sel.get(cell)
                setting = (s.selected if s else None) if table == "tuned" else base_setting
                g = group(runs, factors, cell, setting)
                diff = contrast([g, g0], [1.0, -1.0])
                block.append(_row(table, f, lvl, False, g, s, setting, diff))
        rows += _rederive(block, margin)
    return sel, rows


def tuned_groups(runs, factors, sel) -> dict[Cell, Group]:
    """Each cell's runs at its selected setting."""
    return {
        c: group(runs, factors, c, s.selected) for c, s in sel.items() if s.selected is not None
    }


def _at(cell: Cell, levels: dict[int, str]) -> Cell:
    """`cell` with the factors at these positions moved to these levels."""
    return tuple(levels.get(i, lvl) for i, lvl in enumerate(cell))


def averaged(sets: list[list[Group]], weights: tuple[float, ...]) -> Contrast | None:
    """The contrast `weights` of each matched set of groups, averaged over the sets; None
    without a set."""
    k = len(sets)
    if not k:
        return None
    return contrast([g for gs in sets for g in gs], [w / k for _ in sets for w in weights])


def main_effects(groups: dict[Cell, Group], factors, baseline, levels) -> list[Comparison]:
    """Each level against its factor's baseline level, over the cells matched on the others."""
    rows = []
    for i, f in enumerate(factors):
        for lvl in levels[f]:
            if lvl == baseline[f]:
                continue
            pairs = [
                [groups[c], groups[_at(c, {i: baseline[f]})]]
                for c in groups
                if c[i] == lvl and _at(c, {i: baseline[f]}) in groups
            ]
            d = averaged(pairs, (1.0, -1.0))
            rows.append(
                Comparison("main", f, lvl, False, None, None, len(pairs), None, None, d, "")
            )
    return rows


def _quads(groups: dict[Cell, Group], i: int, j: int, a: str, b: str, base_i: str, base_j: str):
    """Per cell at (a, b) on positions (i, j): the groups of (a, b), (a, base), (base, b),
    (base, base), the other factors as in that cell; only where all four were run."""
    quads = []
    for c in groups:
        if c[i] != a or c[j] != b:
            continue
        four = [
            _at(c, {i: a, j: b}),
            _at(c, {i: a, j: base_j}),
            _at(c, {i: base_i, j: b}),
            _at(c, {i: base_i, j: base_j}),
        ]
        if all(q in groups for q in four):
            quads.append([groups[q] for q in four])
    return quads


def interactions(groups: dict[Cell, Group], factors, baseline, levels) -> list[Comparison]:
    """Each pair of factors' off-baseline levels: (ab - a - b + base), over matched cells."""
    rows = []
    for (i, f), (j, h) in itertools.combinations(enumerate(factors), 2):
        for a, b in itertools.product(levels[f], levels[h]):
            if a == baseline[f] or b == baseline[h]:
                continue
            quads = _quads(groups, i, j, a, b, baseline[f], baseline[h])
            d = averaged(quads, (1.0, -1.0, -1.0, 1.0))
            name, level = f"{f} x {h}", f"{a} x {b}"
            rows.append(
                Comparison(
                    "interaction", name, level, False, None, None, len(quads), None, None, d, ""
                )
            )
    return rows


def factorial_tables(
    runs: list[Run],
    factors: list[str],
    baseline: dict[str, str],
    margin: float = DEFAULT_MARGIN,
    sel=None,
) -> list[Comparison]:
    """Main effects and two-way interactions, each cell at its own selected setting (`sel`:
    the selections, where the caller has them); a contrast uses the cells present on every
    side (matched over the other factors)."""
    sel = select(runs, factors) if sel is None else sel
    groups = tuned_groups(runs, factors, sel)
    levels = {f: sorted({c[i] for c in groups} | {baseline[f]}) for i, f in enumerate(factors)}
    main = main_effects(groups, factors, baseline, levels)
    inter = interactions(groups, factors, baseline, levels)
    return _rederive(main, margin) + _rederive(inter, margin)


def tables(
    runs: list[Run], factors: list[str], baseline: dict[str, str], margin: float = DEFAULT_MARGIN
) -> tuple[dict[Cell, Selection], list[Comparison]]:
    """Everything the tuned report shows: selections, tuned, fixed, and (factorial) main
    effects and interactions."""
    sel, rows = simple_tables(runs, factors, baseline, margin)
    if len({setting_of(r) for r in runs}) <= 1:  # no grid: fixed would repeat tuned
        rows = [r for r in rows if r.table != "fixed"]
    if is_factorial(runs, factors, baseline):
        rows += factorial_tables(runs, factors, baseline, margin, sel)
    return sel, rows

"""What a report's numbers cannot show by themselves: an arm still learning when its runs
stopped, and a tuned setting at the edge of its grid.

- Not converged: an arm whose validation accuracy (mean over its seeds, at the setting
  reported) still rose over its last `LAST` epochs by more than half the study's margin
  (the margin is in points of test error, the rise in points of accuracy, the same scale).
  More epochs could move it by what the study cares about, so its verdict may not hold.
- At the edge: a selected nuisance value that is the lowest or highest of three or more
  tried (Google's Deep Learning Tuning Playbook: the best may lie outside the range searched).

Pure: runs, curves and selections in, lines out.
"""

from __future__ import annotations

import json
from statistics import mean

from lenet5.report.stats import Run
from lenet5.report.tuning import Cell, Selection, arm_name, arm_runs, cell_of
from lenet5.study.nuisance import short

LAST = 2  # epochs over which a still-rising curve is measured


def rise(series: list[list[float]], last: int = LAST) -> float | None:
    """The mean over curves of the gain over their last `last` epochs; None where a curve is
    too short to say."""
    if not series or any(len(s) <= last for s in series):
        return None
    return mean(s[-1] - s[-1 - last] for s in series)


def not_converged(
    runs: list[Run],
    curves: dict[str, list[float]],
    factors: list[str],
    baseline: dict[str, str],
    margin: float,
    settings: dict[Cell, str | None] | None = None,
) -> list[str]:
    """One line per arm still rising: `curves` are validation accuracy (0-1) per epoch by run
    id; `settings` the nuisance setting reported per arm (default: each arm's only one)."""
    lines = []
    cells = sorted({cell_of(r, factors) for r in runs if r.done})
    for cell in cells:
        setting = settings.get(cell) if settings is not None else ""
        if setting is None:
            continue
        group = arm_runs(runs, factors, cell, setting)
        series = [[100 * v for v in curves[r.run_id]] for r in group if curves.get(r.run_id)]
        gain = rise(series)
        if gain is not None and gain > margin / 2:
            at = f" at {short(setting)}" if setting else ""
            lines.append(
                f"{arm_name(cell, factors, baseline)}{at}: not converged, more epochs: its "
                f"validation accuracy rose {gain:+.2f} points over its last {LAST} epochs (mean "
                f"of {len(series)} run{'s' * (len(series) != 1)}), more than half the margin"
            )
    return lines


def _number(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def at_edges(
    sels: dict[Cell, Selection], factors: list[str], baseline: dict[str, str]
) -> list[str]:
    """One line per arm whose selected value of a nuisance key is the lowest or highest of
    the three or more it tried."""
    lines = []
    for cell, sel in sorted(sels.items()):
        if not sel.selected:
            continue
        chosen = json.loads(sel.selected)
        tried = [json.loads(s) for s in sel.by_setting if s]
        for key, value in sorted(chosen.items()):
            grid = sorted({x for t in tried if (x := _number(t.get(key))) is not None})
            v = _number(value)
            if v is None or len(grid) < 3 or grid[0] < v < grid[-1]:
                continue
            side = "top" if v == grid[-1] else "bottom"
            lines.append(
                f"{arm_name(cell, factors, baseline)}: {key}={value} selected, the {side} of "
                f"its grid ({', '.join(f'{g:g}' for g in grid)}): the best may lie "
                f"{'above' if side == 'top' else 'below'} it; widen the grid"
            )
    return lines


def check_lines(lines: list[str]) -> list[str]:
    """The report's section for these lines (nothing where there are none)."""
    return ["Checks:", *(f"  {line}" for line in lines), ""] if lines else []

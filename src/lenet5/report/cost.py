"""Test error against training compute, per arm: is an arm better at equal compute?

Each run records its training FLOPs (`final/train_flops`: forward and backward per sample,
counted by torch's flop counter, times the samples trained on). Per arm (the baseline and
each simple effect, at its selected nuisance setting) the mean over its seeds of both, for
the report's lines and its figure `cost.png` (`render.cost_figure`). Pure: runs in, rows out.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import mean, stdev

from lenet5.report.stats import Run
from lenet5.report.tuning import arm_name, arm_runs, is_simple, select


@dataclass(frozen=True)
class Cost:
    arm: str
    n: int
    flops: float  # training FLOPs, mean over seeds
    error: float  # test error %, mean over seeds
    std: float | None


def costs(runs: list[Run], factors: list[str], baseline: dict[str, str]) -> list[Cost]:
    """The baseline's and each simple effect's cost and error; arms without FLOPs left out."""
    sel = select(runs, factors)
    base = tuple(baseline[f] for f in factors)
    out = []
    for cell in sorted(sel, key=lambda c: (c != base, c)):
        if cell != base and not is_simple(cell, factors, baseline):
            continue
        group = [r for r in arm_runs(runs, factors, cell, sel[cell].selected) if r.flops]
        if not group:
            continue
        errors = [100 * r.error for r in group]
        out.append(
            Cost(
                arm=arm_name(cell, factors, baseline),
                n=len(group),
                flops=mean(r.flops for r in group),
                error=mean(errors),
                std=stdev(errors) if len(errors) > 1 else None,
            )
        )
    return out


def cost_lines(rows: list[Cost]) -> list[str]:
    if not rows:
        return []
    lines = ["Compute: test error against training FLOPs, per arm (mean over its seeds):"]
    for c in rows:
        lines.append(
            f"  {c.arm}: {c.flops:.3g} training FLOPs, test error {c.error:.2f}% (n={c.n})"
        )
    return [*lines, ""]

"""Seeds where they are needed: a study's comparisons looked at after each round of seeds,
each one stopped as soon as its verdict is reached, with the family-wise error kept.

The design (group-sequential, alpha spent over the looks; Lan & DeMets 1983 for spending
functions, Jennison & Turnbull 2000 for the field):

- The looks are fixed before any run: seed counts n_1 < n_2 < ... < n_K (`schedule`), e.g.
  3, 5, 8, 12, 20 for `study.seeds: {min: 3, max: 20}`. A comparison that is still open after
  look k gets seeds up to n_{k+1}; one that is resolved gets no more.
- The error rate alpha is spent over the looks: look k gets
  alpha_k = alpha * (F(n_k) - F(n_{k-1})), with F(n) = (n / n_K) ** rho (`spend`). rho > 1
  keeps most of it for the late looks, where the t quantile is small (O'Brien-Fleming's
  shape); rho = 1 spends it in proportion to the seeds (close to Pocock's).
- Over the study's m comparisons, each look's share is split evenly (Bonferroni): a
  comparison's interval at look k is the paired t interval of its first n_k per-seed
  differences at level 1 - alpha_k / m, and its verdict is `inference.verdict`'s
  (equivalent, worse, better, or too wide to conclude) against the study's margin.

Why the error is kept, whatever the data decide. Every wrong verdict needs an interval that
misses the true difference: "worse" or "better" when it is 0, "equivalent" when it is
margin or more away. The interval of comparison j at look k is a fixed-n interval of the
first n_k seeds (the seeds are 0, 1, 2, ... in order, whatever was decided before), so it
misses with probability alpha_k / m, whether or not the study reached that look. By the
union bound over the m comparisons and K looks, the chance of any wrong verdict is at most
sum_k sum_j alpha_k / m = alpha. This is looser than the boundaries that use the
correlation between looks, and holds for any schedule and any stopping rule; it assumes the
per-seed differences are independent and normal, which `benchmarks/error_rates.py` checks
by simulation with spreads like the measured ones, together with the coverage.

A comparison also stops, as still open, when even the last look could not resolve it
(`futile`): at its spread so far, the last look's interval would be wider than the room the
estimate leaves, even with the estimate one standard error more favourable. Stopping adds
no verdict, so it cannot add an error; it saves the seeds of comparisons whose difference
sits near the margin, which no affordable number of seeds resolves.

Looking again with a fixed-n 95% interval at each round instead, until it excludes 0,
inflates the error rate (the simulation measures by how much), which is why the levels here
shrink with the number of looks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from lenet5.report.inference import Contrast, per_seed, t_crit, verdict
from lenet5.report.stats import Run
from lenet5.report.tuning import Cell, arm_name, group, is_simple, select

RESOLVED = ("equivalent", "worse", "better")
GROWTH = 1.5  # each look has about 1.5x the seeds of the one before
RHO = 3.0  # spending shape: see `spend`; chosen by benchmarks/error_rates.py
HOPE = 1.0  # standard errors of optimism before a comparison is given up (`futile`)


def schedule(least: int, most: int, growth: float = GROWTH) -> list[int]:
    """The seed counts at which a study looks: `least`, then about `growth` times more each
    time (at least one more), ending at `most`: (3, 20) -> [3, 5, 8, 12, 18, 20]."""
    if least < 2:
        raise ValueError(f"study.seeds.min is {least}: an interval needs at least 2 seeds")
    if most < least:
        raise ValueError(f"study.seeds.max ({most}) is below study.seeds.min ({least})")
    looks = [least]
    while looks[-1] < most:
        looks.append(min(most, max(looks[-1] + 1, math.ceil(looks[-1] * growth))))
    return looks


def spend(looks: list[int], alpha: float = 0.05, rho: float = RHO) -> list[float]:
    """The share of `alpha` each look may spend: alpha * (F(n_k) - F(n_{k-1})),
    F(n) = (n / n_K) ** rho; they sum to alpha."""
    last = looks[-1]
    spent = [alpha * (n / last) ** rho for n in looks]
    return [b - a for a, b in zip([0.0, *spent], spent, strict=False)]


@dataclass(frozen=True)
class Outcome:
    """One comparison's result: its verdict, the look it was reached at (1-based; the last
    look seen if still open), the seeds used, the interval it was read from, and whether it
    was given up as `futile`."""

    verdict: str
    look: int
    n: int
    contrast: Contrast | None
    given_up: bool = False

    @property
    def resolved(self) -> bool:
        return self.verdict in RESOLVED


def futile(c: Contrast, last: int, last_level: float, margin: float, hope: float = HOPE) -> bool:
    """Whether the last look (`last` seeds, at `last_level`) could not resolve a comparison
    whose interval so far is `c`, even were its estimate `hope` standard errors more
    favourable: its half-width there, at the spread seen, exceeds both the room for a
    difference (|estimate| + hope * se) and for equivalence (margin - (|estimate| - hope * se))."""
    if c.se is None or c.df is None:
        return False
    sd = c.se * math.sqrt(c.df + 1)
    half = t_crit(last_level, last - 1) * sd / math.sqrt(last)
    est = abs(c.estimate)
    room = max(est + hope * c.se, margin - max(0.0, est - hope * c.se))
    return half > room


def decide(
    diffs: list[list[float]],
    looks: list[int],
    margin: float,
    alpha: float = 0.05,
    rho: float = RHO,
    hope: float | None = HOPE,
) -> list[Outcome]:
    """Each comparison's outcome, walking the looks in order: `diffs[j]` holds comparison j's
    per-seed differences (arm minus baseline, paired by seed), seeds in order; a comparison
    stops at the first look whose interval gives a verdict, at a look where it is `futile`
    (unless `hope` is None), or at the last look its seeds reach (then still open)."""
    shares = spend(looks, alpha, rho)
    m = len(diffs)
    last_level = 1 - shares[-1] / m
    out = []
    for d in diffs:
        result = Outcome("n too small", 0, len(d), None)
        for k, (n, a) in enumerate(zip(looks, shares, strict=True), start=1):
            if len(d) < n:
                break
            c = per_seed(d[:n], 1 - a / m)
            result = Outcome(verdict(c, margin), k, n, c)
            if result.resolved:
                break
            if (
                hope is not None
                and k < len(looks)
                and futile(c, looks[-1], last_level, margin, hope)
            ):
                result = replace(result, given_up=True)
                break
        out.append(result)
    return out


def seeds_wanted(outcomes: list[Outcome], looks: list[int]) -> list[int]:
    """For each comparison, the seeds it needs before the next decision: as many as it has
    for a resolved one or one at the last look (or given up), else the next look's count."""
    wanted = []
    for o in outcomes:
        if o.resolved or o.given_up or o.look >= len(looks):
            wanted.append(o.n)
        else:
            wanted.append(looks[o.look])  # look is 1-based: looks[look] is the next one
    return wanted


def seed_differences(
    runs: list[Run], factors: list[str], baseline: dict[str, str]
) -> dict[Cell, list[float]]:
    """Per simple effect (an arm with one factor off its baseline level), its per-seed test
    error differences to the baseline in points, each side at its own selected nuisance
    setting (the tuned report's selection; the only setting where there is no grid), over
    the seeds both have, in seed order."""
    sel = select(runs, factors)
    base = tuple(baseline[f] for f in factors)
    if base not in sel:
        return {}
    g0 = dict(group(runs, factors, base, sel[base].selected))
    out = {}
    for cell, s in sorted(sel.items()):
        if not is_simple(cell, factors, baseline):
            continue
        g = dict(group(runs, factors, cell, s.selected))
        seeds = sorted(set(g) & set(g0), key=lambda x: int(x) if x.isdigit() else x)
        out[cell] = [g[x] - g0[x] for x in seeds]
    return out


def verdict_lines(
    runs: list[Run],
    factors: list[str],
    baseline: dict[str, str],
    looks: list[int],
    margin: float,
    alpha: float = 0.05,
    hope: float | None = HOPE,
) -> list[str]:
    """The report's block for a sweep run with adaptive seeds: each comparison's sequential
    verdict, the look and seeds it was reached with, its interval and level."""
    diffs = seed_differences(runs, factors, baseline)
    if not diffs:
        return []
    outs = decide(list(diffs.values()), looks, margin, alpha, hope=hope)
    lines = [
        f"Adaptive seeds (looks at {', '.join(map(str, looks))} seeds; alpha {alpha:g} spent "
        f"over the looks and split over the {len(diffs)} comparisons; margin {margin:g}):"
    ]
    for cell, o in zip(diffs, outs, strict=True):
        c = o.contrast
        where = f"look {o.look}, {o.n} seeds" if o.look else f"{o.n} seeds, below the first look"
        if c is None or c.low is None:
            lines.append(f"  {arm_name(cell, factors, baseline)}: {o.verdict} ({where})")
            continue
        lines.append(
            f"  {arm_name(cell, factors, baseline)}: {o.verdict}"
            f"{' (given up: the last look could not resolve it)' if o.given_up else ''}, "
            f"{c.estimate:+.2f} [{c.low:+.2f}, {c.high:+.2f}] at {100 * c.level:.3f}% ({where})"
        )
    return [*lines, ""]

"""Seeds where they are needed: a study's comparisons looked at after each round of seeds,
each one stopped as soon as its verdict is reached, with the family-wise error kept.

The design (repeated confidence intervals: Jennison & Turnbull 1989, and their 2000 book
"Group Sequential Methods with Applications to Clinical Trials", ch. 9):

- The looks are fixed before any run: seed counts n_1 < n_2 < ... < n_K (`schedule`), e.g.
  3, 4, 5, 7, 9, 12, 15, 19, 20 for `study.seeds: {min: 3, max: 20}`. A comparison that is
  still open after look k gets seeds up to n_{k+1}; one that is resolved gets no more.
- Each comparison gets alpha / m of the family-wise error (Bonferroni over the study's m
  comparisons). Its interval at look k is the paired t interval of its first n_k per-seed
  differences at level 1 - a_k, and its verdict is `inference.verdict`'s (equivalent, worse,
  better, or too wide to conclude) against the study's margin.
- The levels (`levels`) are a_k = c * (n_k / n_K) ** SHAPE: with SHAPE 1 the early looks,
  whose t quantiles with few degrees of freedom are wide anyway, get less than the late ones.
  c is the largest value for which the K intervals of one comparison all cover its true
  difference with probability at least 1 - alpha / m. For normal per-seed differences that
  probability depends on nothing but the looks (the t statistics of the first n_k seeds
  are pivotal), so c is found once per schedule by simulating those t statistics: 2^18
  paths, and the quantile taken two binomial standard errors on the safe side of alpha / m.

Why the error is kept, whatever the data decide. Every wrong verdict needs an interval that
misses the true difference: "worse" or "better" when it is 0, "equivalent" when it is
margin or more away. The intervals of one comparison at all its looks cover together with
probability 1 - alpha / m, so whichever look the study stops it at, and for whatever reason,
its verdict is wrong with probability at most alpha / m; by the union bound over the m
comparisons, the chance of any wrong verdict is at most alpha. Calibrating the looks of one
comparison jointly, instead of splitting alpha / m over them (a union bound over the looks
too), uses how strongly the looks of nested seeds agree: the intervals are narrower at the
same error. It assumes the per-seed differences are independent and normal, which
`benchmarks/error_rates.py` checks by simulation with spreads like the measured ones,
together with the coverage.

A comparison also stops, as still open, when even the last look could not resolve it
(`futile`): at its spread so far, the last look's interval would be wider than the room the
estimate leaves, even with the estimate one standard error more favourable. Stopping adds
no verdict, so it cannot add an error; it saves the seeds of comparisons whose difference
sits near the margin, which no affordable number of seeds resolves.

Looking again with a fixed-n 95% interval at each round instead, until it excludes 0,
inflates the error rate (the simulation measures by how much), which is why the levels here
are calibrated to the number of looks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

from lenet5.report.inference import Contrast, per_seed, t_crit, verdict
from lenet5.report.stats import Run
from lenet5.report.tuning import Cell, arm_name, group, is_simple, select

RESOLVED = ("equivalent", "worse", "better")
GROWTH = 1.25  # each look has about 1.25x the seeds of the one before
SHAPE = 1.0  # the looks' levels grow as (n_k / n_K) ** SHAPE: see `levels`
PATHS = 1 << 18  # simulated paths that calibrate `levels`
HOPE = 1.0  # standard errors of optimism before a comparison is given up (`futile`)


def schedule(least: int, most: int, growth: float = GROWTH) -> list[int]:
    """The seed counts at which a study looks: `least`, then about `growth` times more each
    time (at least one more), ending at `most`: (3, 20) -> [3, 4, 5, 7, 9, 12, 15, 19, 20]."""
    if least < 2:
        raise ValueError(f"study.seeds.min is {least}: an interval needs at least 2 seeds")
    if most < least:
        raise ValueError(f"study.seeds.max ({most}) is below study.seeds.min ({least})")
    looks = [least]
    while looks[-1] < most:
        looks.append(min(most, max(looks[-1] + 1, math.ceil(looks[-1] * growth))))
    return looks


@lru_cache(maxsize=64)  # one calibration per schedule; the simulation asks millions of times
def levels(looks: tuple[int, ...], alpha: float, shape: float = SHAPE) -> tuple[float, ...]:
    """The two-sided error a_k of each look's interval of one comparison, a_k = c * (n_k /
    n_K) ** shape, with c such that some look's interval misses the true difference with
    probability at most `alpha` (normal per-seed differences; one look: a_1 = alpha)."""
    if len(looks) == 1:
        return (alpha,)
    import numpy as np
    from scipy.stats import t  # deferred: scipy.stats takes half a second to import

    n = np.asarray(looks)
    weight = (n / n[-1]) ** shape
    rng = np.random.default_rng(0)  # fixed: the same levels for a schedule everywhere
    worst = []  # per path: the smallest c at which some look's interval misses
    for _ in range(PATHS // 8192):
        z = rng.standard_normal((8192, n[-1]))
        total, squares = np.cumsum(z, 1)[:, n - 1], np.cumsum(z * z, 1)[:, n - 1]
        mean = total / n
        sd = np.sqrt((squares - n * mean * mean) / (n - 1))
        p = 2 * t.sf(np.abs(mean) / (sd / np.sqrt(n)), n - 1)
        worst.append((p / weight).min(1))
    worst = np.sort(np.concatenate(worst))
    # Two binomial standard errors below alpha's count: the calibration's own noise on the
    # safe side.
    k = math.floor(alpha * PATHS - 2 * math.sqrt(alpha * PATHS))
    return tuple(float(a) for a in worst[max(k, 0)] * weight)


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
    shape: float = SHAPE,
    hope: float | None = HOPE,
) -> list[Outcome]:
    """Each comparison's outcome, walking the looks in order: `diffs[j]` holds comparison j's
    per-seed differences (arm minus baseline, paired by seed), seeds in order; a comparison
    stops at the first look whose interval gives a verdict, at a look where it is `futile`
    (unless `hope` is None), or at the last look its seeds reach (then still open)."""
    errors = levels(tuple(looks), alpha / len(diffs), shape)
    last_level = 1 - errors[-1]
    out = []
    for d in diffs:
        result = Outcome("n too small", 0, len(d), None)
        for k, (n, a) in enumerate(zip(looks, errors, strict=True), start=1):
            if len(d) < n:
                break
            c = per_seed(d[:n], 1 - a)
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
        f"Adaptive seeds (looks at {', '.join(map(str, looks))} seeds; alpha {alpha:g} split "
        f"over the {len(diffs)} comparisons, each calibrated over the looks; margin {margin:g}):"
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

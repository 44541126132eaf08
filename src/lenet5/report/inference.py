"""Intervals a reviewer accepts: contrasts of arms, paired by seed where they can be, Holm.

A comparison is a contrast of groups of runs, sum_i c_i * mean_i: a difference to the
baseline (+1, -1), a main effect over matched cells, a two-way interaction
(+1 -1 -1 +1). Where every group has one run per seed and the same seeds (two or more),
the contrast is taken per seed and the interval is the one-sample t interval of those
per-seed contrasts (for two groups: the paired t interval, scipy's `ttest_rel`);
otherwise the groups are independent and the interval is Welch-Satterthwaite's (for two
groups: scipy's `ttest_ind(equal_var=False)`).

The intervals of one table are adjusted for its number of comparisons with Holm's step-down
procedure: adjusted p-values, and each interval at the level Holm tests its comparison at
(alpha / (m - rank + 1) for the comparisons up to the first one Holm does not reject, that
first one's level for the rest), so an interval excludes 0 exactly where its adjusted p is
below alpha.

The plain report (`stats`) takes its intervals from here too, unadjusted: the mean's t
interval (`mean_se`, `t_crit`) and Welch's of a difference (`welch_contrast`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from statistics import mean, stdev

Group = list[tuple[str, float]]  # (seed, value) of each run in one arm


@lru_cache(maxsize=4096)  # a study's levels and dfs repeat; the simulation asks millions of times
def t_crit(level: float, df: float) -> float:
    """Student's t quantile that bounds a two-sided `level` interval with `df` degrees of
    freedom (0.95: the 0.975 quantile)."""
    from scipy.stats import t  # deferred: scipy.stats takes half a second to import

    return float(t.ppf(0.5 + level / 2, df))


def _p(estimate: float, se: float, df: float) -> float:
    """Two-sided p-value of the t test of `estimate` against 0."""
    if se == 0:
        return 1.0 if estimate == 0 else 0.0
    from scipy.stats import t  # deferred: scipy.stats takes half a second to import

    return float(2 * t.sf(abs(estimate) / se, df))


def describe(values: list[float]) -> tuple[int, float | None, float | None]:
    """(n, mean, standard deviation) of a sample; the mean None without values, the standard
    deviation None below two."""
    return (
        len(values),
        mean(values) if values else None,
        stdev(values) if len(values) > 1 else None,
    )


def mean_se(values: list[float]) -> tuple[float, float, int]:
    """(mean, standard error, degrees of freedom) of one sample of two values or more: the
    one-sample t interval's parts (a paired contrast's, on its per-seed contrasts)."""
    return mean(values), stdev(values) / math.sqrt(len(values)), len(values) - 1


def welch_se_df(values: list[list[float]], coefs: list[float]) -> tuple[float, float]:
    """(standard error, Welch-Satterthwaite degrees of freedom) of sum c_i mean_i over
    independent groups of two values or more; no spread anywhere: (0, inf), as the df is 0/0."""
    parts = [c * c * stdev(v) ** 2 / len(v) for c, v in zip(coefs, values, strict=True)]
    var = sum(parts)
    if var == 0:
        return 0.0, math.inf
    df = var**2 / sum(p * p / (len(v) - 1) for p, v in zip(parts, values, strict=True) if p > 0)
    return math.sqrt(var), df


@dataclass(frozen=True)
class Contrast:
    """An estimated contrast and what its interval needs; values in the groups' unit."""

    estimate: float
    se: float | None  # None: too few runs for an interval
    df: float | None
    paired: bool
    n: str  # "3 pairs" (per seed), "3+3" (runs per group)
    level: float = 0.95  # confidence level of `low`/`high`
    p: float | None = None  # two-sided, unadjusted
    p_adj: float | None = None  # Holm-adjusted within its table

    @property
    def test(self) -> str:
        return "paired t" if self.paired else "Welch"

    @property
    def half(self) -> float | None:
        if self.se is None or self.df is None:
            return None
        if self.se == 0:
            return 0.0
        return t_crit(self.level, self.df) * self.se

    @property
    def low(self) -> float | None:
        h = self.half
        return None if h is None else self.estimate - h

    @property
    def high(self) -> float | None:
        h = self.half
        return None if h is None else self.estimate + h


def pairable(groups: list[Group]) -> bool:
    """One run per seed in every group, the same seeds everywhere, at least two."""
    seed_sets = []
    for g in groups:
        seeds = [s for s, _ in g]
        if len(set(seeds)) != len(seeds):
            return False
        seed_sets.append(set(seeds))
    return len(seed_sets[0]) >= 2 and all(s == seed_sets[0] for s in seed_sets)


def paired_contrast(groups: list[Group], coefs: list[float], level: float = 0.95) -> Contrast:
    """The contrast per seed, and the one-sample t interval of those (`pairable` groups)."""
    seeds = sorted({s for s, _ in groups[0]})
    by = [dict(g) for g in groups]
    return per_seed([sum(c * b[s] for c, b in zip(coefs, by, strict=True)) for s in seeds], level)


def per_seed(d: list[float], level: float = 0.95) -> Contrast:
    """The one-sample t interval (and p) of per-seed contrasts, two or more."""
    est, se, df = mean_se(d)
    return Contrast(est, se, df, True, f"{len(d)} pairs", level, _p(est, se, df))


def welch_contrast(values: list[list[float]], coefs: list[float], level: float = 0.95) -> Contrast:
    """sum c_i mean(values_i) over independent groups, with Welch's interval where every
    group has two values or more (else an estimate without one)."""
    est = sum(c * mean(v) for c, v in zip(coefs, values, strict=True))
    n = "+".join(str(len(v)) for v in values)
    if any(len(v) < 2 for v in values):
        return Contrast(est, None, None, False, n, level)
    se, df = welch_se_df(values, coefs)
    return Contrast(est, se, df, False, n, level, _p(est, se, df))


def contrast(groups: list[Group], coefs: list[float], level: float = 0.95) -> Contrast | None:
    """sum c_i mean(group_i) with its interval, paired by seed where the groups allow it,
    else Welch's; None if a group is empty."""
    if any(not g for g in groups):
        return None
    if pairable(groups):
        return paired_contrast(groups, coefs, level)
    return welch_contrast([[v for _, v in g] for g in groups], coefs, level)


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def holm_levels(pvalues: list[float], alpha: float = 0.05) -> list[float]:
    """The confidence level of each comparison's interval, compatible with Holm's test."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    levels, stopped = [0.0] * m, None
    for rank, i in enumerate(order):
        a = alpha / (m - rank)
        if stopped is None and pvalues[i] > a:
            stopped = a
        levels[i] = 1 - (stopped if stopped is not None else a)
    return levels


def adjust(contrasts: list[Contrast | None], alpha: float = 0.05) -> list[Contrast | None]:
    """The table's contrasts with Holm's adjusted p and intervals; those without a p
    (too few runs) stay as they are and do not count among the comparisons."""
    tested = [i for i, c in enumerate(contrasts) if c is not None and c.p is not None]
    ps = [contrasts[i].p for i in tested]
    out = list(contrasts)
    for i, p_adj, level in zip(tested, holm(ps), holm_levels(ps, alpha), strict=True):
        out[i] = replace(contrasts[i], p_adj=p_adj, level=level)
    return out


# The smallest difference in test error (points) a study cares about, where it says none.
DEFAULT_MARGIN = 0.2


def verdict(c: Contrast | None, margin: float = DEFAULT_MARGIN) -> str:
    """What an (adjusted) interval of an error difference lets one say, given the smallest
    difference that matters (`margin`, points of test error):

    - `equivalent`: it lies inside +/- margin. Read as two one-sided tests (Schuirmann 1987)
      at the interval's own level, each side at half its error rate: whatever the difference
      is, and whether or not it excludes 0, it is smaller than what matters;
    - `worse` / `better`: it excludes 0 (the error is higher / lower) and reaches past the
      margin;
    - `too wide to conclude`: neither, more runs are needed.
    """
    if c is None or c.half is None:
        return "n too small"
    if -margin < c.low and c.high < margin:
        return "equivalent"
    if c.low > 0:
        return "worse"
    if c.high < 0:
        return "better"
    return "too wide to conclude"


MOST_SEEDS = 200  # how far seeds_needed looks


def seeds_needed(
    c: Contrast | None, margin: float = DEFAULT_MARGIN, most: int = MOST_SEEDS
) -> int | None:
    """For a paired contrast, the fewest seeds (pairs) whose interval would resolve it (at the
    spread of its per-seed differences seen so far, its estimate and its level): inside
    +/- margin where the estimate is within it (equivalent), else clear of 0 (worse or
    better). None where it cannot say: not paired, no spread yet, or more than `most`."""
    if c is None or not c.paired or not c.se or c.df is None:
        return None
    n = round(c.df) + 1
    sd = c.se * math.sqrt(n)
    d = abs(c.estimate)
    room = margin - d if d < margin else d
    for k in range(max(n, 2), most + 1):
        if t_crit(c.level, k - 1) * sd / math.sqrt(k) < room:
            return k
    return None

"""The statistics of a sweep report, pure: records in, records out, no store, no I/O.

For each factor the levels are compared with the other factors at their baseline levels
(simple effects; for a one-at-a-time study these are all its contrasts), and, for a
factorial study, over all runs (main effects). Test errors are in %; differences to the
baseline level come with Welch's 95% confidence interval (`inference` computes the intervals
of both reports).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from lenet5.report.inference import describe, mean_se, t_crit, welch_contrast


@dataclass(frozen=True)
class Run:
    """One child run of a sweep, detached from MLflow's entities."""

    run_id: str
    name: str
    status: str  # MLflow's: FINISHED, FAILED, KILLED, RUNNING, SCHEDULED
    tags: dict[str, str]  # design choice -> level, among MLflow's and lenet5's own tags
    error: float | None  # test error as a fraction; None when not logged
    val: float | None = None  # best validation accuracy (final/val_acc), a fraction
    settings: dict[str, str] = field(default_factory=dict)  # the sweep's searched values
    flops: float | None = None  # training FLOPs (final/train_flops); None before they existed

    @property
    def done(self) -> bool:
        """Whether the run enters the statistics: FINISHED, with an error logged."""
        return self.status == "FINISHED" and self.error is not None


@dataclass(frozen=True)
class Row:
    """One level of one factor in one section; errors and differences in %."""

    section: str  # "simple" or "main"
    factor: str
    level: str
    is_baseline: bool
    n: int  # runs that entered the statistics
    mean: float | None
    std: float | None
    ci_half: float | None  # half-width of the 95% t interval of the mean
    diff: float | None  # mean minus the baseline level's mean; 0 for the baseline itself
    diff_low: float | None  # Welch's 95% interval of `diff`
    diff_high: float | None


@dataclass(frozen=True)
class Counts:
    """How far a sweep has got."""

    finished: int
    failed: int
    killed: int
    running: int  # RUNNING or SCHEDULED
    expected: int | None  # None when the parent run does not say

    @property
    def not_started(self) -> int | None:
        if self.expected is None:
            return None
        started = self.finished + self.failed + self.killed + self.running
        return max(0, self.expected - started)

    @property
    def missing(self) -> int:
        """Runs without a result yet: running, or not started where that is known."""
        return self.running + (self.not_started or 0)


def mean_ci_half(values: list[float]) -> float | None:
    """Half-width of the 95% t interval of the mean; None below two values."""
    if len(values) < 2:
        return None
    _, se, df = mean_se(values)
    return t_crit(0.95, df) * se


def welch_ci(a: list[float], b: list[float]) -> tuple[float, float] | None:
    """95% Welch t interval of mean(a) - mean(b); None unless both have two values."""
    if len(a) < 2 or len(b) < 2:
        return None
    c = welch_contrast([a, b], [1.0, -1.0])
    return c.low, c.high


def _level_row(
    section: str,
    factor: str,
    level: str,
    is_base: bool,
    errors: list[float],
    base_errors: list[float],
) -> Row:
    pct = [100 * e for e in errors]
    base_pct = [100 * e for e in base_errors]
    diff = low = high = None
    if is_base:
        diff = 0.0 if pct else None
    elif pct and base_pct:
        d = welch_contrast([pct, base_pct], [1.0, -1.0])  # no interval below two runs a side
        diff, low, high = d.estimate, d.low, d.high
    n, avg, std = describe(pct)
    return Row(
        section=section,
        factor=factor,
        level=level,
        is_baseline=is_base,
        n=n,
        mean=avg,
        std=std,
        ci_half=mean_ci_half(pct),
        diff=diff,
        diff_low=low,
        diff_high=high,
    )


def _sort_key(row: Row) -> tuple[bool, float, str]:
    # By mean error, best first; levels without finished runs last.
    return (row.mean is None, row.mean or 0.0, row.level)


def off_baseline(tags: dict[str, str], factors: list[str], baseline: dict[str, str]) -> int:
    return sum(tags.get(f) != baseline[f] for f in factors)


def is_factorial(runs: Iterable[Run], factors: list[str], baseline: dict[str, str]) -> bool:
    """True when some run moves two or more factors off their baseline at once."""
    return any(off_baseline(r.tags, factors, baseline) >= 2 for r in runs)


def _errors(
    done: list[Run],
    factors: list[str],
    baseline: dict[str, str],
    factor: str,
    level: str,
    marginal: bool,
) -> list[float]:
    """Errors of the runs at `level` of `factor`: all of them (marginal), or only those
    whose other factors sit at their baseline (the simple effect at the baseline)."""
    return [
        r.error
        for r in done
        if r.tags.get(factor) == level
        and (marginal or all(r.tags.get(g) == baseline[g] for g in factors if g != factor))
    ]


def summarize(runs: list[Run], factors: list[str], baseline: dict[str, str]) -> list[Row]:
    """One row per section x factor x level; errors in %, levels sorted by mean error.

    Only runs that are `done` enter the statistics; the others still contribute their
    levels, so a level whose runs have not finished shows up with n = 0 instead of
    silently disappearing.
    """
    done = [r for r in runs if r.done]
    sections = ["simple", "main"] if is_factorial(runs, factors, baseline) else ["simple"]
    rows = []
    for section in sections:
        for factor in factors:
            levels = {r.tags.get(factor) for r in runs} | {baseline[factor]}
            levels.discard(None)

            marginal = section == "main"
            base_errors = _errors(done, factors, baseline, factor, baseline[factor], marginal)
            block = [
                _level_row(
                    section,
                    factor,
                    lvl,
                    lvl == baseline[factor],
                    _errors(done, factors, baseline, factor, lvl, marginal),
                    base_errors,
                )
                for lvl in levels
            ]
            rows += sorted(block, key=_sort_key)
    return rows


def counts(children: list[Run], expected: int | None) -> Counts:
    by = {s: sum(r.status == s for r in children) for s in ("FINISHED", "FAILED", "KILLED")}
    return Counts(
        finished=by["FINISHED"],
        failed=by["FAILED"],
        killed=by["KILLED"],
        running=len(children) - sum(by.values()),
        expected=expected,
    )

"""Per-example evidence, from each run's `predictions/test.csv` (true and predicted class of
every test example, in the test set's order):

- which digits an arm gets wrong that the baseline gets right (and the reverse), paired by
  seed: the same test examples, one run of each side per seed;
- how much of an arm's spread over seeds the test set's own sampling explains: a run's test
  error on n examples varies by sqrt(p (1 - p) / n) from the error it would have on the
  whole distribution (binomial; Jordan 2024, "On the Variance of Neural Network Training
  with respect to Test Sets and Distributions"), so of the variance seen over seeds that
  much is the test set's and the rest the training seeds' own.

Pure: arrays of (target, predicted) per run in, numbers and lines out.
"""

from __future__ import annotations

import math
from collections import Counter
from statistics import mean, variance

Predictions = tuple[list[int], list[int]]  # (target, predicted) per test example


def wrong(p: Predictions) -> list[bool]:
    return [t != q for t, q in zip(*p, strict=True)]


def flips(arm: Predictions, base: Predictions) -> tuple[Counter, Counter]:
    """Per true class: examples the arm gets wrong and the baseline right, and the reverse."""
    worse, better = Counter(), Counter()
    for t, a, b in zip(arm[0], wrong(arm), wrong(base), strict=True):
        if a and not b:
            worse[t] += 1
        elif b and not a:
            better[t] += 1
    return worse, better


def test_set_share(runs: list[Predictions]) -> tuple[float, float, float] | None:
    """(spread over seeds, the test set's binomial part, the seeds' own), in points of test
    error; None below two runs. The seeds' own is 0 where the binomial part exceeds all."""
    if len(runs) < 2:
        return None
    errors = [sum(wrong(p)) / len(p[0]) for p in runs]
    binomial = mean(e * (1 - e) / len(p[0]) for e, p in zip(errors, runs, strict=True))
    seen = variance(errors)
    own = max(0.0, seen - binomial)
    return 100 * math.sqrt(seen), 100 * math.sqrt(binomial), 100 * math.sqrt(own)


def _top(counts: Counter, per: int, k: int = 3) -> str:
    return ", ".join(f"{d} ({n / per:.0f})" for d, n in counts.most_common(k))


def comparison_line(name: str, pairs: list[tuple[Predictions, Predictions]]) -> str:
    """One comparison's flips, per seed (mean over the seeds both sides have)."""
    worse, better = Counter(), Counter()
    for arm, base in pairs:
        w, b = flips(arm, base)
        worse += w
        better += b
    k, n = len(pairs), len(pairs[0][0][0])
    most = [f"lost most on digits {_top(worse, k)}"] if worse else []
    most += [f"gained most on {_top(better, k)}"] if better else []
    return (
        f"  {name}: wrong where the baseline is right {sum(worse.values()) / k:.0f} of {n:,} "
        f"test digits per seed, right where it is wrong {sum(better.values()) / k:.0f}"
        + "".join(f"; {m}" for m in most)
        + f" ({k} seed{'s' * (k != 1)})"
    )


def spread_line(name: str, runs: list[Predictions]) -> str | None:
    share = test_set_share(runs)
    if share is None:
        return None
    seen, binomial, own = share
    return (
        f"  {name}: test error spread over {len(runs)} seeds {seen:.2f} points (std); the test "
        f"set's sampling alone {binomial:.2f}, the training seeds' own {own:.2f}"
    )

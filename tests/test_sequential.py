"""The adaptive seeds' statistics (report.sequential): the looks, their calibrated levels,
when a comparison stops, and its error rate against the naive way, by a small simulation."""

import math
import random

import pytest

from lenet5.report.inference import per_seed, t_crit, verdict
from lenet5.report.sequential import decide, levels, schedule, seeds_wanted


def test_the_looks_grow_by_a_quarter_and_end_at_the_most():
    assert schedule(3, 20) == [3, 4, 5, 7, 9, 12, 15, 19, 20]
    assert schedule(3, 20, growth=1.5) == [3, 5, 8, 12, 18, 20]
    assert schedule(5, 5) == [5]
    assert schedule(2, 4) == [2, 3, 4]
    with pytest.raises(ValueError, match="at least 2 seeds"):
        schedule(1, 10)
    with pytest.raises(ValueError, match=r"study.seeds.max \(2\) is below study.seeds.min \(3\)"):
        schedule(3, 2)


def misses(looks, errors, paths, rng):
    """The share of simulated comparisons (normal per-seed differences, true difference 0)
    whose interval misses 0 at some look, each look at its level."""
    missed = 0
    for _ in range(paths):
        d = [rng.gauss(0, 1) for _ in range(looks[-1])]
        for n, a in zip(looks, errors, strict=True):
            m = sum(d[:n]) / n
            se = math.sqrt(sum((x - m) ** 2 for x in d[:n]) / (n - 1) / n)
            if abs(m) > t_crit(1 - a, n - 1) * se:
                missed += 1
                break
    return missed / paths


def test_the_levels_keep_the_error_over_all_looks_and_beat_splitting_it():
    looks = (3, 5, 8, 12, 18, 20)
    errors = levels(looks, 0.05)
    assert levels((5,), 0.05) == (0.05,)  # one look: a fixed-n interval
    assert list(errors) == sorted(errors) and errors[-1] < 0.05  # later looks get more
    assert errors == pytest.approx([errors[-1] * n / 20 for n in looks])  # SHAPE 1
    flat = levels(looks, 0.05, shape=0)
    assert len(set(flat)) == 1  # Pocock's shape: the same level at every look
    # Splitting alpha over the looks would give each 0.05/6 at most and sum to 0.05; the
    # calibration spends more in all, because the looks of nested seeds agree.
    assert sum(errors) > 0.05 and sum(flat) > 0.05
    # An independent check, with other random numbers than the calibration's: some look
    # misses in 5% of comparisons (3 standard errors of 4,000 draws: +/- 1.0 points), where
    # every look at 95% would miss in more than twice as many.
    rng = random.Random(7)
    assert misses(looks, errors, 4000, rng) == pytest.approx(0.05, abs=0.01)
    assert misses(looks, [0.05] * 6, 1000, rng) > 0.10


def test_a_clear_difference_stops_early_at_its_looks_level():
    looks = [3, 5, 8, 12, 18, 20]
    rng = random.Random(0)
    big = [4.0 + rng.gauss(0, 0.3) for _ in range(20)]  # a 4-point loss, small spread
    near = [0.18 + rng.gauss(0, 0.5) for _ in range(20)]  # 0.18 against a 0.2 margin
    none = [rng.gauss(0, 0.05) for _ in range(20)]  # nothing, measured finely
    out = decide([big, near, none], looks, margin=0.2, alpha=0.05)
    # At 3 seeds its level is 0.999: t with 2 df needs 4.0 to be ~31 se's away.
    errors = levels(tuple(looks), 0.05 / 3)  # Bonferroni over 3
    assert t_crit(1 - errors[0], 2) > 30
    assert (out[0].verdict, out[0].look, out[0].n) == ("worse", 2, 5)
    c = out[0].contrast
    assert c.level == pytest.approx(1 - errors[1])
    assert c.high - c.low == pytest.approx(2 * t_crit(1 - errors[1], 4) * c.se)
    # Near the margin no affordable number of seeds resolves it: given up, still open.
    assert out[1].verdict == "too wide to conclude" and out[1].given_up and out[1].n < 20
    assert out[2].verdict == "equivalent" and out[2].n < 20
    assert seeds_wanted(out, looks) == [5, out[1].n, out[2].n]


def test_an_open_comparison_asks_for_the_next_look():
    looks = [3, 5, 8]
    wide = [1.0, -1.0, 0.5]  # only 3 seeds so far, wide: neither resolved nor hopeless yet
    out = decide([wide], looks, margin=0.5, hope=None)
    assert (out[0].verdict, out[0].look, out[0].n) == ("too wide to conclude", 1, 3)
    assert seeds_wanted(out, looks) == [5]
    assert seeds_wanted(decide([wide[:2]], looks, margin=0.5), looks) == [3]  # below the first


def test_family_wise_error_with_no_effect_is_kept_where_looking_naively_is_not():
    """500 simulated 4-comparison studies with no true difference, each looked at after
    every round: the sequential levels make about 5% wrong claims of a difference (at most
    5% plus two standard errors of 500 draws); 95% intervals looked at the same way make
    several times more (fixed seed: the same draw every time, so the numbers are exact)."""
    looks = schedule(3, 20)
    rng = random.Random(1)
    sequential = naive = 0
    for _ in range(500):
        diffs = [[rng.gauss(0, 0.2) for _ in range(20)] for _ in range(4)]
        outs = decide(diffs, looks, margin=0.2)
        sequential += any(o.verdict in ("worse", "better") for o in outs)
        naive += any(
            any(verdict(per_seed(d[:n]), 0.2) in ("worse", "better") for n in looks) for d in diffs
        )
    assert sequential / 500 <= 0.05 + 2 * (0.05 * 0.95 / 500) ** 0.5
    assert naive > 3 * sequential

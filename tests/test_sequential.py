"""The adaptive seeds' statistics (report.sequential): the looks, the spending, when a
comparison stops, and its error rate against the naive way, by a small simulation."""

import random

import pytest

from lenet5.report.inference import t_crit
from lenet5.report.sequential import decide, schedule, seeds_wanted, spend


def test_the_looks_grow_by_half_and_end_at_the_most():
    assert schedule(3, 20) == [3, 5, 8, 12, 18, 20]
    assert schedule(5, 5) == [5]
    assert schedule(2, 4) == [2, 3, 4]
    with pytest.raises(ValueError, match="at least 2 seeds"):
        schedule(1, 10)
    with pytest.raises(ValueError, match=r"study.seeds.max \(2\) is below study.seeds.min \(3\)"):
        schedule(3, 2)


def test_alpha_is_spent_whole_and_mostly_late():
    shares = spend([3, 5, 8, 12, 18, 20], alpha=0.05, rho=3)
    assert sum(shares) == pytest.approx(0.05)
    assert shares[0] == pytest.approx(0.05 * (3 / 20) ** 3)
    assert shares[4] > shares[3] > shares[2] > shares[1] > shares[0]
    flat = spend([5, 10, 15, 20], alpha=0.05, rho=1)  # in proportion to the seeds
    assert flat == pytest.approx([0.0125] * 4)


def test_a_clear_difference_stops_early_at_its_looks_level():
    looks = [3, 5, 8, 12, 18, 20]
    rng = random.Random(0)
    big = [4.0 + rng.gauss(0, 0.3) for _ in range(20)]  # a 4-point loss, small spread
    near = [0.18 + rng.gauss(0, 0.3) for _ in range(20)]  # 0.18 against a 0.2 margin
    none = [rng.gauss(0, 0.05) for _ in range(20)]  # nothing, measured finely
    out = decide([big, near, none], looks, margin=0.2, alpha=0.05, rho=3)
    # At 3 seeds its share of alpha is 0.00017: t with 2 df needs 4.0 to be ~100 se's away.
    assert (out[0].verdict, out[0].look, out[0].n) == ("worse", 2, 5)
    share = spend(looks, 0.05, 3)[1]
    assert out[0].contrast.level == pytest.approx(1 - share / 3)  # Bonferroni over 3
    c = out[0].contrast
    assert c.high - c.low == pytest.approx(2 * t_crit(1 - share / 3, 4) * c.se)
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
    """200 simulated 4-comparison studies with no true difference, each looked at after every
    round: the sequential levels make fewer than 5% wrong claims of a difference; 95%
    intervals looked at the same way make several times more (fixed seed: the same draw
    every time, so the numbers are exact)."""
    looks = schedule(3, 20)
    rng = random.Random(1)
    sequential = naive = 0
    for _ in range(200):
        diffs = [[rng.gauss(0, 0.2) for _ in range(20)] for _ in range(4)]
        outs = decide(diffs, looks, margin=0.2)
        sequential += any(o.verdict in ("worse", "better") for o in outs)
        flat = decide(diffs, looks, margin=0.2, alpha=0.05 * 4 * len(looks), rho=1, hope=None)
        naive += any(o.verdict in ("worse", "better") for o in flat)
    assert sequential / 200 <= 0.05
    assert naive / 200 > 3 * max(sequential, 1) / 200

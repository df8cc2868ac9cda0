"""Robust statistics, the rank-based ratio interval the gate relies on, and `ab`'s paired interval."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_efficientllm.judging.paired import ALPHA  # ab's level, at which its interval is drawn
from pytest_efficientllm.judging.stats import (
    _rank_k,
    hodges_lehmann,
    ratio_interval,
    shift_interval,
    signed_rank_p,
    summarize,
)


def test_summary_of_known_samples() -> None:
    s = summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert (s.n, s.median, s.minimum, s.maximum) == (5, 3.0, 1.0, 100.0)
    assert s.mad == 1.0  # |x - 3| = 2, 1, 0, 1, 97 -> median 1: the outlier does not move it
    assert s.iqr == 2.0


@pytest.mark.parametrize(("m", "n", "k"), [(5, 5, 3), (7, 5, 6), (10, 12, 30), (8, 8, 14)])
def test_rank_critical_values_match_published_mann_whitney_tables(m: int, n: int, k: int) -> None:
    # Two-sided 5% critical U from standard tables is k - 1 (reject when U <= k - 1).
    assert _rank_k(m, n, 0.05) == k


def test_the_interval_covers_no_change_about_95_percent_of_the_time() -> None:
    # A/A with skewed (lognormal) rounds: coverage is a property of the method, not luck.
    rng = np.random.default_rng(1)
    trials = 2000
    covered = 0
    for _ in range(trials):
        iv = ratio_interval(rng.lognormal(0, 0.05, 7), rng.lognormal(0, 0.05, 7))
        covered += iv.low <= 1.0 <= iv.high
    assert 0.93 <= covered / trials <= 0.985


def test_a_ten_percent_shift_is_resolved_above_one() -> None:
    rng = np.random.default_rng(2)
    base = rng.lognormal(0, 0.01, 7)
    iv = ratio_interval(base, 1.10 * rng.lognormal(0, 0.01, 7))
    assert iv.resolved and iv.low > 1.05
    assert iv.ratio == pytest.approx(1.10, rel=0.03)


def test_one_wild_round_does_not_move_the_interval_much() -> None:
    base = [1.0, 1.01, 0.99, 1.02, 0.98, 1.0, 1.01]
    calm = ratio_interval(base, base)
    wild = ratio_interval(base, base[:-1] + [50.0])
    assert wild.high < 1.05 and calm.low <= 1.0 <= calm.high


def test_too_few_rounds_are_said_not_faked() -> None:
    iv = ratio_interval([1.0, 1.0, 1.0], [2.0, 2.0, 2.0])
    assert not iv.resolved and iv.low is None and iv.high is None
    assert "at least 5 rounds" in iv.why


def test_large_samples_use_the_normal_approximation_and_stay_fast() -> None:
    rng = np.random.default_rng(3)
    iv = ratio_interval(rng.lognormal(0, 0.02, 3000), 1.02 * rng.lognormal(0, 0.02, 3000))
    assert iv.resolved and 1.0 < iv.low < 1.02 < iv.high < 1.04


@pytest.mark.parametrize("bad", [[], [0.0, 1.0], [float("nan")], [-1.0]])
def test_bad_samples_are_rejected_on_either_side(bad: list[float]) -> None:
    with pytest.raises(ValueError):
        ratio_interval([1.0, 2.0], bad)
    with pytest.raises(ValueError):
        ratio_interval(bad, [1.0, 2.0])


def test_runs_a_float_rounding_apart_are_no_change_either_way_round() -> None:
    one, below = [1.0] * 6, [0.5] * 5 + [0.9999999999999999]
    assert ratio_interval(one, below).high == 1.0 and ratio_interval(below, one).low == 1.0


# -- ab's paired interval: one sample of log ratios --


def test_hodges_lehmann_is_the_median_of_walsh_averages() -> None:
    # Walsh averages of (0, 1, 5): 0, 0.5, 2.5, 1, 3, 5 -> median 1.75
    assert hodges_lehmann([0.0, 1.0, 5.0]) == pytest.approx(1.75)


def _interval_by_enumeration(values: list[float]) -> tuple[float, float]:
    """The textbook interval, as an oracle: enumerate the 2^n equally likely sign patterns of the
    signed-rank statistic, take the largest k with P(T+ <= k - 1) <= ALPHA, and cut k Walsh averages
    off each end (Hollander & Wolfe, ch. 3)."""
    n = len(values)
    sums = [sum(r for r, sign in zip(range(1, n + 1), signs) if sign) for signs in itertools.product((0, 1), repeat=n)]
    k = max(c for c in range(1, n * (n + 1) // 2) if sum(t <= c - 1 for t in sums) / len(sums) <= ALPHA)
    walsh = sorted((values[i] + values[j]) / 2 for i in range(n) for j in range(i, n))
    return walsh[k - 1], walsh[len(walsh) - k]


def test_the_interval_of_five_pairs_is_their_range_as_the_textbook_has_it() -> None:
    # With 5 pairs only T+ = 0 (and 15) lies within ALPHA (1/32): the interval is the pairs' range.
    assert shift_interval([0.03, -0.01, 0.2, 0.05, 0.0], ALPHA) == (-0.01, 0.2)
    # With 4 the least p-value is 1/16, above ALPHA: no shift is ruled out, the interval is unbounded.
    assert shift_interval([0.03, -0.01, 0.2, 0.05], ALPHA) == (-math.inf, math.inf)


# No deadline: the first example imports scipy.stats (~0.5 s; 0.66 s under -n 2), and hypothesis
# would call that a flaky timing.
@settings(deadline=None)
@given(st.lists(st.integers(-1000, 1000), min_size=5, max_size=9, unique=True))
def test_the_interval_is_the_textbook_one_and_agrees_with_the_test(ints: list[int]) -> None:
    values = [i / 997 for i in ints]  # distinct, and no Walsh average meets a tested point
    low, high = shift_interval(values, ALPHA)
    assert (low, high) == pytest.approx(_interval_by_enumeration(values))
    assert low <= hodges_lehmann(values) <= high
    if 0.0 not in {(a + b) / 2 for a in values for b in values}:
        assert (low > 0) == (signed_rank_p(values) < ALPHA)
        assert (high < 0) == (signed_rank_p([-v for v in values]) < ALPHA)

"""`retained_memory` and `retained_memory_late` from a memory sampler's samples (what `judging.leak`
judges), on samples the test writes: times in seconds, memory in bytes."""

from __future__ import annotations

import pytest

from pytest_efficientllm.telemetry.retained_memory import LATE_GROWTH, RETAINED, retained_metrics
from pytest_efficientllm.telemetry.sampler import Sampler


def sampled(*points: tuple[float, float], error: BaseException | None = None) -> Sampler:
    sampler = Sampler(lambda: 0.0, 0.02)  # never started: the test sets what it sampled
    sampler.samples, sampler.error = list(points), error
    return sampler


def metrics(sampler: Sampler, wall_s: float = 4.0) -> dict:
    return {m.name: m for m in retained_metrics(sampler, "RSS", wall_s)}


def test_retained_is_close_minus_open_and_late_growth_is_close_minus_the_midpoint_sample() -> None:
    got = metrics(sampled((0, 100), (1, 150), (2, 180), (3, 200), (4, 300)))
    assert got[RETAINED].value == 200 and got[RETAINED].unit == "B"
    assert got[LATE_GROWTH].value == 120  # the window's midpoint is t=2, where 180 was read


def test_four_samples_are_enough_for_the_late_growth() -> None:
    got = metrics(sampled((0, 0), (1, 10), (2, 20), (4, 60)))
    assert (got[RETAINED].value, got[LATE_GROWTH].value) == (60, 40)


@pytest.mark.parametrize("points", [[(0, 100), (1, 150), (2, 400)], [(0, 100), (2, 400)]])
def test_fewer_than_four_samples_keep_the_retained_memory_but_say_the_trend_is_unknown(points: list) -> None:
    got = metrics(sampled(*points), wall_s=0.05)
    assert got[RETAINED].value == 300
    assert got[LATE_GROWTH].value is None
    assert got[LATE_GROWTH].note == f"only {len(points)} samples in a 50 ms window: too few to see a trend"


def test_one_sample_or_a_failed_sampler_gives_neither_value_and_says_why() -> None:
    for got, why in (
        (metrics(sampled((0, 100))), "fewer than two samples"),
        (metrics(sampled((0, 100), (1, 150), (2, 180), (3, 200), error=OSError("gone"))), "sampling failed: gone"),
    ):
        assert [got[RETAINED].value, got[LATE_GROWTH].value] == [None, None]
        assert got[RETAINED].note == got[LATE_GROWTH].note == why

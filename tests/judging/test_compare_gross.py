"""The CPU profile's default time check fails gross slowdowns and warns on smaller ones.

The floor is the test's own 99.9% run-to-run bound, never below GROSS_MIN; a tolerance given
by the user replaces the default check and any slowdown beyond it fails.
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from pytest_efficientllm.core.limits import parse_limit
from pytest_efficientllm.core.record import Metric, Record
from pytest_efficientllm.judging.compare import compare_record
from pytest_efficientllm.judging.gross import GROSS_MAX, GROSS_MIN, gross_floor
from pytest_efficientllm.judging.run_noise import RunPrior

NAME = "cpu_time_per_round"
# Seven rounds spread +-1% around their median.
ROUNDS = (0.99, 0.995, 0.998, 1.0, 1.002, 1.005, 1.01)


def _metric(median: float, history: tuple[float, ...] = (), name: str = NAME) -> Metric:
    samples = tuple(median * r for r in ROUNDS)
    return Metric(name, median, "s", "lower", "measured", "test", samples=samples, history=history)


def _verdict(base: Metric, current: Metric, profile: str = "cpu", limits=(), prior: RunPrior | None = None):
    priors = {base.name: prior} if prior else None
    verdicts = compare_record(
        Record("t.py::t", profile, metrics={base.name: base}),
        Record("t.py::t", profile, metrics={current.name: current}),
        limits,
        run_priors=priors,
        processes=3,
    )
    (v,) = [v for v in verdicts if v.metric == base.name]
    return v


# Five runs that jitter ~1%: the test's own bound is a few percent out, so the floor is GROSS_MIN.
QUIET = _metric(0.0100, history=(0.0101, 0.0099, 0.0100, 0.0102))
# Five runs that jitter ~20%: alone (no prior from its file) their 99.9% bound lies far beyond
# GROSS_MIN, which is then the floor.
NOISY = _metric(0.0100, history=(0.0125, 0.0085, 0.0110, 0.0140))


def test_the_floor_is_the_tests_own_bound_and_never_below_the_least() -> None:
    floor, how = gross_floor(QUIET)
    assert floor == GROSS_MIN and "raised to the least" in how
    floor, how = gross_floor(NOISY, RunPrior(0.2**2, math.inf, 10))  # a file whose runs jitter 20%
    assert GROSS_MIN < floor < GROSS_MAX and f"{floor * 100:+.0f}%" in how and "raised" not in how
    floor, how = gross_floor(NOISY)
    assert floor > GROSS_MIN and "raised" not in how
    # A bound from the test's few runs alone says what narrows it; one from a shared spread does not.
    assert "from its 5 baseline runs alone" in how and "more --update-baselines runs" in how
    _, how = gross_floor(NOISY, RunPrior(0.04, 4.0, 6))
    assert "alone" not in how
    # One run and no prior from the file: nothing of the test's own, so the least.
    floor, how = gross_floor(_metric(0.0100))
    assert floor == GROSS_MIN and "no run-to-run noise" in how


def test_a_doubled_time_fails_by_default_on_the_cpu_naming_the_floor() -> None:
    v = _verdict(QUIET, _metric(0.0200))
    assert v.status == "fail"
    assert v.change == pytest.approx(1.0, rel=0.02)
    assert f"gross: at least the floor of +{GROSS_MIN:.0%}" in v.message


@pytest.mark.parametrize("slowdown", [1.15, 1.5, 1.8])
def test_a_slowdown_below_the_floor_warns_and_says_how_to_fail_on_it(slowdown: float) -> None:
    v = _verdict(QUIET, _metric(0.0100 * slowdown))
    assert v.status == "warn"
    assert f"below the gross floor of +{GROSS_MIN:.0%}" in v.message
    assert "give cpu_time_per_round a tolerance" in v.message
    # The warning keeps the comparison's interval, which reaches beyond the tolerance.
    assert v.interval is not None and v.interval[0] > 0.05 and v.interval[0] <= v.change <= v.interval[1]


def test_a_noisy_test_fails_only_beyond_its_own_bound() -> None:
    floor, _ = gross_floor(NOISY)
    centre = 0.0100  # the faster half's median of NOISY's runs
    assert _verdict(NOISY, _metric(centre * (1 + floor) * 0.95)).status == "warn"
    assert _verdict(NOISY, _metric(centre * (1 + floor) * 1.10)).status == "fail"


def test_the_floor_is_never_above_the_most_so_a_tripled_time_fails() -> None:
    # Three runs within 10%, alone: their 99.9% bound reads +336%, and a 3x slowdown only warned.
    three = _metric(0.0100, history=(0.0110, 0.0100))
    floor, how = gross_floor(three)
    assert floor == GROSS_MAX and "held to the most, +200%" in how and "from its 3 baseline runs alone" in how
    assert _verdict(three, _metric(0.0310)).status == "fail"
    assert _verdict(three, _metric(0.0280)).status == "warn"
    # A prior of one degree of freedom and a wide spread: a bound past the largest float.
    floor, how = gross_floor(_metric(0.0100), RunPrior(variance=9.0, df=1.0, tests=5))
    assert floor == GROSS_MAX and how == "this test's 99.9% run-to-run bound, unbounded, held to the most, +200%"


def test_a_tolerance_replaces_the_default_and_fails_any_slowdown_beyond_it() -> None:
    limits = (parse_limit(NAME, "+10%"),)
    assert _verdict(QUIET, _metric(0.0115), limits=limits).status == "fail"


def test_other_profiles_fail_their_default_check_without_a_floor() -> None:
    base, cur = _metric(0.0100, QUIET.history, name="AL"), _metric(0.0115, name="AL")
    assert _verdict(base, cur, profile="h200").status == "fail"


def test_a_moderated_prior_sets_the_floor_of_a_one_run_baseline() -> None:
    quiet_file = RunPrior(variance=0.01**2, df=math.inf, tests=10)
    floor, _ = gross_floor(_metric(0.0100), quiet_file)
    assert floor == GROSS_MIN
    assert _verdict(_metric(0.0100), _metric(0.0200), prior=quiet_file).status == "fail"
    assert _verdict(_metric(0.0100), _metric(0.0180), prior=quiet_file).status == "warn"
    # A file whose runs jitter 30% puts a one-run baseline's own bound beyond the least.
    noisy_file = RunPrior(variance=0.30**2, df=math.inf, tests=10)
    assert gross_floor(_metric(0.0100), noisy_file)[0] > GROSS_MIN


def test_with_too_few_rounds_for_an_interval_a_gross_slowdown_is_judged_by_the_runs() -> None:
    # Three rounds a side cannot reach a 95% rank interval; the runs' bound, the floor and the
    # vote judge the default check instead, while a user's tolerance still asks for more rounds.
    def few(median: float) -> Metric:
        return Metric(NAME, median, "s", "lower", "measured", "test", samples=(median * 0.99, median, median * 1.01))

    base = dataclasses.replace(few(0.0100), history=QUIET.history)
    doubled = _verdict(base, few(0.0200))
    assert doubled.status == "fail" and "rounds too few for an interval" in doubled.message
    assert _verdict(base, few(0.0150)).status == "warn"
    with_tolerance = _verdict(base, few(0.0200), limits=(parse_limit(NAME, "+10%"),))
    assert with_tolerance.status == "warn" and "cannot separate change from noise" in with_tolerance.message

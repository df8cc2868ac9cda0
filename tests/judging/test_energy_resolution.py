"""Energy changes inside what the counter's steps can read with nothing changed are not regressions.

Ground truth: NVML's counter advances in steps, so a window spanning N updates is off by up to 1/N
of its energy (the record's `quantisation_bound`). Two windows of 10 updates each can read up to
(1 + 0.1) / (1 - 0.1) = +22% apart for the same work: a +15% reading is no evidence, a +30% one is.
"""

from __future__ import annotations

import math

import pytest

from pytest_efficientllm.core.limits import parse_limit
from pytest_efficientllm.core.record import Record
from pytest_efficientllm.judging.compare import compare_record
from pytest_efficientllm.judging.energy_resolution import quantisation, unchanged_range
from tests.helpers.record_builders import energy_record

LIMITS = (parse_limit("energy_per_token", "+5%"), parse_limit("energy_per_token_net", "+5%"))


def verdict(base: Record, cur: Record, name: str = "energy_per_token"):
    (v,) = [v for v in compare_record(base, cur, LIMITS) if v.metric == name]
    return v


def test_a_change_inside_the_two_windows_quantisation_passes_and_says_why() -> None:
    v = verdict(energy_record(0.10, 0.1), energy_record(0.115, 0.1))
    assert v.status == "pass"
    assert "within the energy counter's resolution (windows of ±10.0% and ±10.0%" in v.message
    assert "-18.2% .. +22.2%" in v.message


def test_a_change_beyond_the_quantisation_and_the_tolerance_fails() -> None:
    assert verdict(energy_record(0.10, 0.1), energy_record(0.13, 0.1)).status == "fail"


def test_finer_windows_resolve_a_smaller_change() -> None:
    # 50 updates each (2%): +15% is beyond the +4.1% two such windows can read.
    assert verdict(energy_record(0.10, 0.02), energy_record(0.115, 0.02)).status == "fail"


def test_an_improvement_inside_the_quantisation_is_no_improvement_either() -> None:
    assert verdict(energy_record(0.10, 0.1), energy_record(0.087, 0.1)).status == "pass"


def test_without_a_bound_the_tolerance_decides_as_before() -> None:
    # RAPL or a record from before the bound was kept: no counter period known.
    v = verdict(energy_record(0.10, None), energy_record(0.115, None))
    assert v.status == "fail" and "one value per run" in v.message


def test_a_net_of_idle_value_carries_the_whole_windows_error() -> None:
    # Half the energy is idle draw: the net value's error is twice the gross one's (5% -> 10%).
    base, cur = energy_record(0.10, 0.05, net_j=0.05), energy_record(0.10, 0.05, net_j=0.0575)
    assert quantisation(base, "energy_per_token_net") == pytest.approx(0.10)
    assert verdict(base, cur, "energy_per_token_net").status == "pass"  # +15% net, inside +22%
    assert verdict(base, energy_record(0.115, 0.05, net_j=0.05), "energy_per_token").status == "fail"


def test_only_energy_metrics_carry_the_counters_bound() -> None:
    record = energy_record(0.10, 0.1)
    assert quantisation(record, "AL") is None and unchanged_range(record, record, "AL") is None
    unchanged = unchanged_range(record, record, "energy_per_token")
    assert unchanged is not None and (unchanged.low, unchanged.high) == pytest.approx((0.9 / 1.1, 1.1 / 0.9))
    assert unchanged.why == "windows of ±10.0% and ±10.0%"


def test_one_bounded_window_bounds_the_range_alone_and_says_the_other_has_none() -> None:
    # A baseline from before the bound was kept (or a source with no counter period) against a
    # window of 10 updates: only the current window's steps are known.
    unchanged = unchanged_range(energy_record(0.10, None), energy_record(0.10, 0.1), "energy_per_token")
    assert unchanged is not None and (unchanged.low, unchanged.high) == pytest.approx((0.9, 1.1))
    assert unchanged.why == "windows of no bound and ±10.0%"


def test_a_window_as_coarse_as_its_energy_rules_nothing_out() -> None:
    # One update per window (bound 100%): the reading could be twice the energy or none of it.
    unchanged = unchanged_range(energy_record(0.10, 1.0), energy_record(0.10, 1.0), "energy_per_token")
    assert unchanged is not None and (unchanged.low, unchanged.high) == (0.0, math.inf)


def test_a_net_value_with_nothing_left_after_idle_is_unbounded_not_a_division_by_zero() -> None:
    assert quantisation(energy_record(0.10, 0.05, net_j=0.0), "energy_per_token_net") == math.inf
    assert quantisation(energy_record(0.10, 0.05, net_j=-0.01), "energy_per_token_net") == math.inf
    unchanged = unchanged_range(
        energy_record(0.10, 0.05, net_j=0.0), energy_record(0.10, 0.05, net_j=0.05), "energy_per_token_net"
    )
    assert unchanged is not None and unchanged.high == math.inf and "unbounded" in unchanged.why


def test_no_bound_from_a_record_that_cannot_give_one() -> None:
    net_alone = energy_record(0.10, 0.05, net_j=0.05)
    del net_alone.metrics["energy_per_token"]  # the gross value the net one's error is read from
    assert quantisation(net_alone, "energy_per_token_net") is None
    for bound in (0.0, -0.1):
        broken = energy_record(0.10, 0.05)
        broken.settings["energy_window"]["quantisation_bound"] = bound
        assert quantisation(broken, "energy_per_token") is None

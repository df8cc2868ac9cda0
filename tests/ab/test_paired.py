"""Paired verdicts (`judging.paired`) and the ABBA schedule: what `ab` decides from the pairs."""

from __future__ import annotations

import math
import re
from dataclasses import replace

import pytest

from pytest_efficientllm.ab.command import judge_tests
from pytest_efficientllm.ab.runner import ProcessResult
from pytest_efficientllm.ab.schedule import abba
from pytest_efficientllm.core.limits import parse_limit, record_limits
from pytest_efficientllm.core.record import Metric
from pytest_efficientllm.core.units import format_change
from pytest_efficientllm.judging.paired import (
    UNRESOLVED,
    paired_change,
    paired_verdicts,
)
from pytest_efficientllm.judging.verdicts import Verdict
from tests.helpers.record_builders import counted, latency, record

NODE = "tests/test_x.py::test_a"


def _cpu(median_s: float, seed: int) -> Metric:
    return latency(median_s, spread=0.01, seed=seed, name="cpu_time_per_round")


def _sides(base_s: list[float], head_s: list[float], *extra_base: Metric, extra_head: tuple[Metric, ...] = ()):
    base = [record(NODE, _cpu(s, i), *extra_base) for i, s in enumerate(base_s)]
    head = [record(NODE, _cpu(s, 100 + i), *extra_head) for i, s in enumerate(head_s)]
    return base, head


def _by_metric(verdicts):
    return {v.metric: v for v in verdicts}


def test_abba_alternates_which_side_runs_first() -> None:
    order = [(s.pair, s.side) for s in abba(3)]
    assert order == [(0, "base"), (0, "head"), (1, "head"), (1, "base"), (2, "base"), (2, "head")]
    assert [s.index for s in abba(3)] == list(range(6))
    with pytest.raises(ValueError, match="pairs=0"):
        abba(0)


def test_a_drift_shared_by_both_members_of_each_pair_cancels() -> None:
    # The machine slows down by up to 60% over the run; each pair sees it on both sides.
    drift = [1.0, 1.2, 1.6, 1.1, 1.4, 1.3]
    base = [0.1 * d for d in drift]
    change = paired_change("cpu_time_per_round", base, [b * 1.0 for b in base], "lower")
    assert change.estimate == pytest.approx(1.0) and change.p_worse == 1.0


def test_ten_percent_slower_in_every_pair_fails_at_a_five_percent_tolerance() -> None:
    base, head = _sides([0.100] * 6, [0.110] * 6)
    v = _by_metric(paired_verdicts(base, head))["cpu_time_per_round"]
    assert v.status == "fail" and v.change == pytest.approx(0.10, abs=0.01)
    assert "6 pairs" in v.message and "default" in v.message
    # The pairs' interval travels as data, the same one the message shows.
    assert v.interval is not None and 0.05 < v.interval[0] <= v.change <= v.interval[1] < 0.15, v.interval
    assert f"90% interval {format_change(v.interval[0])} .. {format_change(v.interval[1])}" in v.message


def test_identical_sides_pass_and_a_faster_head_is_an_improvement() -> None:
    base, head = _sides([0.100] * 6, [0.100] * 6)
    assert _by_metric(paired_verdicts(base, head))["cpu_time_per_round"].status == "pass"
    base, head = _sides([0.100] * 6, [0.080] * 6)
    assert _by_metric(paired_verdicts(base, head))["cpu_time_per_round"].status == "improved"


def test_a_change_within_the_tolerance_passes_however_consistent() -> None:
    base, head = _sides([0.100] * 6, [0.103] * 6)
    assert _by_metric(paired_verdicts(base, head))["cpu_time_per_round"].status == "pass"


def test_one_slow_pair_among_equal_ones_does_not_fail() -> None:
    base, head = _sides([0.100] * 6, [0.100, 0.100, 0.200, 0.100, 0.100, 0.100])
    assert _by_metric(paired_verdicts(base, head))["cpu_time_per_round"].status == "pass"


def test_a_noisy_pass_says_it_cannot_rule_out_a_slowdown_beyond_the_tolerance() -> None:
    # An A/A on a machine whose pairs spread +-20% (as the Intel VM's forward pass did): the
    # estimate is near 0 and the test cannot reject, yet a +15% slowdown fits the pairs as well.
    base, head = _sides([0.100] * 6, [0.080, 0.121, 0.098, 0.117, 0.090, 0.104])
    v = _by_metric(paired_verdicts(base, head))["cpu_time_per_round"]
    assert v.status == "pass" and f"{UNRESOLVED} +" in v.message, v.message
    # The run file carries that worst change as data, beyond the default 5% and as the message says.
    assert v.unresolved is not None and v.unresolved > 0.05
    assert f"{UNRESOLVED} {format_change(v.unresolved)} with 6 pairs" in v.message
    assert Verdict.from_dict(v.to_dict()) == v
    # The same change read steadily is resolved: the interval stays within the tolerance.
    base, head = _sides([0.100] * 6, [0.101, 0.100, 0.102, 0.099, 0.101, 0.100])
    v = _by_metric(paired_verdicts(base, head))["cpu_time_per_round"]
    assert v.status == "pass" and UNRESOLVED not in v.message and "90% interval" in v.message, v.message
    assert v.unresolved is None


def test_the_interval_that_is_not_resolved_is_the_worse_one_for_a_metric_better_higher() -> None:
    throughput = [
        Metric("AT", t, "tok/s", "higher", "measured", "test builder", samples=(t,))
        for t in (100.0, 80.0, 121.0, 98.0, 117.0, 90.0, 104.0)
    ]
    base = [record(NODE, throughput[0]) for _ in range(6)]
    head = [record(NODE, m) for m in throughput[1:]]
    limits = (parse_limit("AT", "+5%"),)
    v = _by_metric(paired_verdicts(base, head, limits))["AT"]
    assert v.status == "pass" and f"{UNRESOLVED} -" in v.message, v.message
    assert v.unresolved is not None and v.unresolved < -0.05


def test_fewer_than_five_pairs_cannot_decide_and_say_so() -> None:
    base, head = _sides([0.100] * 4, [0.200] * 4)
    v = _by_metric(paired_verdicts(base, head))["cpu_time_per_round"]
    assert v.status == "warn" and "fewer than 5" in v.message
    # Five decide: twice as slow in each of them (p = 1/32).
    base, head = _sides([0.100] * 5, [0.200] * 5)
    assert _by_metric(paired_verdicts(base, head))["cpu_time_per_round"].status == "fail"


def test_a_faster_median_the_pairs_do_not_bear_out_is_no_improvement() -> None:
    # -8% at the median, beyond the 5% tolerance, but two pairs of six slower: not evidence.
    base, head = _sides([0.100] * 6, [0.080, 0.121, 0.070, 0.110, 0.075, 0.105])
    v = _by_metric(paired_verdicts(base, head))["cpu_time_per_round"]
    assert v.change is not None and v.change < -0.05
    assert v.status == "pass" and v.reason == "", v.message


def test_a_marker_tolerance_replaces_the_default() -> None:
    base, head = _sides([0.100] * 6, [0.110] * 6)
    limits = (parse_limit("cpu_time_per_round", "+20%"),)
    assert _by_metric(paired_verdicts(base, head, limits))["cpu_time_per_round"].status == "pass"


def test_counted_metrics_gate_exactly_and_name_both_counts() -> None:
    base, head = _sides(
        [0.1] * 6, [0.1] * 6, counted("flops", 1000, "FLOP"), extra_head=(counted("flops", 2000, "FLOP"),)
    )
    v = _by_metric(paired_verdicts(base, head))["flops"]
    assert v.status == "fail" and v.change == pytest.approx(1.0) and "exact" in v.message
    # HEAD against BASE, not against a stored baseline that --update-baselines would refresh.
    assert "vs base 1000 FLOP" in v.message and "baseline" not in v.message
    base, head = _sides(
        [0.1] * 6, [0.1] * 6, counted("flops", 1000, "FLOP"), extra_head=(counted("flops", 1000, "FLOP"),)
    )
    assert _by_metric(paired_verdicts(base, head))["flops"].status == "pass"
    base, head = _sides(
        [0.1] * 6, [0.1] * 6, counted("flops", 1000, "FLOP"), extra_head=(counted("flops", 500, "FLOP"),)
    )
    better = _by_metric(paired_verdicts(base, head))["flops"]
    assert better.status == "improved" and "--update-baselines" not in better.message


def test_a_count_that_varies_between_processes_of_a_side_is_not_compared_exactly() -> None:
    base = [record(NODE, _cpu(0.1, i), counted("flops", 1000 + i, "FLOP")) for i in range(6)]
    head = [record(NODE, _cpu(0.1, 10 + i), counted("flops", 1000, "FLOP")) for i in range(6)]
    v = _by_metric(paired_verdicts(base, head))["flops"]
    assert v.status == "warn" and "varies" in v.message


def test_budgets_are_checked_on_heads_median() -> None:
    base, head = _sides([0.1] * 6, [0.1] * 6, counted("peak_memory", 100), extra_head=(counted("peak_memory", 5000),))
    v = [x for x in paired_verdicts(base, head, (parse_limit("peak_memory", "<= 1000 B"),)) if x.kind == "budget"]
    assert len(v) == 1 and v[0].status == "fail"


def test_an_estimate_never_fails() -> None:
    def est(value: float, seed: int) -> Metric:
        m = latency(value, seed=seed, name="energy")
        return Metric(m.name, m.value, "J", "lower", "estimated", "estimate: test", samples=m.samples)

    base = [record(NODE, est(1.0, i)) for i in range(6)]
    head = [record(NODE, est(2.0, 10 + i)) for i in range(6)]
    v = _by_metric(paired_verdicts(base, head, (parse_limit("energy", "+5%"),)))["energy"]
    assert v.status == "warn" and "never fails" in v.message


def test_no_measurement_on_one_side_is_incomplete() -> None:
    base, _ = _sides([0.1] * 6, [])
    assert paired_verdicts(base, [])[0].status == "error"


def _proc(side: str, pair: int, outcomes: dict[str, str], records=(), problem: str = "") -> ProcessResult:
    return ProcessResult(side, pair, 0, {r.nodeid: r for r in records}, outcomes, problem)


def test_tests_on_one_side_only_are_added_or_removed_and_one_sided_failures_are_named() -> None:
    base = [_proc("base", p, {"a": "passed", "gone": "passed", "f": "passed"}) for p in range(5)]
    head = [_proc("head", p, {"a": "passed", "new": "passed", "f": "failed"}) for p in range(5)]
    status = {t.nodeid: t.status for t in judge_tests(base, head)}
    assert status == {"a": "not measured", "gone": "removed", "new": "added", "f": "failed on head"}
    failed = {t.nodeid: t.failed for t in judge_tests(base, head)}
    assert failed["f"] and not failed["gone"] and not failed["new"]


def test_a_side_that_crashed_mid_run_keeps_the_other_sides_measurements_and_is_incomplete() -> None:
    rec = lambda s, seed: record(NODE, _cpu(s, seed))  # noqa: E731
    base = [_proc("base", p, {NODE: "passed"}, [rec(0.1, p)]) for p in range(6)]
    head = [_proc("head", p, {NODE: "passed"}, [rec(0.1, 10 + p)]) for p in range(3)]
    head += [_proc("head", p, {}, [], problem=f"head process {p} exited with -9") for p in range(3, 6)]
    (t,) = judge_tests(base, head)
    assert t.status == "incomplete" and t.failed and "3 of 6 pairs" in t.note


def test_the_limits_a_test_ran_under_travel_in_its_record() -> None:
    r = record(NODE, _cpu(0.1, 0))
    r.settings["limits"] = ["AL=+10%", "peak_memory=<= 2 GiB", "bogus=+1%"]
    limits = {(lim.metric, lim.kind): lim for lim in record_limits(r, (parse_limit("AL", "+20%"),))}
    assert limits[("AL", "tolerance")].relative == pytest.approx(0.20)  # the command line's wins
    assert math.isclose(limits[("peak_memory", "budget")].bound, 2 * 2**30)
    assert len(limits) == 2  # an unreadable one is left out


def _calibrated(records, cpu_index_s: list[float]):
    for r, c in zip(records, cpu_index_s):
        r.fingerprint = {**r.fingerprint, "calibration": {"index_s": 0.002, "cpu_index_s": c}}
    return records


def test_a_failure_says_how_the_calibration_moved_in_the_same_processes() -> None:
    # HEAD's processes twice as slow at the test; in one case the calibration workload (the
    # plugin's code, the same on both sides) was twice as slow in them too, in the other not.
    base, head = _sides([0.100] * 6, [0.200] * 6)
    _calibrated(base, [0.002, 0.0021, 0.002, 0.0019, 0.002, 0.002])
    _calibrated(head, [0.004, 0.0042, 0.004, 0.0038, 0.004, 0.004])
    v = _by_metric(paired_verdicts(base, head))["cpu_time_per_round"]
    assert v.status == "fail"  # said, never used to excuse
    assert v.message.endswith(
        "; the calibration workload in the same processes: +100.0% over 6 pairs (pairs +100.0% .. +100.0%)"
    )
    _calibrated(head, [0.002, 0.0021, 0.002, 0.0019, 0.002, 0.002])
    v = _by_metric(paired_verdicts(base, head))["cpu_time_per_round"]
    assert "the calibration workload in the same processes: +0.0% over 6 pairs" in v.message


def test_the_calibration_is_left_out_where_a_process_has_none_or_the_metric_passes() -> None:
    base, head = _sides([0.100] * 6, [0.200] * 6)
    _calibrated(base[:5], [0.002] * 5)  # the sixth BASE process has no CPU-time calibration
    _calibrated(head, [0.004] * 6)
    assert "calibration" not in _by_metric(paired_verdicts(base, head))["cpu_time_per_round"].message
    base, head = _sides([0.100] * 6, [0.100] * 6)
    _calibrated(base, [0.002] * 6)
    _calibrated(head, [0.004] * 6)
    v = _by_metric(paired_verdicts(base, head))["cpu_time_per_round"]
    assert v.status == "pass" and "calibration" not in v.message


def test_on_a_gpu_profile_a_gpu_timing_is_not_told_the_host_cpu_s_calibration() -> None:
    # The calibration is a CPU workload: it stands for the host's CPU time, not for the GPU's latency.
    base = [record(NODE, latency(0.010, seed=i), profile="h100") for i in range(6)]
    head = [record(NODE, latency(0.020, seed=100 + i), profile="h100") for i in range(6)]
    _calibrated(base, [0.002] * 6)
    _calibrated(head, [0.004] * 6)
    v = _by_metric(paired_verdicts(base, head))["AL"]
    assert v.status == "fail" and "calibration" not in v.message


DRIFT = (1.0, 1.3, 0.9, 1.2, 1.1, 1.0)


def _four_tests(
    head_factor: dict[str, float | tuple[float, ...]], swing: tuple[float, ...] = (1.0,) * len(DRIFT), metric=_cpu
) -> tuple[list[ProcessResult], list[ProcessResult]]:
    """Pairs of four tests, one per `swing`; HEAD's pair p runs each test at its factor times BASE
    (or at its p-th, given one per pair).
    Every process of pair p is slower by the same drift, and HEAD's by `swing[p]` more: the machine's
    slow spells, shared by the tests of a pair, cancelling between the pair's sides and not."""
    ids = ["t.py::a", "t.py::b", "t.py::c", "t.py::d"]
    base, head = [], []
    for p, s in enumerate(swing):
        d = DRIFT[p % len(DRIFT)]
        b = [record(n, metric(0.1 * d, p)) for n in ids]
        factors = {n: f if isinstance(f, float) else f[p] for n, f in head_factor.items()}
        h = [record(n, metric(0.1 * d * s * factors.get(n, 1.0), 50 + p)) for n in ids]
        base.append(_proc("base", p, dict.fromkeys(ids, "passed"), b))
        head.append(_proc("head", p, dict.fromkeys(ids, "passed"), h))
    return base, head


# HEAD's process of each pair as much slower or faster as the machine made it: eight pairs that
# swing -20% .. +25% about no change, so that a 10% slowdown of one test is not resolved by its pairs.
SWINGING = (0.8, 1.25, 0.85, 1.18, 0.9, 1.11, 0.95, 1.05)


def _verdict_of(tests: list, nodeid: str = "t.py::a", metric: str = "cpu_time_per_round") -> Verdict:
    (t,) = [t for t in tests if t.nodeid == nodeid]
    return _by_metric(t.verdicts)[metric]


def test_a_test_slower_than_the_other_tests_of_its_pairs_fails_where_its_pairs_alone_cannot_tell() -> None:
    base, head = _four_tests({"t.py::a": 1.10}, SWINGING)
    alone = _by_metric(paired_verdicts([r.records["t.py::a"] for r in base], [r.records["t.py::a"] for r in head]))
    assert alone["cpu_time_per_round"].status == "pass" and alone["cpu_time_per_round"].unresolved is not None
    v = _verdict_of(judge_tests(base, head))
    assert v.status == "fail" and v.reason == "beyond_others", v.message
    assert "worse than the other tests of its pairs: +10" in v.message, v.message
    assert "median of the other 3 tests" in v.message and "the other tests in the same pairs" not in v.message
    for other in ("t.py::b", "t.py::c", "t.py::d"):  # a little faster than a: no failure of theirs
        assert _verdict_of(judge_tests(base, head), other).status == "pass"


def test_a_test_that_moved_with_the_other_tests_of_its_pairs_passes() -> None:
    # Slower than the others, but within the tolerance: the relative reading is no failure either,
    # and the pass shows it beside the pairs' own, which cannot rule out a slowdown.
    v = _verdict_of(judge_tests(*_four_tests({"t.py::a": 1.03}, SWINGING)))
    assert v.status == "pass" and v.unresolved is not None, v.message
    against = v.message.split("; against the other tests of its pairs ")
    assert len(against) == 2 and against[1].startswith("+3.0% over 8 pairs"), v.message
    low, high = (float(x) for x in re.findall(r"([-+][\d.]+)%", against[1].split("interval ")[1])[:2])
    assert -1 < low <= 3 <= high < 5, v.message  # narrower than the pairs' own: the swing cancels
    assert against[1].endswith("themselves") and ", which moved " in against[1], v.message
    # Against the others 8% slower by the estimate, but in 3 of 8 pairs faster: within the noise.
    uneven = (0.93, 1.3, 0.94, 1.25, 0.92, 1.2, 1.01, 1.2)
    assert paired_change("a", [1.0] * 8, list(uneven), "lower").p_worse > 0.1
    assert _verdict_of(judge_tests(*_four_tests({"t.py::a": uneven}, SWINGING))).status == "pass"
    # Two other tests are not enough to stand as the control.
    base, head = _four_tests({"t.py::a": 1.10}, SWINGING)
    for r in base + head:
        r.records.pop("t.py::d")
    assert _verdict_of(judge_tests(base, head)).status == "pass"


def test_a_test_left_as_it_was_among_tests_that_head_sped_up_is_no_regression() -> None:
    # HEAD makes every other test 20% faster: against them the unchanged test reads +25% slower, but
    # that tells a faster HEAD from a slow side no better than the pairs do, so the pairs judge.
    base, head = _four_tests(dict.fromkeys(["t.py::b", "t.py::c", "t.py::d"], 0.8), SWINGING)
    assert _verdict_of(judge_tests(base, head)).status == "pass"


def test_a_test_slower_than_other_tests_that_got_slower_fails_against_them() -> None:
    # Every other test 20% slower, the test 32% (10% beyond them), in pairs that swing so far that
    # its own pairs cannot tell: slower than the others whether HEAD or the machine slowed them.
    swing = (0.66, 1.3, 0.68, 1.25, 0.7, 1.2, 0.8, 1.1)
    base, head = _four_tests({"t.py::a": 1.32, "t.py::b": 1.2, "t.py::c": 1.2, "t.py::d": 1.2}, swing)
    alone = _by_metric(paired_verdicts([r.records["t.py::a"] for r in base], [r.records["t.py::a"] for r in head]))
    assert alone["cpu_time_per_round"].status == "pass"
    v = _verdict_of(judge_tests(base, head))
    assert v.status == "fail" and v.reason == "beyond_others", v.message
    assert "which moved +" in v.message, v.message


def test_against_the_other_tests_worse_is_read_in_the_metrics_direction() -> None:
    def throughput(value: float, seed: int) -> Metric:
        return replace(latency(value, spread=0.01, seed=seed, name="AT"), unit="tok/s", direction="higher")

    tolerance = (parse_limit("AT", "+5%"),)
    base, head = _four_tests({"t.py::a": 0.90}, SWINGING, throughput)  # a's throughput 10% lower
    v = _verdict_of(judge_tests(base, head, tolerance), metric="AT")
    assert v.status == "fail" and v.reason == "beyond_others", v.message
    base, head = _four_tests({"t.py::a": 1.10}, SWINGING, throughput)  # 10% higher: better, not a failure
    assert _verdict_of(judge_tests(base, head, tolerance), metric="AT").status == "pass"
    # The others' throughput 20% lower (worse), a's 28% lower: 10% below theirs, so it fails; had
    # "worse" been read as for a time, the others would have got better, and the pairs alone judged.
    swing = (1.52, 0.77, 1.47, 0.8, 1.43, 0.83, 1.35, 0.91)
    base, head = _four_tests({"t.py::a": 0.72, "t.py::b": 0.8, "t.py::c": 0.8, "t.py::d": 0.8}, swing, throughput)
    v = _verdict_of(judge_tests(base, head, tolerance), metric="AT")
    assert v.status == "fail" and v.reason == "beyond_others", v.message


def _others_change(message: str) -> float:
    """The control's change, in percent, from a verdict's clause about the other tests."""
    said = message.split("; the other tests in the same pairs (3, each pair's median): ")
    assert len(said) == 2, message
    return float(said[1].split("%")[0])


def test_a_failure_names_how_the_other_tests_of_its_pairs_moved() -> None:
    base, head = _four_tests({"t.py::a": 2.0})
    verdicts = {t.nodeid: _by_metric(t.verdicts)["cpu_time_per_round"] for t in judge_tests(base, head)}
    assert verdicts["t.py::a"].status == "fail"
    assert abs(_others_change(verdicts["t.py::a"].message)) < 3  # they did not move: the test's code did
    assert "calibration" not in verdicts["t.py::a"].message  # the other tests stand in for it
    # Every test twice as slow: each fails (said, never used to excuse), and its control says that
    # the whole comparison moved with it.
    base, head = _four_tests(dict.fromkeys(["t.py::a", "t.py::b", "t.py::c", "t.py::d"], 2.0))
    for t in judge_tests(base, head):
        v = _by_metric(t.verdicts)["cpu_time_per_round"]
        assert v.status == "fail" and 95 < _others_change(v.message) < 105, v.message


def test_fewer_than_three_other_tests_leave_the_calibration_as_the_control() -> None:
    base, head = _four_tests({"t.py::a": 2.0})
    for r in base + head:
        r.records.pop("t.py::d")  # two others left in each pair
        _calibrated(list(r.records.values()), [0.002] * 3)
    (a,) = [t for t in judge_tests(base, head) if t.nodeid == "t.py::a"]
    v = _by_metric(a.verdicts)["cpu_time_per_round"]
    assert v.status == "fail" and "other tests" not in v.message
    assert "the calibration workload in the same processes: +0.0%" in v.message

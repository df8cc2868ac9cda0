"""One test's decision (`judging.evaluate`): whether it is judged, what is put to the vote, and
the findings that never are. Ground truth: regressions built into the records, so which metric
fails, and why, is known before the gate reads them."""

from __future__ import annotations

import math

import pytest

from pytest_efficientllm.core.limits import parse_limit
from pytest_efficientllm.core.record import Metric, Record
from pytest_efficientllm.judging.evaluate import BaselineView, Decision, evaluate, suspects, voting_processes
from pytest_efficientllm.judging.gate import GateOptions
from pytest_efficientllm.judging.gross import GROSS_MAX
from pytest_efficientllm.judging.leak import MIN_RETAINED_BYTES
from pytest_efficientllm.judging.run_shift import RunChanges
from pytest_efficientllm.judging.verdicts import FAR_OVER_BUDGET, Verdict, check_budget, times_over
from pytest_efficientllm.telemetry.retained_memory import LATE_GROWTH, RETAINED
from tests.helpers.record_builders import counted, latency, record

NODE = "t.py::a"
# Both a counted and a measured metric doubled against the baseline, each beyond its tolerance.
LIMITS = (parse_limit("AL", "+5%"), parse_limit("peak_memory", "+5%"))


def _baseline() -> Record:
    return record(NODE, counted("peak_memory", 1000), latency(0.010))


def _regressed(*extra: Metric) -> Record:
    return record(NODE, counted("peak_memory", 2000), latency(0.020), *extra)


def _measured(name: str, value: float, unit: str = "B", note: str = "") -> Metric:
    return Metric(name, value, unit, "lower", "measured", "test builder", note=note)


def test_a_test_that_failed_its_own_assertions_is_not_judged_but_gets_its_derived_metrics() -> None:
    cpu = _measured("cpu_time", 0.5, "s")
    rounds = counted("rounds", 10, unit="")
    failed = _regressed(cpu, rounds)
    decision = evaluate(failed, LIMITS, BaselineView(_baseline()), GateOptions(), functional="failed")
    assert decision.final == [] and decision.suspects == []
    assert failed.metrics["cpu_time_per_round"].value == 0.05  # for the run file, judged or not
    passed = evaluate(_regressed(cpu, rounds), LIMITS, BaselineView(_baseline()), GateOptions())
    assert {v.metric for v in passed.final if v.failed} == {"AL", "peak_memory"}


def test_a_measured_regression_is_put_to_the_vote_a_counted_one_is_final() -> None:
    decision = evaluate(_regressed(), LIMITS, BaselineView(_baseline()), GateOptions(), confirm_processes=2)
    assert decision.processes == 3
    # A count is exact: a fresh process would count the same, so only the time waits for the vote.
    assert decision.suspects == ["AL"]
    alone = evaluate(_regressed(), LIMITS, BaselineView(_baseline()), GateOptions(), confirm_processes=0)
    assert (alone.processes, alone.suspects) == (1, [])
    assert {v.metric for v in alone.final if v.failed} == {"AL", "peak_memory"}


def test_no_vote_without_fresh_processes_a_readable_baseline_or_a_single_process_test() -> None:
    base = BaselineView(_baseline())
    one = _regressed()
    assert voting_processes(one, base, 2) == 3
    assert voting_processes(one, base, 0) == 1
    assert voting_processes(one, BaselineView(error="baselines/cpu/t.py.json: not JSON"), 2) == 1
    ranks = _regressed()
    ranks.world_size = 2  # under torchrun the ranks are one measurement; a fresh process is not
    assert voting_processes(ranks, base, 2) == 1


def test_only_measured_metrics_that_failed_and_hold_a_value_are_suspects() -> None:
    rec = _regressed(_measured("energy", None, "J"))  # type: ignore[arg-type]
    failed = [
        Verdict("AL", "fail", "", "baseline", 1.0),
        Verdict("peak_memory", "fail", "", "baseline", 1.0),  # counted
        Verdict("energy", "fail", "", "budget"),  # no value
    ]
    assert suspects(rec, failed) == ["AL"]
    assert suspects(rec, [Verdict("AL", "warn", "", "baseline", 1.0)]) == []


def test_a_leak_and_a_throttled_window_are_findings_beside_the_verdicts_never_put_to_the_vote() -> None:
    leaking = _measured(RETAINED, 4 * MIN_RETAINED_BYTES)
    late = _measured(LATE_GROWTH, 2 * MIN_RETAINED_BYTES)
    throttled = Metric("gpu_throttled", 1.0, "", "lower", "measured", "NVML", note="throttled: sw power cap")
    decision = evaluate(
        _regressed(leaking, late, throttled), LIMITS, BaselineView(_baseline()), GateOptions(), confirm_processes=2
    )
    assert [(v.metric, v.status) for v in decision.extra] == [(RETAINED, "warn"), ("gpu_throttled", "warn")]
    assert "sw power cap" in decision.extra[1].message
    assert decision.suspects == ["AL"]  # the findings are not suspects
    clean = evaluate(_regressed(), LIMITS, BaselineView(_baseline()), GateOptions())
    assert clean.extra == []


def test_without_a_baseline_the_run_s_drift_has_nothing_to_be_taken_out_of() -> None:
    failure = Verdict("cpu_time_per_round", "fail", "", "baseline", 1.0, readings=(1.0, 1.0, 1.0))
    run = RunChanges()
    for _ in range(20):
        run.add([Verdict("cpu_time_per_round", "warn", "", "baseline", 0.45)])
    decision = Decision([failure], ["cpu_time_per_round"], baseline=BaselineView(), processes=3)
    assert decision.apart_from_run([failure], run, "cpu") == [failure]


def test_a_budget_broken_far_beyond_any_slow_spell_fails_at_once_a_near_one_goes_to_the_vote() -> None:
    # AL is 20 ms: a 10 ms budget is broken 2x (a slow spell can do that), a 5 ms one 4x (none did).
    near = evaluate(_regressed(), (parse_limit("AL", "<= 10 ms"),), BaselineView(), GateOptions(), confirm_processes=2)
    assert near.suspects == ["AL"]
    assert next(v for v in near.final if v.failed).reason == "over_budget"
    far = evaluate(_regressed(), (parse_limit("AL", "<= 5 ms"),), BaselineView(), GateOptions(), confirm_processes=2)
    assert far.suspects == []
    (v,) = [v for v in far.final if v.failed]
    assert (v.metric, v.kind, v.reason) == ("AL", "budget", "far_over_budget")
    assert v.message.endswith(
        "; 4x over it, beyond any slow spell of a shared runner (3x): not re-measured to confirm"
    ), v.message
    # A far one beside a near one on another metric: only the near one waits for the vote.
    both = (parse_limit("AL", "<= 5 ms"), parse_limit("cpu_time", "<= 0.4 s"))
    rec = _regressed(_measured("cpu_time", 0.5, "s"))
    assert evaluate(rec, both, BaselineView(), GateOptions(), confirm_processes=2).suspects == ["cpu_time"]


def test_how_far_over_its_budget_a_value_is_reads_in_the_budgets_direction() -> None:
    # The line is the gross floor's ceiling: what no unchanged run came near.
    assert FAR_OVER_BUDGET == 1 + GROSS_MAX == 3.0
    assert times_over(0.020, parse_limit("AL", "<= 5 ms")) == pytest.approx(4.0)
    assert times_over(0.004, parse_limit("AL", "<= 5 ms")) == pytest.approx(0.8)
    assert times_over(100.0, parse_limit("tokens_per_s", ">= 300 tok/s")) == pytest.approx(3.0)
    assert times_over(0.0, parse_limit("tokens_per_s", ">= 300 tok/s")) == math.inf
    assert times_over(1.0, parse_limit("AL", "<= 0 s")) == math.inf
    # Throughput a third of its budget is as far over as a time three times its own.
    slow = record(NODE, Metric("tokens_per_s", 99.0, "tok/s", "higher", "measured", "test builder"))
    verdict = check_budget(slow, parse_limit("tokens_per_s", ">= 300 tok/s"))
    assert verdict.reason == "far_over_budget" and "3.03x over it" in verdict.message, verdict.message
    counted_far = record(NODE, counted("flops", 1e9, unit="FLOP"))
    assert check_budget(counted_far, parse_limit("flops", "<= 1e8")).reason == "over_budget"  # exact: no vote anyway

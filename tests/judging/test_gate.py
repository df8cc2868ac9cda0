"""The per-test gate decision: budgets and the baseline together, modes, updating, and which limits apply."""

from __future__ import annotations

import pytest

from pytest_efficientllm.core.limits import parse_limit, parse_limit_assignments
from pytest_efficientllm.core.record import Metric
from pytest_efficientllm.judging.gate import GateOptions, add_derived, effective_limits, judge
from pytest_efficientllm.judging.verdicts import Verdict
from tests.helpers.record_builders import counted, latency, record


def statuses(verdicts: list[Verdict]) -> dict[str, str]:
    return {v.metric: v.status for v in verdicts}


def test_judge_combines_budgets_and_the_baseline() -> None:
    cur = record("t.py::a", counted("peak_memory", 2000))
    limits = (parse_limit("peak_memory", "<= 1000 B"),)
    v = judge(cur, limits, record("t.py::a", counted("peak_memory", 1000)), "", GateOptions())
    assert [(x.kind, x.status) for x in v] == [("budget", "fail"), ("baseline", "fail")]


def test_missing_baseline_is_new_unless_strict() -> None:
    cur = record("t.py::a", counted("peak_memory", 1))
    assert statuses(judge(cur, (), None, "", GateOptions())) == {"*": "new"}
    assert statuses(judge(cur, (), None, "", GateOptions(strict=True))) == {"*": "fail"}
    assert statuses(judge(cur, (), None, "", GateOptions(strict=True, update=True))) == {"*": "new"}


def test_update_softens_regressions_but_not_an_unreadable_baseline() -> None:
    cur = record("t.py::a", counted("peak_memory", 2))
    v = judge(cur, (), record("t.py::a", counted("peak_memory", 1)), "", GateOptions(update=True))
    assert statuses(v) == {"peak_memory": "warn"} and "being replaced" in v[0].message
    assert statuses(judge(cur, (), None, "x.json: corrupt", GateOptions(update=True))) == {"*": "error"}


def test_modes() -> None:
    cur = record("t.py::a", counted("peak_memory", 2))
    base = record("t.py::a", counted("peak_memory", 1))
    assert statuses(judge(cur, (), base, "", GateOptions(mode="warn"))) == {"peak_memory": "warn"}
    assert judge(cur, (), base, "", GateOptions(mode="off")) == []
    with pytest.raises(ValueError, match="--efficiency-gate='loud'"):
        GateOptions(mode="loud")


def test_limit_precedence_ini_then_marker_then_cli_and_run_wide_limits_only_where_recorded() -> None:
    ini = parse_limit_assignments(["latency=+10%", "peak_memory=+3%"], "ini")
    cli = parse_limit_assignments(["peak_memory=+1%"], "cli")
    marker = (parse_limit("latency", "+20%"),)
    merged = {lim.metric: lim.text for lim in effective_limits(marker, GateOptions(ini_limits=ini, cli_limits=cli))}
    assert merged == {"AL": "+20%", "peak_memory": "+1%"}
    only = effective_limits((), GateOptions(ini_limits=ini, cli_limits=cli), recorded={"peak_memory"})
    assert [(lim.metric, lim.text) for lim in only] == [("peak_memory", "+1%")]
    # The command line beats the marker too, and its limit on a metric the test did not record is dropped.
    cli = parse_limit_assignments(["peak_memory=+1%", "latency=+2%"], "cli")
    merged = {lim.metric: lim.text for lim in effective_limits(marker, GateOptions(ini_limits=ini, cli_limits=cli))}
    assert merged == {"AL": "+2%", "peak_memory": "+1%"}
    only = effective_limits((), GateOptions(ini_limits=ini, cli_limits=cli), recorded={"peak_memory"})
    assert [(lim.metric, lim.text) for lim in only] == [("peak_memory", "+1%")]
    with pytest.raises(ValueError, match="cli: 'latency': expected METRIC=LIMIT"):
        parse_limit_assignments(["latency"], "cli")


def test_a_baseline_at_another_world_size_is_reported_not_compared() -> None:
    from pytest_efficientllm.core.record import Metric, Record
    from pytest_efficientllm.judging.gate import GateOptions, judge

    al = Metric("AL", 1.0, "s", "lower", "measured", "t", samples=(1.0,) * 5)
    baseline = Record("t.py::t", "cpu", metrics={"AL": al}, world_size=2)
    current = Record("t.py::t", "cpu", metrics={"AL": al}, world_size=4)
    verdicts = judge(current, (), baseline, "", GateOptions())
    assert [(v.metric, v.status) for v in verdicts] == [("*", "warn")]
    assert "world_size=2" in verdicts[0].message and "not compared" in verdicts[0].message


def test_a_window_without_per_round_cpu_times_gets_its_cpu_time_per_round_from_the_whole_window() -> None:
    # A timer that kept no CPU time per round: the window's CPU seconds over its rounds, one value
    # (no samples, so the tolerance alone decides), from the same source as the CPU time.
    cpu = Metric("cpu_time", 0.5, "s", "lower", "measured", "process_time_ns")
    rec = record("t.py::a", cpu, counted("rounds", 10, unit=""))
    add_derived(rec)
    derived = rec.metrics["cpu_time_per_round"]
    assert derived.value == pytest.approx(0.05) and derived.samples == ()
    assert (derived.source, derived.method) == ("measured", "cpu_time / rounds; process_time_ns")
    # One the timer recorded per round stays as it is.
    per_round = latency(0.04, name="cpu_time_per_round")
    rec = record("t.py::a", cpu, counted("rounds", 10, unit=""), per_round)
    add_derived(rec)
    assert rec.metrics["cpu_time_per_round"] == per_round
    # Without rounds (or with none), nothing to divide by: not made up.
    for rounds in ((), (counted("rounds", 0, unit=""),)):
        rec = record("t.py::a", cpu, *rounds)
        add_derived(rec)
        assert "cpu_time_per_round" not in rec.metrics

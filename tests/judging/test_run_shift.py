"""A gross failure must stand out from the run as a whole: the machine's drift is not the test's.

Ground truth: the changes a run's tests read are chosen, so the run's lower quartile is known,
and each process's reading of the failing test is chosen, so its slowdown beyond the run is too.
The baseline has one run, so the test's gross floor is the least, +90% (`gross.GROSS_MIN`).
"""

from __future__ import annotations

import pytest

from pytest_efficientllm.core.limits import parse_limit
from pytest_efficientllm.core.record import Metric
from pytest_efficientllm.judging.evaluate import BaselineView, Decision
from pytest_efficientllm.judging.gross import GROSS_MIN, apart_from_run
from pytest_efficientllm.judging.run_shift import MIN_TESTS, RunChanges, RunShift
from pytest_efficientllm.judging.verdicts import Verdict
from tests.helpers.record_builders import latency, record

CPU_TIME = "cpu_time_per_round"
BASE = latency(0.010, name=CPU_TIME)


def _gross(change: float, *readings: float) -> Verdict:
    """A gross failure of the default check, with the vote's `readings` (this process's first)."""
    said = f"({change:+.1%}): slower beyond tolerance and noise; gross"
    return Verdict(CPU_TIME, "fail", said, "baseline", change, readings=(change, *readings))


def _run(*changes: float) -> RunChanges:
    run = RunChanges()
    for change in changes:
        run.add([Verdict(CPU_TIME, "warn", "", "baseline", change)])
    return run


def test_the_run_s_shift_is_the_lower_quartile_of_every_test_compared_from_eight_tests() -> None:
    run = _run(*[0.10 * i for i in range(1, 9)])  # +10% .. +80%
    shift = run.shift(CPU_TIME)
    assert shift is not None and shift.tests == 8 and shift.change == pytest.approx(0.275)
    assert "the lower quartile of the 8 tests this process compared, +27.5%" in shift.describe()
    # For a metric better higher the run's least slowdown is the upper quartile of its changes.
    upper = run.shift(CPU_TIME, "higher")
    assert upper is not None and upper.change == pytest.approx(0.625) and "the upper quartile" in upper.describe()
    assert _run(*[0.5] * (MIN_TESTS - 1)).shift(CPU_TIME) is None
    # A finding about the whole test, a budget, a verdict with no change: none of them a test's change.
    run = _run(*[0.5] * MIN_TESTS)
    run.add([Verdict("*", "warn", "", "fingerprint"), Verdict(CPU_TIME, "fail", "", "budget", 3.0)])
    run.add([Verdict(CPU_TIME, "new", "", "baseline")])
    assert run.changes == {CPU_TIME: [0.5] * MIN_TESTS}


def test_a_test_that_moved_with_a_drifting_run_warns_naming_both() -> None:
    # The A/A of 2026-12-06 04:07: test_decode[mla] read +99.6% and +105.0% in a run whose lower
    # quartile read +40%; had the last fresh process read +95% too, the vote would have confirmed it.
    verdict = apart_from_run(_gross(0.996, 1.05, 0.95), BASE, None, RunShift(0.40, 61), "cpu")
    assert verdict.status == "warn" and verdict.change == 0.996
    assert "the run as a whole moved too (the lower quartile of the 61 tests this process compared, +40.0%)" in (
        verdict.message
    )
    # The largest reading beyond the run: 2.05 / 1.40.
    assert "+46% of the test's own at the most, below the gross floor of +90%" in verdict.message
    assert "give cpu_time_per_round a tolerance" in verdict.message


def test_a_test_far_beyond_its_run_still_fails() -> None:
    verdict = apart_from_run(_gross(3.0, 2.9, 3.1), BASE, None, RunShift(0.35, 61), "cpu")
    assert verdict.status == "fail"
    assert verdict.message.endswith("+204% of the test's own at the most, still gross")  # 4.1 / 1.35


def test_one_process_beyond_the_run_s_drift_keeps_the_failure() -> None:
    # 2026-12-06 04:53, test_decode[mha] slowed x2: +102.8% in this process, in a quick spell for it,
    # +217.8% and +244.2% in the fresh ones, in a run whose lower quartile read +34.7%.
    verdict = apart_from_run(_gross(1.028, 2.178, 2.442), BASE, None, RunShift(0.347, 61), "cpu")
    assert verdict.status == "fail" and verdict.message.endswith("+156% of the test's own at the most, still gross")


@pytest.mark.parametrize(
    "shift",
    [
        pytest.param(0.0, id="a run that did not move"),
        pytest.param(-0.2, id="a run that ran faster"),
        pytest.param(GROSS_MIN, id="a run whose lower quartile is itself gross"),
        pytest.param(1.5, id="every test far slower"),
    ],
)
def test_only_a_run_that_slowed_short_of_the_floor_is_taken_out(shift: float) -> None:
    failure = _gross(2.0, 2.0, 2.0)
    assert apart_from_run(failure, BASE, None, RunShift(shift, 61), "cpu") == failure


def test_for_a_metric_better_higher_a_drop_is_the_slowdown() -> None:
    rate = Metric("AT", 100.0, "tok/s", "higher", "measured", "test builder", samples=(99.0, 100.0, 101.0))
    # Half the throughput (-50%) in a run that lost a quarter (-25%): 1.5x slower than the run, not gross.
    drop = Verdict("AT", "fail", "(-50.0%)", "baseline", -0.5, readings=(-0.5,))
    assert apart_from_run(drop, rate, None, RunShift(-0.25, 20, "upper"), "cpu").status == "warn"


def _decision(limits: tuple = ()) -> Decision:
    return Decision([_gross(1.0)], [CPU_TIME], [], limits, BaselineView(record("t.py::a", BASE)), processes=3)


def test_the_decision_takes_the_run_out_only_of_the_cpu_profile_s_default_check() -> None:
    run = _run(*[0.45] * 20)
    voted = _gross(1.0, 1.05, 0.98)
    (cleared,) = _decision().apart_from_run([voted], run, "cpu")
    assert cleared.status == "warn" and "the run as a whole moved too" in cleared.message
    # A fresh process far beyond the run's drift: the failure stands.
    assert _decision().apart_from_run([_gross(1.0, 1.05, 2.5)], run, "cpu")[0].status == "fail"
    # A tolerance the user gave fails any slowdown beyond it: the run's drift is not taken out.
    given = (parse_limit(CPU_TIME, "+10%"),)
    assert _decision(given).apart_from_run([voted], run, "cpu")[0].status == "fail"
    # GPU profiles fail beyond 5% and the noise: no gross floor, nothing taken out.
    assert _decision().apart_from_run([voted], run, "h100")[0].status == "fail"
    # Too few tests to speak of a run.
    assert _decision().apart_from_run([voted], _run(0.45), "cpu")[0].status == "fail"

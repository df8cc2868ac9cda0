"""More measurement windows when the first looks like a regression; best of several for baselines."""

from __future__ import annotations

import json
import os

import hypothesis  # noqa: F401 - loaded here once: pytester's in-process runs would re-import it every run
import pytest

from pytest_efficientllm.measure import WindowResult
from pytest_efficientllm.record import Record
from pytest_efficientllm.windows import WindowPolicy, take_windows, window_median

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestAssertRewriteWarning")

MS = 1e-3


def window(cpu_ms: float, rounds: int = 5) -> WindowResult:
    values = [cpu_ms * MS] * rounds
    return WindowResult(list(values), cpu_ms * MS * rounds, {}, cpu_s_per_round=list(values))


def runs(*cpu_ms: float):
    queue = [window(ms) for ms in cpu_ms]
    taken: list[WindowResult] = []

    def run() -> WindowResult:
        taken.append(queue.pop(0))
        return taken[-1]

    return run, taken


def provisional(result: WindowResult) -> Record:
    record = Record(nodeid="t", profile="cpu")
    record.settings["median_ms"] = window_median(result) / MS
    return record


def slower_than(limit_ms: float):
    return lambda record: record.settings["median_ms"] > limit_ms


def test_a_window_that_looks_fine_is_the_only_one() -> None:
    run, taken = runs(20.0, 20.0)
    kept, metric = take_windows(run, WindowPolicy(retries=2, pause_s=0, suspect=slower_than(21)), provisional)
    assert len(taken) == 1 and kept is taken[0]
    assert metric.value == 1 and metric.source == "counted" and metric.direction == "info"


def test_a_burst_in_the_first_window_is_outvoted_by_the_next() -> None:
    run, taken = runs(25.0, 20.0, 20.0)
    kept, metric = take_windows(run, WindowPolicy(retries=2, pause_s=0, suspect=slower_than(21)), provisional)
    assert len(taken) == 2 and kept is taken[1]
    assert metric.value == 2
    assert "25 ms, 20 ms (kept)" in metric.note and "looked like a regression" in metric.note


def test_a_real_regression_stays_slow_in_every_window_and_is_kept_as_measured() -> None:
    run, taken = runs(23.0, 22.5, 22.8)
    kept, metric = take_windows(run, WindowPolicy(retries=2, pause_s=0, suspect=slower_than(21)), provisional)
    assert len(taken) == 3 and metric.value == 3
    assert window_median(kept) == pytest.approx(22.5 * MS)  # the fastest, still beyond the limit


def test_recording_a_baseline_always_takes_every_window_and_keeps_the_fastest() -> None:
    run, taken = runs(21.0, 26.0, 20.0)
    kept, metric = take_windows(run, WindowPolicy(retries=2, always=True, pause_s=0), provisional)
    assert len(taken) == 3 and kept is taken[2]
    assert "recording a baseline" in metric.note


def test_no_retries_means_one_window_whatever_it_looks_like() -> None:
    run, taken = runs(30.0, 20.0)
    kept, metric = take_windows(run, WindowPolicy(retries=0, suspect=slower_than(21)), provisional)
    assert len(taken) == 1 and metric.value == 1


def test_the_gate_clock_is_cpu_time_per_round_when_the_timer_records_it() -> None:
    result = WindowResult([0.050, 0.050, 0.050], 0.15, {}, cpu_s_per_round=[0.010, 0.030, 0.020])
    assert window_median(result) == pytest.approx(0.020)
    assert window_median(WindowResult([0.05, 0.01, 0.03], 0.09, {})) == pytest.approx(0.03)


# Through pytest: a workload burning a known amount of CPU per round. "Burst" makes the
# first window of the run 30% slower (a neighbour's burst); "slower" makes every window so.
BURN_TESTS = """
import os, time, pytest

MODE = os.environ.get("EFF_MODE", "")
calls = {"windows": 0}

def burn(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass

@pytest.mark.efficiency(rounds=5, warmup=1, flops=False, cpu_time_per_round="+10%")
def test_burn(efficiency):
    state = {"round": 0}

    def work():
        state["round"] += 1
        first_window = state["round"] <= 6  # 1 warm-up + 5 rounds
        factor = 1.3 if MODE == "slower" or (MODE == "burst" and first_window) else 1.0
        burn(0.02 * factor)

    efficiency.measure(work)
"""
INI = "[pytest]\nefficiency_calibrate_every = off\n"


def _run(pytester: pytest.Pytester, mode: str, *args: str) -> tuple[pytest.RunResult, dict]:
    pytester.makepyfile(test_burn=BURN_TESTS)
    pytester.makeini(INI)
    os.environ["EFF_MODE"] = mode
    try:
        result = pytester.runpytest("-p", "no:cacheprovider", "--efficiency-threads=1", "--efficiency-json=run.json",
                                    *args)
    finally:
        del os.environ["EFF_MODE"]
    run = json.loads((pytester.path / "run.json").read_text())
    (record,) = run["records"]
    return result, record


def test_a_burst_in_one_window_passes_after_another_window_and_a_real_slowdown_fails(pytester: pytest.Pytester) -> None:
    result, record = _run(pytester, "", "--update-baselines")
    result.assert_outcomes(passed=1)
    assert record["metrics"]["windows"]["value"] == 3  # a baseline is the best of 1 + 2 windows

    result, record = _run(pytester, "burst")
    result.assert_outcomes(passed=1)
    windows = record["metrics"]["windows"]
    assert windows["value"] == 2, windows["note"]
    assert "(kept)" in windows["note"] and "looked like a regression" in windows["note"]

    result, record = _run(pytester, "slower")
    result.assert_outcomes(failed=1)
    assert record["metrics"]["windows"]["value"] == 3
    assert "cpu_time_per_round" in result.stdout.str()

    result, record = _run(pytester, "burst", "--efficiency-retry-windows=0")
    result.assert_outcomes(failed=1)
    assert record["metrics"]["windows"]["value"] == 1


def test_a_bad_retry_windows_value_is_a_usage_error_naming_the_option(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_burn=BURN_TESTS)
    pytester.makeini(INI)
    result = pytester.runpytest("-p", "no:cacheprovider", "--efficiency-retry-windows=two")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--efficiency-retry-windows='two'" in result.stderr.str()

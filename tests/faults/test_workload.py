"""Fault injection into the measured workload: it raises, runs out of memory, or leaks.

What must hold: the failure is the test's own (its exception, not the plugin's), the
half-finished measurement is discarded, nothing keeps running after it (no sampler
thread), the next test's numbers are as if nothing happened, and a leak across rounds is
reported rather than averaged into AMU and the peak.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
import torch

from pytest_efficientllm.core.record import Record
from pytest_efficientllm.judging.leak import find_leak
from pytest_efficientllm.measuring.backends import cpu_backend
from pytest_efficientllm.measuring.meter import MeasureProtocol, Meter
from tests.helpers.fault_harness import RECORDS_CONFTEST, metric_value, recorded

MiB = 2**20
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestAssertRewriteWarning")


def _samplers_alive() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "efficiency-sampler"]


def _allocate(n_bytes: int) -> None:
    t = torch.ones(n_bytes // 4)
    assert t.numel() * 4 == n_bytes


@pytest.fixture(scope="module")
def meter() -> Meter:
    return Meter(cpu_backend(threads=1, sample_interval_s=0.005))


# -- a test that raises inside the measured region ------------------------------------------


class InjectedFault(Exception):
    """The test's own error, raised from inside a measured round."""


def test_an_exception_in_round_3_propagates_as_itself_and_stops_every_sampler(meter: Meter) -> None:
    calls = []

    def flaky() -> None:
        calls.append(1)
        _allocate(16 * MiB)
        if len(calls) == 3:
            raise InjectedFault("round 3")

    with pytest.raises(InjectedFault, match="round 3"):
        meter.run_window(flaky, MeasureProtocol(rounds=10, warmup=0))
    assert len(calls) == 3, "rounds must stop at the failure"
    assert _samplers_alive() == []

    # The next window measures a known allocation as if nothing had happened.
    result = meter.run_window(lambda: _allocate(64 * MiB), MeasureProtocol(rounds=2, warmup=0))
    delta = result.readings["peak_memory_delta"].value
    assert 64 * MiB - 1 * MiB <= delta <= 64 * MiB + 4 * MiB, delta


def test_a_test_raising_inside_measure_fails_with_its_own_error_and_is_not_recorded(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(RECORDS_CONFTEST)
    pytester.makepyfile(
        """
        import pytest, torch

        class InjectedFault(Exception):
            pass

        @pytest.mark.efficiency(rounds=5, warmup=0)
        def test_raises(efficiency):
            n = []
            def work():
                n.append(torch.ones(8 * 2**20))  # 32 MiB held, so the peak would be wrong if kept
                if len(n) == 3:
                    raise InjectedFault("injected in round 3")
            efficiency.measure(work, tokens=1, flops=0)  # flops=0: no untimed counting call

        @pytest.mark.efficiency(rounds=2, warmup=0)
        def test_next(efficiency):
            efficiency.measure(lambda: torch.ones(16 * 2**20), tokens=1, flops=0)  # 64 MiB, freed each round
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--efficiency-calibrate-every=off")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*InjectedFault: injected in round 3*"])
    assert "budget exceeded" not in result.stdout.str() and "TelemetryError" not in result.stdout.str()
    kept = recorded(pytester)
    assert set(kept) == {"test_next"}
    delta = metric_value(kept["test_next"], "peak_memory_delta")
    assert 63 * MiB <= delta <= 68 * MiB, delta


# -- out of memory inside the measured region ------------------------------------------------


def test_an_allocation_the_machine_cannot_satisfy_is_a_clean_failure(meter: Meter) -> None:
    def oom() -> None:
        torch.empty(2**61, dtype=torch.uint8)  # 2 EiB: refused by the allocator, nothing touched

    with pytest.raises(RuntimeError, match="can't allocate memory"):
        meter.run_window(oom, MeasureProtocol(rounds=3, warmup=0))
    assert _samplers_alive() == []
    result = meter.run_window(lambda: _allocate(32 * MiB), MeasureProtocol(rounds=2, warmup=0))
    assert 31 * MiB <= result.readings["peak_memory_delta"].value <= 36 * MiB


class BudgetedAllocatorDouble:
    """Test double of an allocator with a fixed budget: raises MemoryError past it."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self.held: list[bytearray] = []

    def allocate(self, n_bytes: int) -> None:
        if sum(map(len, self.held)) + n_bytes > self.budget:
            raise MemoryError(f"budget of {self.budget} B exhausted")
        self.held.append(bytearray(n_bytes))


def test_out_of_memory_in_a_pytest_run_fails_that_test_and_records_nothing_for_it(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(RECORDS_CONFTEST)
    pytester.makepyfile(
        """
        import pytest, torch

        @pytest.mark.efficiency(rounds=3, warmup=0)
        def test_huge(efficiency):
            efficiency.measure(lambda: torch.empty(2**61, dtype=torch.uint8), flops=0)

        @pytest.mark.efficiency(rounds=2, warmup=0)
        def test_next(efficiency):
            run = efficiency.measure(lambda: torch.ones(4 * 2**20), flops=0)
            assert run["AL"].value > 0
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--efficiency-calibrate-every=off")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*RuntimeError*can't allocate memory*"])
    assert set(recorded(pytester)) == {"test_next"}


def test_a_budgeted_allocator_running_out_mid_window_discards_the_window(meter: Meter) -> None:
    alloc = BudgetedAllocatorDouble(budget_bytes=3 * MiB)
    with pytest.raises(MemoryError, match="budget"):
        meter.run_window(lambda: alloc.allocate(1 * MiB), MeasureProtocol(rounds=10, warmup=0))
    assert len(alloc.held) == 3 and _samplers_alive() == []


# -- a leak across rounds ----------------------------------------------------------------------


# The leak scenarios run in a fresh process each: RSS sees an allocation only when it takes new
# pages, and in a worker that has run other tests glibc serves 8-48 MiB requests from heap
# memory those tests freed but left resident (their growth then reads as 0 here: the
# detector's documented lower bound, not what these tests are about).
LEAK_SCENARIO = """
import json, sys, time
from pytest_efficientllm.measuring.backends import cpu_backend
from pytest_efficientllm.measuring.meter import Meter, MeasureProtocol, Work, derive_metrics
from pytest_efficientllm.core.record import Record

MiB = 2**20
# The CPU backend as a session makes it: its RSS sampler, every 5 ms, is what the leak is judged from.
meter = Meter(cpu_backend(threads=1, sample_interval_s=0.005))
kept = []

def leaky():
    kept.append(b"\\x01" * (8 * MiB))  # written, so resident
    time.sleep(0.004)

def steady():
    block = b"\\x01" * (8 * MiB)
    time.sleep(0.004)
    del block

def fills_cache_once():
    if not kept:
        kept.append(b"\\x01" * (48 * MiB))
    time.sleep(0.004)

fn, rounds = {"leaky": (leaky, 20), "steady": (steady, 20), "cache": (fills_cache_once, 30)}[sys.argv[1]]
work = Work(count_flops=False)
result = meter.run_window(fn, MeasureProtocol(rounds=rounds, warmup=0))
record = Record("tests/x.py::t", "cpu")
for metric in derive_metrics(result, work, meter.flops_of(fn, work), meter.backend).values():
    record.add(metric)
print(json.dumps(record.to_dict()))
"""


def _record_in_a_fresh_process(scenario: str) -> Record:
    out = subprocess.run([sys.executable, "-c", LEAK_SCENARIO, scenario], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return Record.from_dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_a_leak_of_8_mib_per_round_is_reported_with_its_rate() -> None:
    record = _record_in_a_fresh_process("leaky")
    finding = find_leak(record)
    assert finding is not None, record["retained_memory"]
    assert finding.rounds == 20
    # RSS may under-count a leak that reuses freed-but-resident memory; never over-count it.
    assert 5 * MiB <= finding.per_round_bytes <= 8.5 * MiB, finding
    assert "leak across rounds" in finding.message() and "per round" in finding.message()
    assert finding.as_verdict().status == "warn"


def test_the_same_memory_used_and_freed_every_round_is_not_a_leak() -> None:
    record = _record_in_a_fresh_process("steady")
    assert record["retained_memory"].value is not None
    assert find_leak(record) is None, record["retained_memory"]


def test_a_cache_filled_once_in_the_first_round_is_not_a_leak() -> None:
    record = _record_in_a_fresh_process("cache")
    assert record["retained_memory"].value >= 40 * MiB  # retained, but all of it early
    assert find_leak(record) is None, (record["retained_memory"], record["retained_memory_late"])

"""End to end: on the CPU profile a gross slowdown the vote confirmed must stand out from the run.

Ground truth: ten tests each spend a known number of CPU nanoseconds per round on a test double
of the process CPU clock (`time.process_time_ns`, which the round timer reads), and their
baselines are made faster than they are by known factors (`_faster`), so this run and every
fresh process of the vote read each one exactly that much slower: the nine others x1.5 (a
machine that drifted, the run's lower quartile +50%), the one under test x2.2 (+120%, beyond the
least gross floor of +90%, so the fresh processes confirm it) or x8. Beyond the run, x2.2 is only
+47% of its own (2.2 / 1.5): it warns; x8 is +433%: it fails.

The clock is a double because the rule takes the largest reading of every process: on CI's
busy 2-core runner a fresh process beside the other xdist worker read the real CPU time of the
same spin loop 1.8x high, which no choice of factors here can absorb.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.slowed_baselines import slow_down

PROJECT = """
import time

import pytest

ROUND_NS = 10_000_000  # the CPU time one round costs on the clock double: 10 ms


class CpuClockDouble:
    \"\"\"Test double of time.process_time_ns: advances only when the workload spends.\"\"\"

    def __init__(self):
        self.ns = 0

    def __call__(self):
        return self.ns

    def spend(self):
        self.ns += ROUND_NS


@pytest.mark.efficiency(rounds=5, warmup=1)
@pytest.mark.parametrize("i", range(10))
def test_spin(efficiency, i, monkeypatch):
    clock = CpuClockDouble()
    monkeypatch.setattr(time, "process_time_ns", clock)
    efficiency.measure(clock.spend)
"""
COMMON = (
    "-p",
    "no:cacheprovider",
    "--gpu=cpu",
    "--efficiency-threads=1",
    "--efficiency-calibrate-every=off",
    "--efficiency-confirm-spacing=0.2s",
)
TARGET = "test_spin.py::test_spin[9]"


def _faster(baselines: Path, factors: dict[str, float]) -> None:
    """Divide each test's measured times in its baseline by its factor (the run then reads it that much slower)."""
    for nodeid, factor in factors.items():
        assert slow_down(baselines, factor, only=nodeid) > 0, nodeid


@pytest.fixture
def spinner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)
    pytester.makepyfile(test_spin=PROJECT)
    pytester.makeini("[pytest]\n")
    assert pytester.runpytest_subprocess(*COMMON, "--update-baselines").ret == 0
    return pytester


def _cpu_time_verdict(run: Path, nodeid: str) -> dict:
    (record,) = [r for r in json.loads(run.read_text())["records"] if r["nodeid"] == nodeid]
    (verdict,) = [v for v in record["verdicts"] if v["metric"] == "cpu_time_per_round" and v["kind"] == "baseline"]
    return verdict


@pytest.mark.parametrize("target, status", [(2.2, "warn"), (8.0, "fail")], ids=["moved-with-the-run", "far-out"])
def test_a_confirmed_gross_slowdown_is_judged_beyond_the_run_s_own_shift(
    spinner: pytest.Pytester, target: float, status: str
) -> None:
    factors = {f"test_spin.py::test_spin[{i}]": 1.5 for i in range(9)} | {TARGET: target}
    _faster(spinner.path / "baselines", factors)
    out = spinner.path / "run.json"
    result = spinner.runpytest_subprocess(*COMMON, f"--efficiency-json={out}")
    verdict = _cpu_time_verdict(out, TARGET)
    assert verdict["change"] > 0.9, verdict  # gross in this process
    assert "confirmed in 3 processes" in verdict["message"], verdict
    # Each process's reading, as data, this process's first: all of them gross.
    assert len(verdict["readings"]) == 3 and verdict["readings"][0] == verdict["change"], verdict
    assert min(verdict["readings"]) > 0.9, verdict
    assert (
        "the run as a whole moved too (the lower quartile of the 10 tests this process compared, +"
        in (verdict["message"])
    )
    assert verdict["status"] == status, verdict["message"]
    assert result.ret == (1 if status == "fail" else 0), result.stdout.str()
    if status == "warn":
        result.stdout.fnmatch_lines(["*cpu_time_per_round beyond tolerance and noise (moved with the run as a whole*"])
    # The vote's line says how many it confirmed that the run's shift then let through (it wraps).
    said = " ".join(result.stdout.str().split())
    assert ("1 found by every process but warning only: the run as a whole slowed down" in said) == (status == "warn")

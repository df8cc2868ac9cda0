"""`benchmarks/gpu_check_report.py` reads what the plugin writes, not what it once wrote.

The report is first run on a GPU's files in a short, rare slot, so a note or verdict whose wording
moved would be miscounted there unseen. Ground truth: records and verdicts made by the plugin's own
code (the NVML probes over the `pynvml` test double, `compare_record`, the confirmation vote), whose
reasons, limiters and statuses are known, read back through the report's tallies.
"""

from __future__ import annotations

import importlib.util
import sys

from pytest_efficientllm.confirmation.vote import Vote
from pytest_efficientllm.core.limits import parse_limit
from pytest_efficientllm.core.record import Metric, Record
from pytest_efficientllm.judging.compare import compare_record
from pytest_efficientllm.telemetry.gpu_state import NvmlThrottleProbe, NvmlViolationProbe
from tests.helpers import REPO_ROOT
from tests.helpers.nvml_double import FakeGpu, FakeHandle, FakePynvml
from tests.helpers.record_builders import FINGERPRINT, H100, energy_record, latency

SPEC = importlib.util.spec_from_file_location("gpu_check_report", REPO_ROOT / "benchmarks" / "gpu_check_report.py")
assert SPEC is not None and SPEC.loader is not None
report = importlib.util.module_from_spec(SPEC)
sys.modules["gpu_check_report"] = report
SPEC.loader.exec_module(report)

SW_POWER_CAP, HW_THERMAL = 0x4, 0x40
POWER, THERMAL = 0, 1
MS = 1_000_000  # ns


def _window(nv: FakePynvml, reasons: int, held_ns: dict[int, int]) -> list[Metric]:
    """One window's `gpu_throttled` and `gpu_throttled_share`, read by the plugin's probes."""
    throttle = NvmlThrottleProbe(nv, [FakeHandle(0)])
    violation = NvmlViolationProbe(nv, [FakeHandle(0)])
    nv.gpus[0].event_reasons = reasons
    throttle.open()
    violation.open()
    for policy, ns in held_ns.items():
        nv.gpus[0].violation_ns[policy] = nv.gpus[0].violation_ns.get(policy, 0) + ns
    throttle.close()
    violation.close()
    return throttle.readings(0.1) + violation.readings(0.1)


def _run(*windows: list[Metric]) -> dict:
    records = []
    for i, metrics in enumerate(windows):
        record = Record(f"suites/test_x.py::test_{i}", "h100", fingerprint=dict(H100))
        for metric in metrics:
            record.add(metric)
        records.append(record.to_dict())
    return {"records": records}


def test_throttle_reasons_and_limiters_are_counted_as_the_probes_name_them() -> None:
    nv = FakePynvml([FakeGpu("GPU-aaaa1111-0000-0000-0000-000000000000")])
    run = _run(
        _window(nv, SW_POWER_CAP | HW_THERMAL, {POWER: 30 * MS, THERMAL: 10 * MS}),
        _window(nv, SW_POWER_CAP, {POWER: 5 * MS}),
        _window(nv, 0x1, {}),  # idle: neither throttled nor held
    )
    throttled, held = report.throttling([run])[:2]
    assert throttled == (
        "Throttling (`gpu_throttled`): 2 of 3 windows throttled: SW power cap (2); HW thermal slowdown (1)."
    )
    assert held.startswith("Violation counters (`gpu_throttled_share`): 2 of 3 windows held below application clocks")
    assert "power (2); thermal (1); 0 of them with no throttle reason" in held


def test_nvml_readings_absent_on_the_cpu_profile_say_why_and_on_a_gpu_name_the_build() -> None:
    # The CPU rehearsal's records carry no NVML reading by design; a GPU run's lacking one is news.
    cpu = {"records": [Record("suites/test_x.py::test_0", "cpu", fingerprint=dict(FINGERPRINT)).to_dict()]}
    gpu = _run([latency(0.01)])
    on_cpu, on_gpu = "(NVML's; the CPU profile has no GPU).", "(not recorded by this build)."
    assert report.throttling([cpu])[:2] == [
        f"Throttle reasons: the records carry no `gpu_throttled` metric {on_cpu}",
        f"Violation counters: the records carry no `gpu_throttled_share` {on_cpu}",
    ]
    assert report.throttling([gpu])[:2] == [
        f"Throttle reasons: the records carry no `gpu_throttled` metric {on_gpu}",
        f"Violation counters: the records carry no `gpu_throttled_share` {on_gpu}",
    ]
    assert report.energy_windows([cpu]) == [f"Energy windows: the records carry no `energy_window` setting {on_cpu}"]
    assert report.energy_windows([gpu]) == [f"Energy windows: the records carry no `energy_window` setting {on_gpu}"]


def test_the_a_a_tally_tells_a_failure_the_vote_cleared_from_a_pass_within_the_counters_resolution() -> None:
    base = Record("suites/test_x.py::test_decode", "h100", fingerprint=dict(H100))
    base.add(latency(0.010, n=9, spread=0.01))
    slow = Record("suites/test_x.py::test_decode", "h100", fingerprint=dict(H100))
    slow.add(latency(0.020, n=9, spread=0.01, seed=1))
    first = compare_record(base, slow)
    assert [v.status for v in first if v.metric == "AL"] == ["fail"]
    vote = Vote(first, ["AL"], processes=2)
    vote.add(slow, lambda r: compare_record(base, base))  # a fresh process that reads the baseline: it passes

    energy = [parse_limit("energy_per_token", "+5%")]
    e_base, e_cur = energy_record(0.100, 0.1), energy_record(0.115, 0.1)

    run = {
        "records": [
            {"verdicts": [v.to_dict() for v in first]},
            {"verdicts": [v.to_dict() for v in vote.final_verdicts()]},
            {"verdicts": [v.to_dict() for v in compare_record(e_base, e_cur, energy)]},
        ]
    }
    tally = report.aa_tally(run)
    assert tally["AL"] == {"fail": 1, "would fail": 1}
    assert tally["energy_per_token"] == {"within resolution": 1}

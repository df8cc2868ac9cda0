"""The GPU's pre-flight state and per-window throttling (`telemetry.gpu_state`) against FakePynvml.

A test double: nothing here is measured. What is checked is what the plugin makes of what
NVML answers, "not supported" and failures included.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_efficientllm.core.record import Record
from pytest_efficientllm.judging.fingerprint import fingerprint_diff
from pytest_efficientllm.judging.throttle import find_throttle
from pytest_efficientllm.telemetry.gpu_state import (
    NvmlThrottleProbe,
    NvmlViolationProbe,
    merge_throttle_notes,
    merge_violation_notes,
    read_gpu_state,
    reason_names,
)
from pytest_efficientllm.telemetry.nvml import open_nvml
from pytest_efficientllm.telemetry.nvml_devices import NvmlDevice
from tests.helpers.nvml_double import FakeClock, FakeGpu, FakeHandle, FakePynvml

GPU_A = "GPU-aaaa1111-0000-0000-0000-000000000000"
MIG_1 = "MIG-1111cccc-0000-0000-0000-000000000000"
H200 = "NVIDIA H200"
OWN_PID = 4242
SW_POWER_CAP, HW_SLOWDOWN, HW_THERMAL = 0x4, 0x8, 0x40

# Every NVML call the pre-flight read makes, and the state field each one feeds.
PREFLIGHT_CALLS = {
    "nvmlDeviceGetClockInfo": "sm_clock_mhz",
    "nvmlDeviceGetMaxClockInfo": "max_sm_clock_mhz",
    "nvmlDeviceGetApplicationsClock": "application_clocks",
    "nvmlDeviceGetDefaultApplicationsClock": "default_application_clocks",
    "nvmlDeviceGetPowerManagementLimit": "gpu_power_limit_w",
    "nvmlDeviceGetPowerManagementDefaultLimit": "gpu_power_limit_default_w",
    "nvmlDeviceGetTemperature": "temperature_c",
    "nvmlDeviceGetPersistenceMode": "gpu_persistence_mode",
    "nvmlDeviceGetEccMode": "gpu_ecc_mode",
    "nvmlDeviceGetMigMode": "gpu_mig_mode",
    "nvmlDeviceGetComputeRunningProcesses": "other_processes",
    "nvmlDeviceGetCurrentClocksEventReasons": "clocks_event_reasons",
}


def device(nv: FakePynvml, visible: str | None = None):
    clock = FakeClock()
    devs = open_nvml(nv, visible, (0,), clock=clock, sleep=clock.sleep, probe_max_s=0.05)
    assert devs.problem is None, devs.problem
    return devs.devices[0]


def state_of(gpu: FakeGpu, visible: str | None = None, nv: FakePynvml | None = None):
    nv = nv or FakePynvml([gpu])
    return read_gpu_state(nv, device(nv, visible), OWN_PID)


# -- pre-flight: what is read, and where it goes --------------------------------------------


def test_preflight_puts_stable_facts_in_the_fingerprint_and_values_of_the_moment_beside_it() -> None:
    gpu = FakeGpu(GPU_A, name=H200, sm_clock_mhz=345, temperature_c=41, power_limit_mw=600_000)
    gpu.processes = [(OWN_PID, 500 * 2**20)]  # this process itself is not "another"
    state = state_of(gpu)
    assert state.label == f"GPU 0 ({H200})"
    assert state.fingerprint == {
        "gpu_clocks": "not locked (GPU boost, SM up to 1980 MHz)",
        "gpu_max_mem_clock_mhz": 2619,
        "gpu_power_limit_w": 600.0,
        "gpu_power_limit_default_w": 700.0,
        "gpu_persistence_mode": "enabled",
        "gpu_ecc_mode": "enabled",
        "gpu_mig_mode": "disabled",
    }
    pre = state.preflight
    assert pre["sm_clock_mhz"] == 345 and pre["mem_clock_mhz"] == 2619 and pre["max_sm_clock_mhz"] == 1980
    assert pre["temperature_c"] == 41 and pre["other_processes"] == [] and "unknown" not in pre
    assert pre["power_limit_share_of_default"] == pytest.approx(600 / 700)
    assert state.clocks_locked is False and state.other_processes == []
    assert any("600 W is 86% of its default 700 W" in n for n in state.notices)


def test_a_gpu_at_its_default_power_limit_is_not_said_to_be_capped() -> None:
    state = state_of(FakeGpu(GPU_A, power_limit_mw=700_000, default_power_limit_mw=700_000))
    assert state.preflight["power_limit_share_of_default"] == 1.0
    assert not any("power limit" in n for n in state.notices)


def test_application_clocks_set_are_locked_clocks_named_in_the_fingerprint() -> None:
    state = state_of(FakeGpu(GPU_A, app_sm_clock_mhz=1410))
    assert state.clocks_locked is True
    assert state.fingerprint["gpu_clocks"] == "application clocks set: SM 1410 MHz (default 1980)"
    assert state.unmet("locked-clocks") is None


def test_clocks_held_by_a_user_setting_read_as_locked_where_no_application_clocks_are_set() -> None:
    # nvidia-smi -lgc has no NVML getter; NVML says it through the "applications clocks setting" reason.
    state = state_of(FakeGpu(GPU_A, event_reasons=0x2 | 0x1))
    assert state.clocks_locked is True and state.fingerprint["gpu_clocks"].startswith("locked:")
    assert state.preflight["clocks_event_reasons"] == ["GPU idle", "applications/locked clocks setting"]


@pytest.mark.parametrize("call, field", sorted(PREFLIGHT_CALLS.items()))
@pytest.mark.parametrize("code, said", [(3, "NOT_SUPPORTED"), (999, "failed at start-up")])
def test_each_preflight_query_that_fails_is_unknown_with_its_reason_and_never_raises(
    call: str, field: str, code: int, said: str
) -> None:
    nv = FakePynvml([FakeGpu(GPU_A)])
    dev = device(nv)
    nv.fail(call, code)
    if call == "nvmlDeviceGetCurrentClocksEventReasons":
        nv.fail("nvmlDeviceGetCurrentClocksThrottleReasons", code)
    state = read_gpu_state(nv, dev, OWN_PID)
    assert said in state.unknown[field] and call in state.unknown[field]
    assert field not in state.fingerprint  # unknown is left out, so it is never compared
    untouched = FakePynvml([FakeGpu(GPU_A)])
    whole = read_gpu_state(untouched, device(untouched), OWN_PID)
    assert set(whole.fingerprint) - set(state.fingerprint) <= {field, "gpu_clocks", "gpu_max_mem_clock_mhz"}


def test_a_device_that_supports_no_state_query_at_all_still_opens() -> None:
    nv = FakePynvml([FakeGpu(GPU_A)])
    dev = device(nv)
    for call in PREFLIGHT_CALLS:
        nv.fail(call, 3)
    nv.fail("nvmlDeviceGetCurrentClocksThrottleReasons", 3)
    nv.fail("nvmlDeviceGetName", 3)
    state = read_gpu_state(nv, dev, OWN_PID)
    assert state.fingerprint == {} and state.clocks_locked is None and state.other_processes is None
    assert state.label == "GPU 0"
    assert "cannot be read" in (state.unmet("locked-clocks") or "")
    assert "cannot be listed" in (state.unmet("idle-gpu") or "")
    assert state.throttle_unsupported and any("throttling is not checked" in n for n in state.notices)


@pytest.mark.parametrize("limit_mw, default_mw", [(0, 700_000), (700_000, 0), (0, 0)])
def test_a_power_limit_of_zero_is_unknown_never_divided_by(limit_mw: int, default_mw: int) -> None:
    state = state_of(FakeGpu(GPU_A, power_limit_mw=limit_mw, default_power_limit_mw=default_mw))
    zero = [k for k, mw in (("gpu_power_limit_w", limit_mw), ("gpu_power_limit_default_w", default_mw)) if mw == 0]
    for key in zero:
        assert key not in state.fingerprint and "power limit of 0 mW" in state.unknown[key]
        said = f"the driver reported a power limit of 0 mW ({key}); left out of the fingerprint"
        assert [n for n in state.notices if said in n] == [f"{state.label}: {said}"]
    assert "power_limit_share_of_default" not in state.preflight


def test_on_a_mig_slice_clocks_and_modes_are_read_from_the_whole_gpu() -> None:
    # The double answers NOT_SUPPORTED to device-wide queries on a MIG handle, as NVML does.
    gpu = FakeGpu(GPU_A, mig=[MIG_1], sm_clock_mhz=1755)
    state = state_of(gpu, MIG_1)
    assert state.preflight["sm_clock_mhz"] == 1755 and "MIG parent" in state.preflight["device_wide_from"]
    assert state.fingerprint["gpu_mig_mode"] == "enabled" and "unknown" not in state.preflight


def test_on_a_mig_slice_whose_parent_refuses_the_clocks_they_are_unknown_with_why() -> None:
    nv = FakePynvml([FakeGpu(GPU_A, mig=[MIG_1])])
    dev = device(nv, MIG_1)
    nv.fail("nvmlDeviceGetClockInfo", 3)
    state = read_gpu_state(nv, dev, OWN_PID)
    assert state.preflight["sm_clock_mhz"] is None
    assert "nvmlDeviceGetClockInfo: NVML_ERROR_NOT_SUPPORTED" in state.unknown["sm_clock_mhz"]
    # The handle that was asked is the parent's, never the instance's.
    wrong = NvmlDevice(FakeHandle(0, 0), FakeHandle(0, 0), MIG_1, True, "MIG instance (x)")
    state = read_gpu_state(FakePynvml([FakeGpu(GPU_A, mig=[MIG_1])]), wrong, OWN_PID)
    assert "NOT_SUPPORTED" in state.unknown["sm_clock_mhz"]


def test_other_processes_are_listed_and_make_idle_gpu_unmet() -> None:
    gpu = FakeGpu(GPU_A, name=H200, processes=[(OWN_PID, 2**30), (777, 3 * 2**30), (778, None)])
    state = state_of(gpu)
    assert state.other_processes == [
        {"pid": 777, "used_memory_bytes": 3 * 2**30},
        {"pid": 778, "used_memory_bytes": None},
    ]
    why = state.unmet("idle-gpu") or ""
    assert f"GPU 0 ({H200}) is used by 2 other process(es): pid 777 (3072 MiB), pid 778" in why
    assert "host PIDs" in why
    assert any("2 other process(es)" in n for n in state.notices)
    assert state_of(FakeGpu(GPU_A, processes=[(OWN_PID, 1)])).unmet("idle-gpu") is None


def test_locked_clocks_unmet_names_the_gpu_and_how_to_lock_them() -> None:
    why = state_of(FakeGpu(GPU_A, name=H200)).unmet("locked-clocks") or ""
    assert why.startswith(f"GPU 0 ({H200}) has no locked/application clocks set")
    assert "nvidia-smi -lgc" in why and "drop the requirement" in why


# -- the fingerprint comparison -------------------------------------------------------------


def test_a_baseline_with_locked_clocks_against_a_run_without_warns_naming_the_clocks() -> None:
    locked = state_of(FakeGpu(GPU_A, app_sm_clock_mhz=1410))
    free = state_of(FakeGpu(GPU_A, sm_clock_mhz=210, temperature_c=70, processes=[(9, 1)]))
    base = {**locked.fingerprint, "gpu_preflight": locked.preflight}
    cur = {**free.fingerprint, "gpu_preflight": free.preflight}
    diff = fingerprint_diff(base, cur)
    assert diff.errors == []
    (warning,) = diff.warnings
    assert warning == (
        "gpu_clocks: 'application clocks set: SM 1410 MHz (default 1980)' "
        "-> 'not locked (GPU boost, SM up to 1980 MHz)'"
    )


def test_values_of_the_moment_never_make_a_fingerprint_warning() -> None:
    a = state_of(FakeGpu(GPU_A, sm_clock_mhz=210, temperature_c=30))
    b = state_of(FakeGpu(GPU_A, sm_clock_mhz=1980, temperature_c=80, processes=[(9, 1)], event_reasons=0x4))
    diff = fingerprint_diff(
        {**a.fingerprint, "gpu_preflight": a.preflight}, {**b.fingerprint, "gpu_preflight": b.preflight}
    )
    assert (diff.errors, diff.warnings) == ([], []) and a.preflight != b.preflight


# -- throttling in each window --------------------------------------------------------------


def throttle_window(nv: FakePynvml, at_open: int, at_close: int, unsupported: str | None = None):
    probe = NvmlThrottleProbe(nv, [FakeHandle(0)], unsupported)
    nv.gpus[0].event_reasons = at_open
    probe.open()
    nv.gpus[0].event_reasons = at_close
    probe.close()
    (metric,) = probe.readings(1.0)
    return metric


def test_reasons_seen_at_open_or_close_are_ored_and_named() -> None:
    nv = FakePynvml([FakeGpu(GPU_A)])
    metric = throttle_window(nv, SW_POWER_CAP | 0x1, HW_THERMAL)
    assert metric.value == 1.0 and metric.note == "throttled: SW power cap, HW thermal slowdown"
    assert "open and close" in metric.method
    assert nv.count("nvmlDeviceGetCurrentClocksEventReasons") == 2  # one read at each edge, none between


def test_an_idle_gpu_or_the_users_own_clocks_setting_is_not_throttling() -> None:
    nv = FakePynvml([FakeGpu(GPU_A)])
    assert throttle_window(nv, 0x1, 0x1).value == 0.0
    metric = throttle_window(nv, 0x2, 0x2)
    assert metric.value == 0.0 and "not throttling" in metric.note


def test_an_older_pynvml_without_the_event_reasons_call_falls_back_to_the_throttle_reasons_call() -> None:
    nv = FakePynvml([FakeGpu(GPU_A)])
    nv.nvmlDeviceGetCurrentClocksEventReasons = None  # type: ignore[assignment,method-assign]
    assert throttle_window(nv, 0, HW_SLOWDOWN).note == "throttled: HW slowdown"
    assert nv.count("nvmlDeviceGetCurrentClocksThrottleReasons") == 2


def test_a_throttle_query_not_supported_makes_the_flag_unavailable_with_the_reason() -> None:
    nv = FakePynvml([FakeGpu(GPU_A)])
    dev = device(nv)
    nv.fail("nvmlDeviceGetCurrentClocksEventReasons", 3)
    nv.fail("nvmlDeviceGetCurrentClocksThrottleReasons", 3)
    state = read_gpu_state(nv, dev, OWN_PID)
    assert state.throttle_unsupported and "NOT_SUPPORTED" in state.throttle_unsupported
    metric = throttle_window(nv, SW_POWER_CAP, SW_POWER_CAP, state.throttle_unsupported)
    assert metric.value is None and "NOT_SUPPORTED" in metric.note
    # Unsupported only once a window is under way: unavailable for that window, never an exception.
    fresh = FakePynvml([FakeGpu(GPU_A)])
    probe = NvmlThrottleProbe(fresh, [FakeHandle(0)])
    probe.open()
    fresh.fail("nvmlDeviceGetCurrentClocksEventReasons", 999)
    probe.close()
    (metric,) = probe.readings(1.0)
    assert metric.value is None and "failed in this window" in metric.note


def test_a_throttled_window_is_a_warning_naming_the_reasons_never_a_failure() -> None:
    nv = FakePynvml([FakeGpu(GPU_A)])
    record = Record("t.py::test_x", "h200")
    record.add(throttle_window(nv, 0, SW_POWER_CAP | HW_SLOWDOWN))
    verdict = find_throttle(record)
    assert verdict is not None and verdict.status == "warn" and not verdict.failed
    assert "SW power cap, HW slowdown" in verdict.message and "throttled:" not in verdict.message
    calm = Record("t.py::test_x", "h200")
    calm.add(throttle_window(nv, 0x1, 0x1))
    assert find_throttle(calm) is None and find_throttle(Record("t.py::test_y", "cpu")) is None


def test_unknown_reason_bits_are_named_by_their_value() -> None:
    assert reason_names(0x4 | 0x8000) == ["SW power cap", "unknown reason bits 0x8000"]


def test_own_pid_is_this_process() -> None:
    # The backend passes os.getpid(); a process listed under it is this one, not another.
    nv = FakePynvml([FakeGpu(GPU_A, processes=[(os.getpid(), 1)])])
    assert read_gpu_state(nv, device(nv), os.getpid()).other_processes == []


def test_a_test_whose_windows_throttled_in_part_is_flagged_with_the_share_and_every_reason() -> None:
    from pytest_efficientllm.core.metrics import measured

    record = Record("t.py::test_x", "h200")
    record.add(measured("gpu_throttled", 0.25, "NVML clocks event reasons", note="throttled: HW slowdown"))
    verdict = find_throttle(record)
    assert verdict is not None and "(HW slowdown in 25% of the measured time (NVML" in verdict.message


def test_the_throttle_notes_of_several_windows_keep_every_reason_once() -> None:
    power, thermal = "throttled: SW power cap", "throttled: SW thermal slowdown, SW power cap"
    assert merge_throttle_notes(power, thermal) == "throttled: SW power cap, SW thermal slowdown"
    calm = "clocks event reasons seen (not throttling): applications/locked clocks setting"
    assert merge_throttle_notes(calm, power) == power and merge_throttle_notes("", power) == power
    assert merge_throttle_notes(calm, "") == calm and merge_throttle_notes("", "") == ""


# -- the violation counters: how long a limiter held the clocks down inside the window --------

POWER, THERMAL = 0, 1
MS = 1_000_000  # ns


def violation_window(nv: FakePynvml, held_ns: dict[int, int], wall_s: float = 0.1, gpus: int = 1):
    probe = NvmlViolationProbe(nv, [FakeHandle(i) for i in range(gpus)])
    probe.open()
    for policy, ns in held_ns.items():
        nv.gpus[0].violation_ns[policy] = nv.gpus[0].violation_ns.get(policy, 0) + ns
    probe.close()
    (metric,) = probe.readings(wall_s)
    return metric


def test_time_a_limiter_held_the_clocks_between_the_two_reads_is_seen_and_warned() -> None:
    nv = FakePynvml([FakeGpu(GPU_A, violation_ns={POWER: 5_000 * MS})])  # since the driver loaded
    metric = violation_window(nv, {POWER: 30 * MS}, wall_s=0.1)
    assert metric.name == "gpu_throttled_share" and metric.value == pytest.approx(0.30)
    assert metric.note == "held below application clocks by: power"
    assert nv.count("nvmlDeviceGetViolationStatus") == 2 * 5  # 5 limiters, at open and close only
    record = Record("t.py::test_x", "h200")
    record.add(throttle_window(nv, 0x1, 0x1))  # no throttle reason at either edge
    assert find_throttle(record) is None
    record.add(metric)
    verdict = find_throttle(record)
    assert verdict is not None and verdict.status == "warn"
    assert "held below application clocks by: power for 30.0% of the window" in verdict.message


def test_limiters_overlap_so_the_share_is_the_largest_ones_not_their_sum() -> None:
    nv = FakePynvml([FakeGpu(GPU_A)])
    metric = violation_window(nv, {POWER: 30 * MS, THERMAL: 10 * MS})
    assert metric.value == pytest.approx(0.30) and metric.note == "held below application clocks by: power, thermal"
    assert violation_window(nv, {POWER: 900 * MS}).value == 1.0  # never above the whole window


def test_a_window_no_limiter_held_reads_zero_and_warns_nothing() -> None:
    nv = FakePynvml([FakeGpu(GPU_A, violation_ns={POWER: 7 * MS})])
    metric = violation_window(nv, {})
    assert metric.value == 0.0 and metric.note == ""
    record = Record("t.py::test_x", "h200")
    record.add(metric)
    assert find_throttle(record) is None


def test_a_limiter_nvml_does_not_support_is_left_out_and_not_asked_again() -> None:
    nv = FakePynvml([FakeGpu(GPU_A, violation_unsupported={2, 3, 5})])
    assert violation_window(nv, {POWER: 10 * MS}).value == pytest.approx(0.10)
    probe = NvmlViolationProbe(nv, [FakeHandle(0)])
    before = nv.count("nvmlDeviceGetViolationStatus")
    for _ in range(2):
        probe.open()
        probe.close()
    assert nv.count("nvmlDeviceGetViolationStatus") - before == 5 + 2 + 2 + 2  # the refused three asked once


def test_no_violation_counter_at_all_makes_the_share_unavailable_with_why() -> None:
    nv = FakePynvml([FakeGpu(GPU_A, violation_unsupported={0, 1, 2, 3, 5})])
    metric = violation_window(nv, {POWER: 10 * MS})
    assert metric.value is None and "no violation counter" in metric.note and "NOT_SUPPORTED" in metric.note
    older = FakePynvml([FakeGpu(GPU_A)])
    older.nvmlDeviceGetViolationStatus = None  # type: ignore[assignment,method-assign]
    assert "not in this pynvml" in violation_window(older, {}).note


def test_a_counter_that_goes_backwards_is_left_out_of_that_window_and_said() -> None:
    nv = FakePynvml([FakeGpu(GPU_A, violation_ns={POWER: 50 * MS, THERMAL: 0})])
    probe = NvmlViolationProbe(nv, [FakeHandle(0)])
    probe.open()
    nv.gpus[0].violation_ns = {POWER: 2 * MS, THERMAL: 10 * MS}  # the driver reloaded: counters restart
    probe.close()
    (metric,) = probe.readings(0.1)
    assert metric.value == pytest.approx(0.10)  # thermal only
    assert metric.note == (
        "held below application clocks by: thermal; counter went backwards (driver reloaded?), not counted: power"
    )


def test_a_violation_read_that_fails_mid_window_makes_that_window_unavailable() -> None:
    nv = FakePynvml([FakeGpu(GPU_A)])
    probe = NvmlViolationProbe(nv, [FakeHandle(0)])
    probe.open()
    nv.fail("nvmlDeviceGetViolationStatus", 999)
    probe.close()
    (metric,) = probe.readings(0.1)
    assert metric.value is None and "failed in this window" in metric.note


def test_over_two_gpus_the_share_is_the_most_held_gpus() -> None:
    nv = FakePynvml([FakeGpu(GPU_A), FakeGpu("GPU-bbbb2222-0000-0000-0000-000000000000")])
    probe = NvmlViolationProbe(nv, [FakeHandle(0), FakeHandle(1)])
    probe.open()
    nv.gpus[0].violation_ns = {POWER: 10 * MS}
    nv.gpus[1].violation_ns = {POWER: 40 * MS}
    probe.close()
    (metric,) = probe.readings(0.1)
    assert metric.value == pytest.approx(0.40)


def test_the_limiter_notes_of_several_windows_keep_every_limiter_once() -> None:
    power = "held below application clocks by: power"
    both = "held below application clocks by: thermal, power; counter went backwards (driver reloaded?), not counted: x"
    assert merge_violation_notes(power, both) == (
        "held below application clocks by: power, thermal; counter went backwards (driver reloaded?), not counted: x"
    )
    assert merge_violation_notes("", power) == power and merge_violation_notes("", "") == ""


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=0x7FF), min_size=1, max_size=6))
def test_merged_window_notes_name_what_one_window_spanning_them_would(masks: list[int]) -> None:
    # Each window's own note, merged in order, names the same reasons as the note of the OR of
    # their masks: what a single window over all of them would have seen at its edges.
    merged = ""
    for mask in masks:
        probe = NvmlThrottleProbe(FakePynvml([FakeGpu(GPU_A, event_reasons=mask)]), [FakeHandle(0)])
        probe.open()
        probe.close()
        (metric,) = probe.readings(1.0)
        merged = merge_throttle_notes(merged, metric.note)
    union = 0
    for mask in masks:
        union |= mask
    spanning = throttle_window(FakePynvml([FakeGpu(GPU_A)]), union, union).note

    def kind_and_names(note: str) -> tuple[str, set[str]]:
        kind, _, names = note.partition(": ")
        return kind, set(names.split(", ")) if names else set()

    assert kind_and_names(merged) == kind_and_names(spanning)

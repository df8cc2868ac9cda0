"""The NVML backend's logic against FakePynvml (a test double: nothing here is measured)."""

from __future__ import annotations

import pytest

from pytest_efficientllm.measuring.backends import Backend
from pytest_efficientllm.measuring.meter import MeasureProtocol, Meter
from pytest_efficientllm.telemetry.base import TelemetryError
from pytest_efficientllm.telemetry.nvml import NvmlSet, open_nvml
from pytest_efficientllm.telemetry.nvml_devices import parse_visible_devices
from pytest_efficientllm.telemetry.nvml_energy import SHORT_WINDOW_UPDATES, combine_steps, probe_counters
from pytest_efficientllm.telemetry.procfs import PerfCounterTimer
from tests.helpers.nvml_double import FakeClock, FakeGpu, FakeHandle, FakePynvml

GPU_A = "GPU-aaaa1111-0000-0000-0000-000000000000"
GPU_B = "GPU-bbbb2222-0000-0000-0000-000000000000"
MIG_1 = "MIG-1111cccc-0000-0000-0000-000000000000"
MIG_2 = "MIG-2222dddd-0000-0000-0000-000000000000"


def two_gpus(clock: FakeClock) -> FakePynvml:
    return FakePynvml(
        [
            FakeGpu(GPU_A, power_w=100.0, busy_percent=10),
            FakeGpu(GPU_B, power_w=300.0, busy_percent=90, name="NVIDIA A100-SXM4-80GB", gpm=False),
        ],
        clock=clock,
    )


def open_fake(nv: FakePynvml, clock: FakeClock, visible: str | None = None, ordinals=(0,)) -> NvmlSet:
    return open_nvml(nv, visible, ordinals, clock=clock, sleep=clock.sleep)


def window(devs: NvmlSet, clock: FakeClock, seconds: float, interval_s: float = 0.005) -> dict:
    """Open every probe, let `seconds` of fake time pass, close; the readings by name."""
    probes = devs.make_probes(interval_s)
    for p in probes:
        p.open()
    clock.sleep(seconds)
    for p in reversed(probes):
        p.close()
    return {m.name: m for p in probes for m in p.readings(seconds)}


# -- the counter step and idle power ------------------------------------------------------


@pytest.mark.parametrize("power_w, period_s", [(100.0, 0.1), (65.0, 0.02), (700.0, 0.005)])
def test_probe_finds_the_counter_step_period_and_idle_power(power_w: float, period_s: float) -> None:
    clock = FakeClock()
    nv = FakePynvml([FakeGpu(GPU_A, power_w=power_w, period_s=period_s)], clock=clock)
    devs = open_fake(nv, clock)
    assert devs.step.period_s == pytest.approx(period_s, rel=0.02)
    assert devs.step.step_mj == pytest.approx(power_w * period_s * 1e3, rel=0.02)
    assert devs.step.idle_power_w == pytest.approx(power_w, rel=0.02)
    assert devs.fingerprint["nvml_energy_period_s"] == devs.step.period_s
    idle = window(devs, clock, 1.0)["idle_power"]
    assert idle.value == pytest.approx(power_w, rel=0.02) and idle.unit == "W" and idle.source == "measured"


def test_probe_is_bounded_when_the_counter_never_moves() -> None:
    clock = FakeClock()
    (step,) = probe_counters(lambda: [42], clock, clock.sleep, max_s=0.5)
    assert step.period_s is None and step.step_mj is None and step.idle_power_w is None
    assert 0.5 <= step.duration_s < 0.51


def test_unknown_period_is_said_once_and_in_the_energy_note() -> None:
    clock = FakeClock()
    nv = FakePynvml([FakeGpu(GPU_A, period_s=5.0)], clock=clock)  # slower than the 1 s probe
    devs = open_fake(nv, clock)
    assert any("update period unknown" in n for n in devs.notices)
    readings = window(devs, clock, 20.0)
    assert readings["energy"].value == pytest.approx(100.0 * 20.0, rel=0.3)
    assert "period unknown" in readings["energy"].note
    assert readings["idle_power"].value is None and "changed" in readings["idle_power"].note


# -- energy over a window ------------------------------------------------------------------


def test_energy_of_a_long_window_is_the_counter_difference_in_joules() -> None:
    clock = FakeClock()
    devs = open_fake(FakePynvml([FakeGpu(GPU_A, power_w=250.0, period_s=0.1)], clock=clock), clock)
    energy = window(devs, clock, 3.0)["energy"]
    # The counter is quantised to 100 ms: 3.0 s at 250 W is 750 J within one update (25 J).
    assert energy.unit == "J" and energy.source == "measured"
    assert abs(energy.value - 750.0) <= 25.0
    assert energy.note == ""


def test_short_window_is_flagged_in_the_note() -> None:
    clock = FakeClock()
    devs = open_fake(FakePynvml([FakeGpu(GPU_A, period_s=0.1)], clock=clock), clock)
    energy = window(devs, clock, 0.25)
    assert energy["energy"].value is not None
    assert "short window" in energy["energy"].note and f"fewer than {SHORT_WINDOW_UPDATES}" in energy["energy"].note


def test_window_the_counter_did_not_resolve_is_unavailable_not_zero() -> None:
    clock = FakeClock(start=1000.01)  # mid-period, so a 10 ms window sees no update
    devs = open_fake(FakePynvml([FakeGpu(GPU_A, period_s=0.1)], clock=clock), clock)
    clock.now = 2000.01
    energy = window(devs, clock, 0.01)["energy"]
    assert energy.value is None
    assert "did not advance" in energy.note and "lengthen" in energy.note


def test_counter_going_backwards_is_unavailable_with_an_error_note() -> None:
    clock = FakeClock()
    nv = FakePynvml([FakeGpu(GPU_A)], clock=clock)
    devs = open_fake(nv, clock)
    probes = devs.make_probes(0.005)
    for p in probes:
        p.open()
    clock.sleep(2.0)
    nv.gpus[0].energy_offset_mj = -(10**9)  # e.g. a driver reload mid-window
    for p in reversed(probes):
        p.close()
    energy = {m.name: m for p in probes for m in p.readings(2.0)}["energy"]
    assert energy.value is None and "went backwards" in energy.note


# -- support and errors --------------------------------------------------------------------


def test_nvml_init_failure_gives_the_null_set_with_one_notice() -> None:
    nv = FakePynvml()
    nv.fail("nvmlInit", nv.NVML_ERROR_LIBRARY_NOT_FOUND)
    devs = open_nvml(nv, None)
    assert devs.problem is not None and "nvmlInit" in devs.problem
    assert len(devs.notices) == 1
    readings = window(devs, FakeClock(), 1.0)
    for name in ("energy", "AMU", "PCU", "tensor_active", "idle_power"):
        assert readings[name].value is None and "nvmlInit" in readings[name].note


def test_missing_bindings_give_the_null_set() -> None:
    devs = open_nvml(None, None)
    assert "nvidia-ml-py" in devs.problem


@pytest.mark.parametrize(
    "function, metric",
    [
        ("nvmlDeviceGetUtilizationRates", "PCU"),
        ("nvmlDeviceGetTotalEnergyConsumption", "energy"),
        ("nvmlDeviceGetMemoryInfo", "AMU"),
        ("nvmlGpmQueryDeviceSupport", "tensor_active"),
    ],
)
def test_not_supported_makes_only_that_metric_unavailable(function: str, metric: str) -> None:
    clock = FakeClock()
    nv = FakePynvml(clock=clock)
    nv.fail(function, nv.NVML_ERROR_NOT_SUPPORTED)
    devs = open_fake(nv, clock)
    readings = window(devs, clock, 1.0)
    assert readings[metric].value is None
    assert "NOT_SUPPORTED" in readings[metric].note and function in readings[metric].note
    assert sum(function in n for n in devs.notices) == 1
    # A counter NVML does not have has no update period to be unknown either: one notice, not two.
    assert not any("update period unknown" in n for n in devs.notices)
    others = {"PCU", "energy", "AMU", "tensor_active"} - {metric}
    assert all(readings[o].value is not None for o in others), readings


def test_gpm_unsupported_device_says_so() -> None:
    clock = FakeClock()
    devs = open_fake(FakePynvml([FakeGpu(GPU_A, gpm=False)], clock=clock), clock)
    assert "Hopper" in window(devs, clock, 1.0)["tensor_active"].note


def test_tensor_activity_is_the_gpm_share() -> None:
    clock = FakeClock()
    devs = open_fake(FakePynvml([FakeGpu(GPU_A, tensor_percent=37.5)], clock=clock), clock)
    assert window(devs, clock, 1.0)["tensor_active"].value == pytest.approx(0.375)


def test_energy_error_in_the_middle_of_a_window_fails_naming_the_call() -> None:
    clock = FakeClock()
    nv = FakePynvml(clock=clock)
    devs = open_fake(nv, clock)
    probes = devs.make_probes(0.005)
    for p in probes:
        p.open()
    nv.fail("nvmlDeviceGetTotalEnergyConsumption", nv.NVML_ERROR_GPU_IS_LOST)
    for p in reversed(probes):
        p.close()  # closing never raises: every probe gets closed
    with pytest.raises(TelemetryError, match="nvmlDeviceGetTotalEnergyConsumption failed: GPU is lost"):
        [p.readings(1.0) for p in probes]


def test_sampler_error_in_the_middle_of_a_window_fails_the_measurement() -> None:
    nv = FakePynvml()  # real clock: the sampler thread runs for real
    devs = open_nvml(nv, None, probe_max_s=0.05)
    backend = Backend("h100", PerfCounterTimer(), lambda: devs.make_probes(0.002), lambda: None, None)

    def workload() -> None:
        nv.fail("nvmlDeviceGetMemoryInfo", nv.NVML_ERROR_UNKNOWN)
        import time

        time.sleep(0.02)

    with pytest.raises(TelemetryError, match="nvmlDeviceGetMemoryInfo failed: Unknown Error"):
        Meter(backend).run_window(workload, MeasureProtocol(rounds=1, warmup=0))


# -- which devices ------------------------------------------------------------------------


def test_parse_visible_devices() -> None:
    assert parse_visible_devices(None) is None
    assert parse_visible_devices("") == []
    assert parse_visible_devices("1, 0") == [1, 0]
    assert parse_visible_devices(f"{GPU_B},GPU-aaaa") == [GPU_B, "GPU-aaaa"]
    with pytest.raises(ValueError, match="CUDA_VISIBLE_DEVICES.*'gpu1'"):
        parse_visible_devices("0,gpu1")
    with pytest.raises(ValueError, match="listed twice"):
        parse_visible_devices("0,0")


@pytest.mark.parametrize(
    "visible, expected_uuid",
    [
        (None, GPU_A),
        ("1", GPU_B),
        ("1,0", GPU_B),
        (GPU_B, GPU_B),
        ("GPU-bbbb", GPU_B),  # a unique prefix, as CUDA accepts
        (f"GPU-bbbb,{GPU_A}", GPU_B),
    ],
)
def test_cuda_visible_devices_picks_the_device_ordinal_0_maps_to(visible: str | None, expected_uuid: str) -> None:
    clock = FakeClock()
    devs = open_fake(two_gpus(clock), clock, visible)
    assert devs.fingerprint["gpu_uuids"] == [expected_uuid]
    power = 300.0 if expected_uuid == GPU_B else 100.0
    assert window(devs, clock, 2.0)["energy"].value == pytest.approx(2.0 * power, abs=power * 0.1)


def test_only_the_devices_used_are_counted() -> None:
    clock = FakeClock()
    nv = two_gpus(clock)
    one = window(open_fake(nv, clock, "0,1", ordinals=(1,)), clock, 2.0)["energy"].value
    both = window(open_fake(nv, clock, "0,1", ordinals=(0, 1)), clock, 2.0)["energy"].value
    assert one == pytest.approx(600.0, abs=30) and both == pytest.approx(800.0, abs=40)


@pytest.mark.parametrize(
    "visible, fragment",
    [
        ("GPU-ffff", "matches no NVML device"),
        ("GPU-", "ambiguous"),
        ("5", "NVML sees only 2"),
        ("2", "NVML sees only 2"),  # the first index beyond: indices count from 0
        ("MIG-nope", "matches no MIG device"),
    ],
)
def test_bad_cuda_visible_devices_entry_is_named(visible: str, fragment: str) -> None:
    clock = FakeClock()
    devs = open_fake(two_gpus(clock), clock, visible)
    assert devs.problem is not None and fragment in devs.problem and "CUDA_VISIBLE_DEVICES" in devs.problem


def test_ordinal_beyond_the_visible_devices_is_named() -> None:
    clock = FakeClock()
    devs = open_fake(two_gpus(clock), clock, "1", ordinals=(1,))
    assert "ordinal" in devs.problem and "CUDA_VISIBLE_DEVICES" in devs.problem


# -- MIG -----------------------------------------------------------------------------------


def mig_gpu(clock: FakeClock) -> FakePynvml:
    return FakePynvml([FakeGpu(GPU_A, power_w=200.0, mig=[MIG_1, MIG_2])], clock=clock)


def test_mig_instance_energy_is_whole_gpu_and_utilisation_unsupported() -> None:
    clock = FakeClock()
    nv = mig_gpu(clock)
    devs = open_fake(nv, clock, MIG_2)
    assert devs.devices[0].is_mig and devs.fingerprint["gpu_uuids"] == [MIG_2]
    readings = window(devs, clock, 2.0)
    assert readings["energy"].value == pytest.approx(400.0, abs=20)
    assert "whole GPU" in readings["energy"].method
    assert readings["PCU"].value is None and "MIG" in readings["PCU"].note
    assert readings["tensor_active"].value is None and "MIG" in readings["tensor_active"].note
    assert readings["AMU"].value == nv.gpus[0].memory_used // 2  # the instance's own memory
    assert any("MIG" in n and "whole GPU" in n for n in devs.notices)


def test_two_mig_instances_of_one_gpu_count_its_energy_once() -> None:
    clock = FakeClock()
    devs = open_fake(mig_gpu(clock), clock, f"{MIG_1},{MIG_2}", ordinals=(0, 1))
    assert window(devs, clock, 2.0)["energy"].value == pytest.approx(400.0, abs=20)


# -- fingerprint ----------------------------------------------------------------------------


def test_fingerprint_has_the_device_facts_nvml_gives() -> None:
    clock = FakeClock()
    fp = open_fake(FakePynvml(clock=clock), clock).fingerprint
    assert fp["gpu_name"] == "NVIDIA H100 80GB HBM3"
    assert fp["gpu_memory_total_bytes"] == 80 * 2**30
    assert fp["gpu_max_sm_clock_mhz"] == 1980
    assert fp["driver_version"] == "550.54.15" and fp["cuda_driver_version"] == "12.4"


# -- no NVML work between timed rounds -----------------------------------------------------


def calls_inside_rounds(nv: FakePynvml, thread: str = "MainThread") -> list[str]:
    """NVML calls made by `thread` between the first round's start and the last round's end."""
    names = [(t, name) for t, name, _ in nv.calls]
    first = next(i for i, (_, n) in enumerate(names) if n == "<round start>")
    last = max(i for i, (_, n) in enumerate(names) if n == "<round end>")
    return [n for t, n in names[first:last] if t == thread and not n.startswith("<")]


def run_rounds(nv: FakePynvml, devs: NvmlSet, timer, rounds: int = 5) -> None:
    import time

    def workload() -> None:
        nv.mark("<round start>")
        time.sleep(0.01)
        nv.mark("<round end>")

    backend = Backend("h100", timer, lambda: devs.make_probes(0.002), lambda: None, None)
    Meter(backend).run_window(workload, MeasureProtocol(rounds=rounds, warmup=0))


def test_no_nvml_call_between_timed_rounds_only_at_open_close_and_in_the_sampler() -> None:
    nv = FakePynvml()
    devs = open_nvml(nv, None, probe_max_s=0.05)
    nv.calls.clear()
    run_rounds(nv, devs, PerfCounterTimer())
    assert calls_inside_rounds(nv) == []
    # The window itself did read NVML: at open/close on the main thread, and in the sampler.
    main = [n for t, n, _ in nv.calls if t == "MainThread" and not n.startswith("<")]
    assert main.count("nvmlDeviceGetTotalEnergyConsumption") == 2
    assert calls_inside_rounds(nv, "efficiency-sampler"), "the sampler thread should have sampled during the rounds"


def test_the_between_rounds_check_catches_a_timer_that_reads_nvml_per_round() -> None:
    # Negative control: the check above must fail for a timer that reads NVML each round.
    nv = FakePynvml()
    devs = open_nvml(nv, None, probe_max_s=0.05)

    class ChattyTimerDouble(PerfCounterTimer):
        def run(self, fn, min_rounds, min_time_s, max_rounds):
            def chatty() -> None:
                fn()
                nv.nvmlDeviceGetTotalEnergyConsumption(devs.devices[0].parent)

            return super().run(chatty, min_rounds, min_time_s, max_rounds)

    nv.calls.clear()
    run_rounds(nv, devs, ChattyTimerDouble(), rounds=3)
    assert calls_inside_rounds(nv) == ["nvmlDeviceGetTotalEnergyConsumption"] * 2


# -- several counters, shutdown ------------------------------------------------


def test_each_counter_is_probed_on_its_own_so_two_out_of_phase_gpus_keep_their_period() -> None:
    clock = FakeClock(start=1000.0)
    gpus = [FakeGpu(GPU_A, power_w=100.0, period_s=0.1), FakeGpu(GPU_B, power_w=300.0, period_s=0.1)]
    nv = FakePynvml(gpus, clock=clock)
    # GPU B's counter ticks half a period after GPU A's.
    read = [lambda: nv.nvmlDeviceGetTotalEnergyConsumption(FakeHandle(0)), lambda: _shifted(nv, clock, 1, 0.05)]
    steps = probe_counters(lambda: [r() for r in read], clock, clock.sleep)
    assert [s.period_s for s in steps] == [pytest.approx(0.1, rel=0.02)] * 2
    assert [s.idle_power_w for s in steps] == [pytest.approx(100.0, rel=0.02), pytest.approx(300.0, rel=0.02)]
    combined = combine_steps(steps)
    assert combined.period_s == pytest.approx(0.1, rel=0.02) and combined.idle_power_w == pytest.approx(400, rel=0.02)
    # Negative control: the sum of the two, probed as one counter, shows half the period.
    (summed,) = probe_counters(lambda: [sum(r() for r in read)], clock, clock.sleep)
    assert summed.period_s == pytest.approx(0.05, rel=0.02)


def _shifted(nv: FakePynvml, clock: FakeClock, gpu: int, shift_s: float) -> int:
    saved = clock.now
    clock.now = saved + shift_s
    try:
        return nv.nvmlDeviceGetTotalEnergyConsumption(FakeHandle(gpu))
    finally:
        clock.now = saved


def test_two_gpus_opened_together_probe_the_period_of_each() -> None:
    clock = FakeClock()
    nv = FakePynvml(
        [FakeGpu(GPU_A, power_w=100.0, period_s=0.1), FakeGpu(GPU_B, power_w=300.0, period_s=0.05)], clock=clock
    )
    devs = open_fake(nv, clock, "0,1", ordinals=(0, 1))
    assert devs.step.period_s == pytest.approx(0.1, rel=0.02)  # the slower counter's
    assert devs.step.idle_power_w == pytest.approx(400.0, rel=0.02)
    assert [d.ordinal for d in devs.devices] == [0, 1]
    assert devs.fingerprint["gpus_measured"] == 2
    assert open_fake(nv, clock, "0,1", ordinals=(1,)).fingerprint["gpus_measured"] == 1
    readings = window(devs, clock, 2.0)
    assert readings["energy:cuda:0"].value == pytest.approx(200.0, abs=10)
    assert readings["energy:cuda:1"].value == pytest.approx(600.0, abs=15)
    assert readings["idle_power"].value == pytest.approx(400.0, rel=0.02)


def test_average_memory_is_also_a_share_of_the_memory_the_measured_gpus_have() -> None:
    # Ground truth from the double: 1 GiB used of 80 GiB on GPU 0; 6 GiB of 80 GiB on GPU 1.
    clock = FakeClock()
    nv = two_gpus(clock)
    nv.gpus[1].memory_used = 6 * 2**30
    one = window(open_fake(nv, clock), clock, 1.0)
    assert one["AMU"].value == pytest.approx(2**30) and one["AMU_fraction"].value == pytest.approx(1 / 80)
    both = window(open_fake(nv, clock, "0,1", ordinals=(0, 1)), clock, 1.0)
    assert both["AMU"].value == pytest.approx(7 * 2**30)
    assert both["AMU_fraction"].value == pytest.approx(7 / 160) and both["AMU_fraction"].unit == "fraction"


def test_the_probe_stops_as_soon_as_each_counter_changed_the_times_wanted() -> None:
    # Start-up cost: a counter that moves at every poll needs `changes_wanted` polls and no more;
    # two updates are enough to tell a period.
    clock = FakeClock()
    reads: list[int] = []

    def counter() -> int:
        reads.append(10 * len(reads))  # +10 mJ at each read
        return reads[-1]

    (step,) = probe_counters(lambda: [counter()], clock, clock.sleep, changes_wanted=2, poll_s=0.01)
    assert len(reads) == 3  # the first reading, then one per change
    assert step.changes == 2 and step.period_s == pytest.approx(0.01) and step.step_mj == 10.0
    assert step.idle_power_w == pytest.approx(1.0)  # 10 mJ per 10 ms


def test_a_gpu_whose_counter_did_not_move_in_the_window_reads_zero_beside_the_others() -> None:
    # A second GPU whose counter updates once a second, in a 300 ms window between two of its
    # updates: it did not go backwards, it read 0 J; the window's energy is the other GPU's.
    clock = FakeClock()
    nv = FakePynvml(
        [FakeGpu(GPU_A, power_w=100.0, period_s=0.1), FakeGpu(GPU_B, power_w=300.0, period_s=1.0)], clock=clock
    )
    devs = open_fake(nv, clock, "0,1", ordinals=(0, 1))
    clock.now = 2000.05
    readings = window(devs, clock, 0.3)
    assert readings["energy:cuda:1"].value == 0.0 and readings["energy:cuda:1"].source == "measured"
    assert readings["energy:cuda:0"].value == pytest.approx(30.0)
    assert readings["energy"].value == pytest.approx(30.0)


def test_the_energy_method_names_a_sum_only_over_several_gpus() -> None:
    clock = FakeClock()
    nv = two_gpus(clock)
    one = window(open_fake(nv, clock, "0,1", ordinals=(1,)), clock, 2.0)
    both = window(open_fake(nv, clock, "0,1", ordinals=(0, 1)), clock, 2.0)
    assert "sum over" not in one["energy"].method and not any(name.startswith("energy:") for name in one)
    assert "sum over 2 GPUs (cuda:0, cuda:1)" in both["energy"].method


def test_nvml_is_shut_down_once_at_close() -> None:
    clock = FakeClock()
    nv = FakePynvml(clock=clock)
    devs = open_fake(nv, clock)
    assert nv.initialised == 1
    devs.close()
    devs.close()  # a second close does not shut down what another user of NVML initialised
    assert nv.initialised == 0 and nv.count("nvmlShutdown") == 1


def test_a_null_set_after_a_successful_init_shuts_nvml_down_at_once() -> None:
    clock = FakeClock()
    nv = two_gpus(clock)
    devs = open_fake(nv, clock, "GPU-ffff")
    assert devs.problem is not None and nv.initialised == 0
    devs.close()
    assert nv.count("nvmlShutdown") == 1


def test_temperatures_of_the_measured_gpus() -> None:
    clock = FakeClock()
    nv = two_gpus(clock)
    nv.gpus[1].temperature_c = 61
    assert open_fake(nv, clock, "0,1", ordinals=(0, 1)).temperatures() == {"cuda:0": 34, "cuda:1": 61}
    assert NvmlSet.empty("no NVML").temperatures() == {"*": "no NVML"}

"""Energy windows long enough for a counter with an update period, net-of-idle energy, the
cooldown, and faults of the counter inside an extended window: the meter against the
pynvml and torch.cuda test doubles (nothing here is measured on a GPU)."""

from __future__ import annotations

import time

import pytest

from pytest_efficientllm.core.metrics import measured
from pytest_efficientllm.measuring.backends import Backend, cpu_backend, cuda_backend
from pytest_efficientllm.measuring.meter import (
    EnergyWindow,
    MeasureProtocol,
    Meter,
    WindowResult,
    Work,
    derive_metrics,
    merge_energy_windows,
)
from pytest_efficientllm.telemetry.nvml import NvmlSet, open_nvml
from pytest_efficientllm.telemetry.procfs import PerfCounterTimer
from tests.helpers.nvml_double import FakeClock, FakeGpu, FakePynvml
from tests.helpers.torch_cuda_double import UUID, FakeTorchCuda

GPU_A = "GPU-" + UUID
GPU_B = "GPU-bbbb2222-0000-0000-0000-000000000000"
PERIOD_S = 0.02  # the double's counter period: short, so extended windows stay short in real time


def nvml_backend(nv: FakePynvml, ordinals: tuple[int, ...] = (0,), probe_s: float = 0.3) -> tuple[Backend, NvmlSet]:
    """A GPU-like backend: host-clock round timer, the double's NVML probes on the real clock.

    The meter is given the double's own period (the start-up probe's is tested in test_nvml)."""
    devs = open_nvml(nv, None, ordinals, probe_max_s=probe_s)
    backend = Backend(
        "h100",
        PerfCounterTimer(),
        lambda: devs.make_probes(0.005),
        lambda: None,
        None,
        energy_period_s=PERIOD_S,
        temperature_c=devs.temperatures,
        close=devs.close,
    )
    return backend, devs


def one_gpu(power_w: float = 200.0) -> FakePynvml:
    return FakePynvml([FakeGpu(GPU_A, power_w=power_w, period_s=PERIOD_S)])


def sleep_round() -> None:
    time.sleep(0.004)


# -- extension ------------------------------------------------------------------------------


def test_a_short_window_is_extended_until_it_spans_the_counter_updates_wanted() -> None:
    backend, _ = nvml_backend(one_gpu())
    meter = Meter(backend, EnergyWindow(resolution=0.1))  # 10 updates of 20 ms: >= 0.2 s
    result = meter.run_window(sleep_round, MeasureProtocol(rounds=3, warmup=0))
    window = result.energy_window
    assert len(result.latencies_s) > 3 and window["rounds"] == len(result.latencies_s)
    assert window["rounds_asked"] == 3 and window["updates_wanted"] == 10
    assert result.wall_s >= 10 * PERIOD_S and window["updates_spanned"] >= 10
    assert window["why"].startswith("extended from 3 to") and "quantisation <= 10%" in window["why"]
    energy = result.readings["energy"]
    assert energy.note == "" and energy.value == pytest.approx(200.0 * result.wall_s, abs=200.0 * PERIOD_S * 1.5)
    # Every round of the longer window is timed and used.
    metrics = derive_metrics(result, Work(tokens=4), meter.flops_of(sleep_round, Work(flops=1)), backend)
    assert metrics["rounds"].value == len(result.latencies_s) == len(metrics["AL"].samples)


def test_without_extension_the_same_window_is_short_and_flagged() -> None:
    # Negative control for the test above: the same workload, extension off.
    backend, _ = nvml_backend(one_gpu())
    result = Meter(backend, EnergyWindow(resolution=None)).run_window(sleep_round, MeasureProtocol(rounds=3, warmup=0))
    assert len(result.latencies_s) == 3
    assert result.energy_window["why"].startswith("not extended: energy window extension switched off")
    energy = result.readings["energy"]
    assert energy.value is None or "short window" in energy.note


def test_rounds_already_long_enough_are_not_extended() -> None:
    backend, _ = nvml_backend(one_gpu())
    result = Meter(backend, EnergyWindow(resolution=0.5)).run_window(  # 2 updates: 40 ms
        lambda: time.sleep(0.03), MeasureProtocol(rounds=3, warmup=0)
    )
    assert len(result.latencies_s) == 3 and result.energy_window["why"].startswith("the asked rounds already span")


def test_the_extension_stops_at_the_time_cap_and_says_so() -> None:
    backend, _ = nvml_backend(one_gpu())
    meter = Meter(backend, EnergyWindow(resolution=0.02, max_time_s=0.1))  # 50 x 20 ms = 1 s wanted
    result = meter.run_window(sleep_round, MeasureProtocol(rounds=1, warmup=0))
    window = result.energy_window
    assert window["target_s"] == 0.1 and window["capped_s"] == 0.1
    assert 0.1 <= result.wall_s < 0.5
    assert "capped at 0.1 s" in window["why"] and "fewer than the 50 wanted" in window["why"]
    assert 0.02 < window["quantisation_bound"] <= 0.25


def test_the_extension_stops_at_max_rounds_and_says_so() -> None:
    backend, _ = nvml_backend(one_gpu())
    result = Meter(backend, EnergyWindow(resolution=0.02)).run_window(
        sleep_round, MeasureProtocol(rounds=2, warmup=0, max_rounds=4)
    )
    assert len(result.latencies_s) == 4 and "stopped at max_rounds=4" in result.energy_window["why"]


def test_a_meter_with_fixed_rounds_is_never_extended() -> None:
    backend, _ = nvml_backend(one_gpu())
    meter = Meter(backend)
    meter.fixed_rounds = "the ranks of a distributed test run exactly `rounds` rounds"
    result = meter.run_window(sleep_round, MeasureProtocol(rounds=2, warmup=0))
    assert len(result.latencies_s) == 2 and "ranks" in result.energy_window["why"]


def test_a_window_block_is_never_extended_and_says_why() -> None:
    backend, _ = nvml_backend(one_gpu())
    with Meter(backend).block_window() as box:
        sleep_round()
    assert box["result"].energy_window["why"] == "not extended: a window() block is timed once"


def test_on_the_cpu_without_a_counter_period_nothing_changes() -> None:
    backend = cpu_backend(threads=1)
    assert backend.energy_period_s is None
    result = Meter(backend).run_window(sleep_round, MeasureProtocol(rounds=3, warmup=0))
    assert len(result.latencies_s) == 3 and result.energy_window == {}
    metrics = derive_metrics(result, Work(tokens=4), Meter(backend).flops_of(sleep_round, Work(flops=1)), backend)
    assert "energy_per_token_net" not in metrics  # no idle power on the CPU: records unchanged


def test_the_gpu_backend_gives_the_meter_the_probed_counter_period() -> None:
    nv = FakePynvml([FakeGpu(GPU_A, period_s=0.005)])
    backend = cuda_backend("h100", 1, 0.002, cuda=FakeTorchCuda(), nvml_loader=lambda: nv, environ={}, nvml_probe_s=0.2)
    assert backend.energy_period_s == pytest.approx(0.005, rel=0.5)
    broken = FakePynvml([FakeGpu(GPU_A)])
    broken.fail("nvmlDeviceGetTotalEnergyConsumption", broken.NVML_ERROR_NOT_SUPPORTED)
    no_energy = cuda_backend(
        "h100", 1, 0.002, cuda=FakeTorchCuda(), nvml_loader=lambda: broken, environ={}, nvml_probe_s=0.05
    )
    assert no_energy.energy_period_s is None  # nothing to extend for


@pytest.mark.parametrize(
    "window, message",
    [
        (lambda: EnergyWindow(resolution=2.0), "between 0 and 1"),
        (lambda: EnergyWindow(resolution=0.0), "between 0 and 1"),
        (lambda: EnergyWindow(max_time_s=-1.0), ">= 0 seconds"),
        (lambda: EnergyWindow(cooldown_s=-1.0), ">= 0 seconds"),
    ],
)
def test_bad_energy_window_settings_are_refused_naming_the_fix(window, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        window()


def test_two_windows_of_one_test_merge_into_the_bound_of_their_summed_energy() -> None:
    # Two real windows on the double (a generation's prefill and decode): each off by up to its own
    # bound, so their sum by up to the energy-weighted mean of the two, never one window's alone.
    backend, _ = nvml_backend(one_gpu())
    meter = Meter(backend, EnergyWindow(resolution=0.25))  # >= 4 updates each
    first = meter.run_window(sleep_round, MeasureProtocol(rounds=2, warmup=0))
    second = Meter(backend, EnergyWindow(resolution=0.1)).run_window(sleep_round, MeasureProtocol(rounds=2, warmup=0))
    merged = first.merge(second).energy_window
    (e1, q1), (e2, q2) = [(r.readings["energy"].value, r.energy_window["quantisation_bound"]) for r in (first, second)]
    assert q1 > q2 and merged["windows"] == 2
    assert merged["quantisation_bound"] == pytest.approx((e1 * q1 + e2 * q2) / (e1 + e2), abs=1e-4)
    assert merged["updates_spanned"] == pytest.approx(
        first.energy_window["updates_spanned"] + second.energy_window["updates_spanned"], abs=0.11
    )


def _step_window(nv: FakePynvml, devs: NvmlSet, clock: FakeClock, seconds: float, reset: bool = False) -> WindowResult:
    """One `window()` block on the double: its NVML readings over `seconds` of fake time;
    `reset`: GPU 0's counter goes backwards inside it (a driver reload)."""
    probes = devs.make_probes(0.005)
    for p in probes:
        p.open()
    clock.sleep(seconds)
    if reset:
        nv.gpus[0].energy_offset_mj -= 10**9
    for p in reversed(probes):
        p.close()
    return WindowResult([seconds], seconds, {m.name: m for p in probes for m in p.readings(seconds)})


def test_merged_windows_sum_each_gpus_energy_and_a_window_the_counter_missed_adds_nothing() -> None:
    # Three 30 ms steps of a training test on two GPUs of 100 W and 300 W whose counters tick every
    # 100 ms (both at 1000.1 s), from 1000.05 s: only the second step spans the tick.
    clock = FakeClock()
    gpus = [FakeGpu(GPU_A, power_w=100.0, period_s=0.1), FakeGpu(GPU_B, power_w=300.0, period_s=0.1)]
    nv = FakePynvml(gpus, clock=clock)
    devs = open_nvml(nv, "0,1", (0, 1), clock=clock, sleep=clock.sleep)
    clock.now = 1000.05
    steps = [_step_window(nv, devs, clock, 0.03) for _ in range(3)]
    assert steps[0].readings["energy"].value is None and steps[1].readings["energy"].value == pytest.approx(40.0)
    merged = steps[0].merge(steps[1]).merge(steps[2]).readings
    # The counters' whole advance over the three steps: one update of each GPU, 10 J + 30 J.
    assert merged["energy"].value == pytest.approx(40.0)
    assert merged["energy:cuda:0"].value == pytest.approx(10.0) and merged["energy:cuda:1"].value == pytest.approx(30.0)


def test_merged_windows_add_extensive_figures_take_the_larger_peak_and_weigh_averages_by_time() -> None:
    def window(wall_s: float, cpu_s: float, peak: float, amu: float) -> WindowResult:
        readings = [
            measured("cpu_time", cpu_s, "process_time_ns"),
            measured("peak_memory", peak, "VmHWM"),
            measured("AMU", amu, "RSS sampled, time average"),
        ]
        return WindowResult([wall_s], wall_s, {m.name: m for m in readings})

    merged = window(1.0, 0.5, 300.0, 10.0).merge(window(3.0, 1.5, 100.0, 40.0)).readings
    assert merged["cpu_time"].value == 2.0 and merged["peak_memory"].value == 300.0
    assert merged["AMU"].value == pytest.approx((10.0 * 1 + 40.0 * 3) / 4)


def test_a_step_whose_counter_went_backwards_leaves_the_merged_energy_unknown() -> None:
    # A sum missing one step would read as a saving: unknown, with that step's reason, as vLLM drops such windows.
    clock = FakeClock()
    nv = FakePynvml([FakeGpu(GPU_A, power_w=100.0, period_s=0.1), FakeGpu(GPU_B, power_w=300.0)], clock=clock)
    devs = open_nvml(nv, "0,1", (0, 1), clock=clock, sleep=clock.sleep)
    first, reset, last = (_step_window(nv, devs, clock, 1.0, reset=(i == 1)) for i in range(3))
    for merged in (first.merge(reset).merge(last), reset.merge(first).merge(last), first.merge(last).merge(reset)):
        energy = merged.readings["energy"]
        assert energy.value is None and "went backwards" in energy.note
        assert merged.readings["energy:cuda:0"].value is None
        assert merged.readings["energy:cuda:1"].value == pytest.approx(900.0, abs=30)  # the other GPU's is whole


def test_a_merged_window_without_a_bound_on_either_side_has_none() -> None:
    assert (
        merge_energy_windows({"quantisation_bound": 0.1}, 5.0, {"quantisation_bound": None}, 5.0)["quantisation_bound"]
        is None
    )
    assert merge_energy_windows({}, None, {"cooldown_s": 1.0}, None) == {"cooldown_s": 1.0}
    assert "quantisation_bound" not in merge_energy_windows({"cooldown_s": 1.0}, 2.0, {"cooldown_s": 1.0}, 2.0)
    # Energies unknown: the larger bound, which the weighted mean can never exceed.
    assert (
        merge_energy_windows({"quantisation_bound": 0.1}, None, {"quantisation_bound": 0.05}, 3.0)["quantisation_bound"]
        == 0.1
    )


# -- net of idle -----------------------------------------------------------------------------


def test_net_energy_per_token_takes_the_idle_power_over_the_window_off() -> None:
    backend, devs = nvml_backend(one_gpu(power_w=200.0))
    meter = Meter(backend, EnergyWindow(resolution=0.1))
    result = meter.run_window(sleep_round, MeasureProtocol(rounds=3, warmup=0))
    # The double draws 200 W whatever runs; say the start-up probe saw 150 W at idle.
    result.readings["idle_power"] = result.readings["idle_power"].__class__(
        "idle_power", 150.0, "W", "info", "measured", "NVML energy counter at session start-up"
    )
    n = len(result.latencies_s)
    metrics = derive_metrics(result, Work(tokens=8), meter.flops_of(sleep_round, Work(flops=1)), backend)
    energy = metrics["energy"].value
    assert metrics["energy_per_token"].value == pytest.approx(energy / (8 * n))
    net = metrics["energy_per_token_net"]
    assert net.value == pytest.approx((energy - 150.0 * result.wall_s) / (8 * n))
    assert 0 < net.value < metrics["energy_per_token"].value and net.unit == "J/tok"
    assert "idle_power x window wall time" in net.method and net.source == "measured"


def test_net_energy_is_unavailable_with_the_reason_when_idle_power_is_unknown() -> None:
    backend, devs = nvml_backend(one_gpu(), probe_s=0.01)
    assert devs.step.idle_power_w is None  # a 10 ms start-up probe saw too few updates
    meter = Meter(backend, EnergyWindow(resolution=0.1))
    result = meter.run_window(sleep_round, MeasureProtocol(rounds=3, warmup=0))
    metrics = derive_metrics(result, Work(tokens=8), meter.flops_of(sleep_round, Work(flops=1)), backend)
    assert metrics["energy_per_token"].value is not None
    net = metrics["energy_per_token_net"]
    assert net.value is None and net.note.startswith("idle power unknown: the energy counter changed")


# -- cooldown --------------------------------------------------------------------------------


def test_cooldown_sleeps_before_the_window_and_records_the_temperature_at_its_start() -> None:
    nv = one_gpu()
    nv.gpus[0].temperature_c = 47
    backend, _ = nvml_backend(nv)
    starts: list[float] = []

    def workload() -> None:
        starts.append(time.perf_counter())
        nv.mark("<round start>")
        sleep_round()

    called = time.perf_counter()
    result = Meter(backend, EnergyWindow(resolution=None, cooldown_s=0.2)).run_window(
        workload, MeasureProtocol(rounds=2, warmup=0)
    )
    assert starts[0] - called >= 0.2  # the sleep came before the first timed round
    assert sum(result.latencies_s) < 0.2  # and is in none of them
    assert result.energy_window["cooldown_s"] == 0.2 and result.energy_window["temperature_c"] == {"cuda:0": 47}
    log = [name for _, name, _ in nv.calls]
    assert log.index("nvmlDeviceGetTemperature") < log.index("<round start>")


def test_without_cooldown_no_temperature_is_read() -> None:
    nv = one_gpu()
    backend, _ = nvml_backend(nv)
    result = Meter(backend).run_window(sleep_round, MeasureProtocol(rounds=1, warmup=0))
    assert nv.count("nvmlDeviceGetTemperature") == 0 and "temperature_c" not in result.energy_window


def test_a_temperature_nvml_cannot_give_is_recorded_as_the_reason() -> None:
    nv = one_gpu()
    nv.fail("nvmlDeviceGetTemperature", nv.NVML_ERROR_NOT_SUPPORTED)
    backend, _ = nvml_backend(nv)
    result = Meter(backend, EnergyWindow(resolution=None, cooldown_s=0.01)).run_window(
        sleep_round, MeasureProtocol(rounds=1, warmup=0)
    )
    assert "NOT_SUPPORTED" in result.energy_window["temperature_c"]["cuda:0"]


def test_cooldown_on_the_cpu_says_there_is_no_gpu_temperature() -> None:
    result = Meter(cpu_backend(threads=1), EnergyWindow(cooldown_s=0.01)).run_window(
        sleep_round, MeasureProtocol(rounds=1, warmup=0)
    )
    assert result.energy_window == {"cooldown_s": 0.01, "temperature_c": {"*": "no GPU temperature on this backend"}}


# -- several GPUs, and a counter that resets inside an extended window --------------------------


def two_gpus() -> FakePynvml:
    return FakePynvml(
        [FakeGpu(GPU_A, power_w=100.0, period_s=PERIOD_S), FakeGpu(GPU_B, power_w=300.0, period_s=PERIOD_S)]
    )


def test_two_gpus_are_summed_with_each_ones_energy_kept() -> None:
    backend, _ = nvml_backend(two_gpus(), ordinals=(0, 1))
    result = Meter(backend, EnergyWindow(resolution=0.1)).run_window(sleep_round, MeasureProtocol(rounds=2, warmup=0))
    r = result.readings
    first, second = r["energy:cuda:0"].value, r["energy:cuda:1"].value
    assert first == pytest.approx(100.0 * result.wall_s, abs=100.0 * PERIOD_S * 1.5)
    assert second == pytest.approx(300.0 * result.wall_s, abs=300.0 * PERIOD_S * 1.5)
    assert r["energy"].value == pytest.approx(first + second)
    assert "sum over 2 GPUs (cuda:0, cuda:1)" in r["energy"].method
    assert r["energy:cuda:1"].direction == "info" and r["energy:cuda:1"].unit == "J"


def test_one_gpu_has_no_per_device_energy() -> None:
    backend, _ = nvml_backend(one_gpu())
    result = Meter(backend, EnergyWindow(resolution=0.1)).run_window(sleep_round, MeasureProtocol(rounds=1, warmup=0))
    assert not [name for name in result.readings if name.startswith("energy:")]


def test_a_counter_reset_inside_an_extended_window_drops_it_naming_the_device() -> None:
    nv = two_gpus()
    backend, _ = nvml_backend(nv, ordinals=(0, 1))
    rounds = 0

    def workload() -> None:
        nonlocal rounds
        rounds += 1
        if rounds == 5:  # a round the extension added (3 were asked): GPU 1's driver reloads
            nv.gpus[1].energy_offset_mj = -int(300.0 * 1e3 * time.perf_counter())  # the counter restarts at ~0
        sleep_round()

    result = Meter(backend, EnergyWindow(resolution=0.1)).run_window(workload, MeasureProtocol(rounds=3, warmup=0))
    assert len(result.latencies_s) > 5
    r = result.readings
    assert r["energy"].value is None
    assert GPU_B in r["energy"].note and "went backwards" in r["energy"].note and "window dropped" in r["energy"].note
    assert r["energy:cuda:0"].value is not None  # the other GPU's own reading stands
    assert r["energy:cuda:1"].value is None and "went backwards" in r["energy:cuda:1"].note
    metrics = derive_metrics(result, Work(tokens=2), Meter(backend).flops_of(workload, Work(flops=1)), backend)
    assert metrics["energy_per_token"].value is None and metrics["energy_per_token_net"].value is None


def test_an_extended_window_with_cooldown_makes_no_nvml_call_between_its_rounds() -> None:
    nv = one_gpu()
    backend, _ = nvml_backend(nv)
    nv.calls.clear()

    def workload() -> None:
        nv.mark("<round start>")
        sleep_round()
        nv.mark("<round end>")

    result = Meter(backend, EnergyWindow(resolution=0.1, cooldown_s=0.01)).run_window(
        workload, MeasureProtocol(rounds=2, warmup=0)
    )
    assert len(result.latencies_s) > 2
    names = [(t, n) for t, n, _ in nv.calls]
    first = next(i for i, (_, n) in enumerate(names) if n == "<round start>")
    last = max(i for i, (_, n) in enumerate(names) if n == "<round end>")
    inside = [n for t, n in names[first:last] if t == "MainThread" and not n.startswith("<")]
    assert inside == []
    main = [n for t, n, _ in nv.calls if t == "MainThread" and not n.startswith("<")]
    assert main.count("nvmlDeviceGetTotalEnergyConsumption") == 2 and main.count("nvmlDeviceGetTemperature") == 1

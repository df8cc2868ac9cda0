"""The GPU backend's wiring (`cuda_backend`): timer, probes and fingerprint from torch.cuda and
NVML, checked end to end through the meter against test doubles of both, and its fallbacks."""

from __future__ import annotations

import time
from typing import Any

import pytest

from pytest_efficientllm.measuring.backends import cuda_backend
from pytest_efficientllm.measuring.meter import (
    MeasureProtocol,
    Meter,
    Work,
    derive_metrics,
)
from tests.helpers.nvml_double import FakeGpu, FakePynvml
from tests.helpers.torch_cuda_double import UUID, FakeTorchCuda


def fake_backend(cuda: FakeTorchCuda, nv: Any, environ: dict[str, str] | None = None):
    return cuda_backend("h100", 1, 0.002, cuda=cuda, nvml_loader=lambda: nv, environ=environ or {}, nvml_probe_s=0.1)


def test_gpu_backend_end_to_end_with_doubles() -> None:
    cuda = FakeTorchCuda()
    nv = FakePynvml([FakeGpu("GPU-" + UUID, power_w=300.0, period_s=0.005, busy_percent=80)])
    backend = fake_backend(cuda, nv)
    assert backend.profile == "h100" and backend.notices == []
    fp = backend.device_fingerprint
    assert fp["gpu_name"] == "NVIDIA H100 80GB HBM3" and fp["gpu_sm_count"] == 132
    assert fp["gpu_power_limit_w"] == 700.0 and fp["gpu_max_sm_clock_mhz"] == 1980 and fp["driver_version"]
    assert fp["nvml_energy_period_s"] > 0  # exact period detection: test_nvml, on a fake clock
    assert set(backend.sources) >= {"timer", "memory", "energy", "compute"}

    meter = Meter(backend)

    def work() -> None:
        cuda.allocate(2**20)
        time.sleep(0.03)
        cuda.free(2**20)

    t_before = time.perf_counter()
    result = meter.run_window(work, MeasureProtocol(rounds=3, warmup=0))
    t_after = time.perf_counter()
    metrics = derive_metrics(result, Work(tokens=10, flops=10**12), meter.flops_of(work, Work(flops=10**12)), backend)
    assert metrics["peak_memory_delta"].value == 2**20
    assert metrics["PCU"].value == pytest.approx(0.8) and metrics["PCU"].method.startswith(
        "NVML utilization.gpu (kernel-busy share)"
    )
    # The counter reads bracket the window's wall time and lie inside run_window; the fake
    # counter at 300 W is off by at most one 5 ms update (1.5 J) either way to quantisation.
    energy = metrics["energy"]
    assert energy.source == "measured"
    assert 300 * result.wall_s - 1.5 <= energy.value <= 300 * (t_after - t_before) + 1.5
    assert metrics["AEC_net"].value is not None
    assert metrics["MFU"].source == "estimated" and "datasheet" in metrics["MFU"].method
    assert metrics["host_peak_memory"].value > 0 and "cpu_time" in metrics
    assert cuda.log.count("reset_peak_memory_stats") == 1


def test_the_sources_and_the_energy_period_say_which_of_nvml_s_counters_the_backend_has() -> None:
    full = fake_backend(FakeTorchCuda(), FakePynvml([FakeGpu("GPU-" + UUID, period_s=0.005)]))
    assert full.sources["energy"] == "NVML total energy counter (mJ)"
    assert full.sources["memory"] == "torch.cuda allocator peaks + NVML memory v2 sampled"
    assert full.energy_period_s == full.device_fingerprint["nvml_energy_period_s"] > 0
    # A GPU without the energy counter: its memory is still sampled, but no window is lengthened
    # for a counter that is not there.
    no_counter = FakePynvml([FakeGpu("GPU-" + UUID)])
    no_counter.fail("nvmlDeviceGetTotalEnergyConsumption", no_counter.NVML_ERROR_NOT_SUPPORTED)
    backend = fake_backend(FakeTorchCuda(), no_counter)
    assert backend.sources["energy"] == (
        "unavailable: nvmlDeviceGetTotalEnergyConsumption: NVML_ERROR_NOT_SUPPORTED on this device/driver"
    )
    assert backend.sources["memory"] == "torch.cuda allocator peaks + NVML memory v2 sampled"
    assert backend.energy_period_s is None
    # No NVML at all: the allocator alone, and energy unavailable with NVML's problem.
    none = fake_backend(FakeTorchCuda(), None)
    assert none.sources["memory"] == "torch.cuda allocator peaks" and none.energy_period_s is None
    assert none.sources["energy"].startswith("unavailable: ") and "nvidia-ml-py" in none.sources["energy"]


def test_torch_and_nvml_disagreeing_on_the_device_disables_nvml_with_the_fix_named() -> None:
    cuda = FakeTorchCuda(uuid="bbbb2222-0000-0000-0000-000000000000")
    backend = fake_backend(
        cuda, FakePynvml([FakeGpu("GPU-" + UUID), FakeGpu("GPU-bbbb2222-0000-0000-0000-000000000000")])
    )
    assert len(backend.notices) == 1 and "CUDA_DEVICE_ORDER=PCI_BUS_ID" in backend.notices[0]
    result = Meter(backend).run_window(lambda: time.sleep(0.001), MeasureProtocol(rounds=1, warmup=0))
    energy = result.readings["energy"]
    assert energy.value is None and "CUDA_DEVICE_ORDER" in energy.note


def test_without_nvml_gpu_energy_is_unavailable_not_a_cpu_estimate() -> None:
    cuda = FakeTorchCuda()
    backend = fake_backend(cuda, None)
    assert any("nvidia-ml-py" in n for n in backend.notices)
    meter = Meter(backend)
    result = meter.run_window(lambda: time.sleep(0.001), MeasureProtocol(rounds=2, warmup=0))
    metrics = derive_metrics(result, Work(), meter.flops_of(lambda: None, Work(count_flops=False)), backend)
    assert metrics["energy"].value is None and metrics["AEC"].value is None
    assert metrics["peak_memory"].value is not None  # the allocator still reports


def test_without_cuda_the_backend_degrades_to_cpu_with_a_notice() -> None:
    backend = fake_backend(FakeTorchCuda(available=False), FakePynvml())
    assert backend.profile == "cpu" and "torch.cuda.is_available() is false" in backend.notices[0]


def test_real_module_imports_and_degrades_on_this_machine() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present; the degraded path is covered by the doubles above")
    backend = cuda_backend("h100", 1)
    assert backend.profile == "cpu" and "CUDA" in backend.notices[0]


def test_the_gpu_state_is_in_the_fingerprint_and_each_window_says_whether_it_throttled() -> None:
    cuda = FakeTorchCuda()
    gpu = FakeGpu("GPU-" + UUID, period_s=0.005, app_sm_clock_mhz=1410, temperature_c=52)
    nv = FakePynvml([gpu])
    backend = fake_backend(cuda, nv)
    fp = backend.device_fingerprint
    assert fp["gpu_clocks"] == "application clocks set: SM 1410 MHz (default 1980)"
    assert fp["gpu_power_limit_default_w"] == 700.0 and fp["gpu_ecc_mode"] == "enabled"
    assert fp["gpu_preflight"]["temperature_c"] == 52
    assert backend.gpu_state is not None and backend.gpu_state.clocks_locked

    def work() -> None:
        gpu.event_reasons = 0x4  # the power cap bites while the work runs, and is still on at close
        gpu.violation_ns[0] = gpu.violation_ns.get(0, 0) + 1_000_000  # and holds the clocks 1 ms a round
        time.sleep(0.002)

    before = nv.count("nvmlDeviceGetCurrentClocksEventReasons"), nv.count("nvmlDeviceGetViolationStatus")
    result = Meter(backend).run_window(work, MeasureProtocol(rounds=3, warmup=0))
    throttled = result.readings["gpu_throttled"]
    assert throttled.value == 1.0 and throttled.note == "throttled: SW power cap"
    held = result.readings["gpu_throttled_share"]
    held_s = 0.001 * len(result.latencies_s)  # the window is extended for the energy counter: more rounds
    assert held.value == pytest.approx(held_s / result.wall_s)
    assert held.note == "held below application clocks by: power"
    # At open and close only: one read of the reasons, five violation counters, at each edge.
    assert nv.count("nvmlDeviceGetCurrentClocksEventReasons") - before[0] == 2
    assert nv.count("nvmlDeviceGetViolationStatus") - before[1] == 2 * 5
    gpu.event_reasons = 0x1 | 0x2  # idle, and the clocks setting: reasons seen, none throttling
    calm = Meter(backend).run_window(lambda: time.sleep(0.001), MeasureProtocol(rounds=1, warmup=0))
    assert calm.readings["gpu_throttled"].value == 0.0
    # One test, two windows (a prefill and its decode): the throttled share, and its reasons kept.
    share = result.wall_s / (result.wall_s + calm.wall_s)
    for both in (result.merge(calm), calm.merge(result)):
        assert both.readings["gpu_throttled"].value == pytest.approx(share)
        assert both.readings["gpu_throttled"].note == "throttled: SW power cap"


def test_a_limiter_nvml_refuses_is_asked_once_per_session_not_once_per_window() -> None:
    gpu = FakeGpu("GPU-" + UUID, period_s=0.005, violation_unsupported={2, 3, 5})
    nv = FakePynvml([gpu])
    backend = fake_backend(FakeTorchCuda(), nv)
    calls = []
    for _ in range(3):
        before = nv.count("nvmlDeviceGetViolationStatus")
        result = Meter(backend).run_window(lambda: time.sleep(0.001), MeasureProtocol(rounds=1, warmup=0))
        calls.append(nv.count("nvmlDeviceGetViolationStatus") - before)
        assert result.readings["gpu_throttled_share"].value == 0.0
    assert calls == [5 + 2, 2 + 2, 2 + 2]  # the three refused limiters: asked in the first window only


def test_without_nvml_the_gpu_state_is_absent_with_the_reason() -> None:
    backend = fake_backend(FakeTorchCuda(), None)
    assert backend.gpu_state is None and "nvidia-ml-py" in backend.gpu_state_problem
    assert not any(k.startswith("gpu_preflight") for k in backend.device_fingerprint)
    no_cuda = fake_backend(FakeTorchCuda(available=False), FakePynvml())
    assert no_cuda.gpu_state is None and "there is no GPU" in no_cuda.gpu_state_problem


GPU_B = "bbbb2222-0000-0000-0000-000000000000"


def two_gpu_doubles(torch_second: str = GPU_B) -> tuple[FakeTorchCuda, FakePynvml]:
    cuda = FakeTorchCuda(more_uuids=(torch_second,))
    nv = FakePynvml(
        [FakeGpu("GPU-" + UUID, power_w=100.0, period_s=0.005), FakeGpu("GPU-" + GPU_B, power_w=300.0, period_s=0.005)]
    )
    return cuda, nv


def test_all_devices_reads_every_visible_gpus_counter_and_keeps_each() -> None:
    cuda, nv = two_gpu_doubles()
    backend = cuda_backend(
        "h100", 1, 0.002, cuda=cuda, nvml_loader=lambda: nv, environ={}, nvml_probe_s=0.1, all_devices=True
    )
    assert backend.notices == [] and backend.device_fingerprint["gpu_uuids"] == ["GPU-" + UUID, "GPU-" + GPU_B]
    result = Meter(backend).run_window(lambda: time.sleep(0.002), MeasureProtocol(rounds=2, warmup=0))
    r = result.readings
    assert r["energy"].value == pytest.approx(r["energy:cuda:0"].value + r["energy:cuda:1"].value)
    assert r["energy:cuda:1"].value == pytest.approx(3 * r["energy:cuda:0"].value, rel=0.2)
    # Without all_devices the current device only, as before.
    cuda, nv = two_gpu_doubles()
    one = cuda_backend("h100", 1, 0.002, cuda=cuda, nvml_loader=lambda: nv, environ={}, nvml_probe_s=0.1)
    assert one.device_fingerprint["gpu_uuids"] == ["GPU-" + UUID]


def test_all_devices_checks_every_device_against_torch_and_names_the_one_that_differs() -> None:
    cuda, nv = two_gpu_doubles(torch_second="cccc3333-0000-0000-0000-000000000000")
    backend = cuda_backend(
        "h100", 1, 0.002, cuda=cuda, nvml_loader=lambda: nv, environ={}, nvml_probe_s=0.05, all_devices=True
    )
    assert len(backend.notices) == 1 and "GPU-" + GPU_B in backend.notices[0] and "cccc3333" in backend.notices[0]
    assert nv.initialised == 0  # the set it gave up was shut down
    assert backend.energy_period_s is None


def test_closing_the_backend_shuts_nvml_down() -> None:
    nv = FakePynvml([FakeGpu("GPU-" + UUID, period_s=0.005)])
    backend = fake_backend(FakeTorchCuda(), nv)
    assert nv.initialised == 1
    backend.close()
    assert nv.initialised == 0 and nv.count("nvmlShutdown") == 1

"""The CUDA event timer, allocator probe and peak-FLOPs table, against a test double of torch.cuda."""

from __future__ import annotations

import time

import pytest

from pytest_efficientllm.telemetry.cuda import (
    CudaAllocatorProbe,
    CudaEventTimer,
    gpu_peak_flops,
)
from tests.helpers.torch_cuda_double import FakeTorchCuda


def test_event_timer_syncs_once_after_the_last_round() -> None:
    cuda = FakeTorchCuda()
    rounds = CudaEventTimer(cuda).run(lambda: (cuda.log.append("work"), time.sleep(0.01)), 4, 0.0, 100)
    assert cuda.log.count("synchronize") == 1 and cuda.log[-1] == "synchronize"
    assert cuda.log[:-1] == ["record", "work", "record"] * 4
    # Seconds, from each round's own start/end events (elapsed_time gives ms).
    pairs = list(zip(cuda.events[::2], cuda.events[1::2]))
    assert rounds == pytest.approx([end.t - start.t for start, end in pairs], rel=1e-9)
    assert all(r >= 0.01 for r in rounds)


def test_event_timer_runs_until_min_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # The stopping rule reads the host clock (reading events would need a sync between
    # rounds): with a host clock that advances 10 ms per read, 50 ms takes exactly 5 rounds.
    ticks = iter(range(0, 10**12, 10_000_000))
    monkeypatch.setattr(time, "perf_counter_ns", lambda: next(ticks))
    cuda = FakeTorchCuda()
    rounds = CudaEventTimer(cuda).run(lambda: None, 1, 0.05, 1000)
    assert len(rounds) == 5 and cuda.log.count("synchronize") == 1
    assert len(CudaEventTimer(cuda).run(lambda: None, 7, 0.05, 1000)) == 7  # min rounds still rule
    assert len(CudaEventTimer(cuda).run(lambda: None, 1, 0.05, 3)) == 3  # and max rounds cap


def test_event_timer_block_form() -> None:
    cuda = FakeTorchCuda()
    with CudaEventTimer(cuda).time_block() as timing:
        time.sleep(0.01)
    assert 0.01 <= timing["latency_s"] < 0.05
    assert cuda.log == ["record", "record", "synchronize"]


def test_allocator_probe_resets_peaks_per_window() -> None:
    cuda = FakeTorchCuda()
    cuda.allocate(100 * 2**20)  # resident before the window: not the workload's
    cuda.allocate(300 * 2**20)
    cuda.free(300 * 2**20)  # an earlier peak the reset must forget
    probe = CudaAllocatorProbe(cuda, 0)
    probe.open()
    cuda.allocate(64 * 2**20)
    cuda.free(64 * 2**20)
    probe.close()
    m = {x.name: x for x in probe.readings(1.0)}
    assert m["peak_memory"].value == 164 * 2**20
    assert m["peak_memory_delta"].value == 64 * 2**20
    assert m["peak_memory_reserved"].value == 164 * 2**20  # rounded up to whole 2 MiB segments
    assert all(x.unit == "B" and x.source == "measured" for x in m.values())


def test_peak_is_the_datasheet_figure_for_listed_devices_labelled_as_estimate() -> None:
    peak = gpu_peak_flops("NVIDIA H100 80GB HBM3", 132, 1980)
    assert peak.value == 989e12 and peak.source == "estimated" and "datasheet dense bf16 peak" in peak.method
    assert gpu_peak_flops("NVIDIA H100 PCIe", 114, 1755).value == 756e12


def test_peak_of_an_unlisted_device_is_clock_derived() -> None:
    peak = gpu_peak_flops("NVIDIA L4", 58, 2040)
    assert peak.value == 58 * 4096 * 2040e6 and "clock-derived" in peak.method and peak.source == "estimated"
    assert gpu_peak_flops("NVIDIA L4", 58, None) is None

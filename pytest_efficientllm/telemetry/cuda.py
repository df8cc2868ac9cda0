"""CUDA telemetry: event timing, allocator peaks, the GPU's peak, and the torch/NVML device check.

`measuring.backends.cuda_backend` wires these with NVML into the GPU `Backend`.

`cuda` parameters take the `torch.cuda` module (tests pass a test double); nothing here
touches a GPU at import time, so the module imports on CPU-only machines.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from pytest_efficientllm.core.devices import clock_derived_peak, lookup_device
from pytest_efficientllm.core.metrics import estimated, measured
from pytest_efficientllm.core.record import Metric
from pytest_efficientllm.telemetry.base import Probe, RoundTimer
from pytest_efficientllm.telemetry.nvml import NvmlSet

HOPPER_FLOP_PER_CLOCK_PER_SM = 4096  # dense bf16 tensor-core rate (docs/telemetry.md)


def torch_cuda() -> Any:
    import torch

    return torch.cuda


class CudaEventTimer(RoundTimer):
    """CUDA events recorded around each round; one `synchronize()` after the last round.

    Units: seconds per round (from `elapsed_time`, which is ms). The stopping rule for
    `min_time_s` uses the host clock, since reading the events would need a sync between
    rounds; with asynchronous launches the host runs ahead until CUDA's launch queue is
    full, so more rounds than strictly needed may run, never fewer than `min_rounds`.
    """

    method = "CUDA events around each round, one synchronize after the last"

    def __init__(self, cuda: Any = None) -> None:
        self.cuda = cuda if cuda is not None else torch_cuda()

    def run(self, fn: Callable[[], Any], min_rounds: int, min_time_s: float, max_rounds: int) -> list[float]:
        event = self.cuda.Event
        clock = time.perf_counter_ns
        min_time_ns = int(min_time_s * 1e9)
        pairs: list[tuple[Any, Any]] = []
        host_ns = 0
        while len(pairs) < max_rounds and (len(pairs) < min_rounds or host_ns < min_time_ns):
            start, end = event(enable_timing=True), event(enable_timing=True)
            t0 = clock()
            start.record()
            fn()
            end.record()
            host_ns += clock() - t0
            pairs.append((start, end))
        self.cuda.synchronize()
        return [start.elapsed_time(end) * 1e-3 for start, end in pairs]

    @contextlib.contextmanager
    def time_block(self) -> Iterator[dict[str, float]]:
        timing: dict[str, float] = {}
        start, end = self.cuda.Event(enable_timing=True), self.cuda.Event(enable_timing=True)
        start.record()
        yield timing
        end.record()
        self.cuda.synchronize()
        timing["latency_s"] = start.elapsed_time(end) * 1e-3


class CudaAllocatorProbe(Probe):
    """The caching allocator's high-water marks over a window, reset at open. Units: bytes.

    `peak_memory` is `max_memory_allocated` (tensors), `peak_memory_reserved` is
    `max_memory_reserved` (what the allocator holds from the driver), `peak_memory_delta`
    the allocated peak above what was allocated at open. Source `measured`: the allocator's
    own counters, read at the window's edges; they can differ run to run with allocator
    state (fragmentation, cuBLAS workspaces), so they are not exact counts of the workload.
    """

    name = "cuda-allocator"

    def __init__(self, cuda: Any = None, device: int | None = None) -> None:
        self.cuda = cuda if cuda is not None else torch_cuda()
        self.device = device
        self._at_open = 0
        self._peak = 0
        self._reserved = 0

    def open(self) -> None:
        self.cuda.reset_peak_memory_stats(self.device)
        self._at_open = int(self.cuda.memory_allocated(self.device))

    def close(self) -> None:
        self._peak = int(self.cuda.max_memory_allocated(self.device))
        self._reserved = int(self.cuda.max_memory_reserved(self.device))

    def readings(self, wall_s: float) -> list[Metric]:
        how = "torch.cuda caching allocator, peak stats reset at window open"
        return [
            measured("peak_memory", float(self._peak), f"{how}: max_memory_allocated"),
            measured("peak_memory_reserved", float(self._reserved), f"{how}: max_memory_reserved"),
            measured(
                "peak_memory_delta",
                float(max(0, self._peak - self._at_open)),
                f"{how}: max_memory_allocated minus memory_allocated at open",
            ),
        ]


def gpu_peak_flops(name: str, sm_count: int | None, max_sm_clock_mhz: int | None) -> Metric | None:
    """Dense bf16 peak for MFU: the datasheet figure for listed devices, else clock-derived.

    Source `estimated` in both cases: a datasheet figure is the vendor's nominal rate, not
    something measured on this device (its clocks under power capping may be lower), and
    the clock-derived figure assumes Hopper's per-SM tensor rate. Units: FLOP/s.
    """
    listed = lookup_device(name)
    if listed is not None:
        return estimated(
            "peak_flops_per_s",
            listed.bf16_flops_per_s,
            f"estimate: datasheet dense bf16 peak of {listed.model} "
            f"({listed.bf16_flops_per_s / 1e12:.0f} TFLOP/s), not measured",
        )
    if sm_count and max_sm_clock_mhz:
        peak = clock_derived_peak(sm_count, max_sm_clock_mhz * 1e6, HOPPER_FLOP_PER_CLOCK_PER_SM)
        return estimated(
            "peak_flops_per_s",
            peak,
            f"estimate: clock-derived dense bf16 peak = {sm_count} SMs x {HOPPER_FLOP_PER_CLOCK_PER_SM} "
            f"FLOP/clock/SM (Hopper's rate, assumed for unlisted {name!r}) x {max_sm_clock_mhz} MHz max SM clock",
        )
    return None


def _bare_uuid(uuid: str) -> str:
    return uuid.split("-", 1)[1].lower() if uuid.startswith(("GPU-", "MIG-")) else uuid.lower()


def check_same_device(nvml: NvmlSet, torch_uuids: Sequence[str | None]) -> NvmlSet:
    """The NVML devices must be the ones torch computes on (`torch_uuids`, one per measured
    CUDA ordinal, in order; None where torch does not say); otherwise NVML would measure another GPU."""
    if nvml.problem is not None or not nvml.devices:
        return nvml
    for device, torch_uuid in zip(nvml.devices, torch_uuids):
        if not torch_uuid or _bare_uuid(device.uuid) == _bare_uuid(torch_uuid):
            continue
        nvml.close()
        return NvmlSet.empty(
            f"NVML maps this process's CUDA device to {device.uuid} but torch reports {torch_uuid}: "
            "CUDA's device order differs from NVML's; set CUDA_DEVICE_ORDER=PCI_BUS_ID or name devices by UUID "
            "in CUDA_VISIBLE_DEVICES"
        )
    return nvml


def cuda_runtime_version() -> str | None:
    try:
        import torch

        return torch.version.cuda
    except Exception:  # pragma: no cover - torch is a dependency
        return None

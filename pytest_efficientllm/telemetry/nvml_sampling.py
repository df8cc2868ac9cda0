"""What NVML samples while a window is open: device memory in use and the kernel-busy share,
by a thread each (`NvmlSamplerProbe`), and Hopper GPM tensor activity between samples taken at
window open and close (`NvmlTensorActivityProbe`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pytest_efficientllm.core.metrics import measured, unavailable
from pytest_efficientllm.core.record import Metric
from pytest_efficientllm.telemetry.base import Probe, TelemetryError
from pytest_efficientllm.telemetry.nvml_devices import NvmlDevice, nvml_call, unique_parents
from pytest_efficientllm.telemetry.sampler import Sampler

PCU_METHOD = "NVML utilization.gpu (kernel-busy share)"
MEMORY_METHOD = "NVML nvmlDeviceGetMemoryInfo v2 .used (device-wide, all processes; excludes driver-reserved memory)"
TENSOR_METHOD = "NVML GPM ANY_TENSOR_UTIL between samples at window open and close"


class NvmlSamplerProbe(Probe):
    """Device memory in use and kernel-busy share, sampled by threads only while a window is open.

    Reports `AMU` (bytes), `AMU_fraction` and `PCU` (fraction). `memory_unsupported` /
    `busy_unsupported` carry the start-up reason when a query is not available.
    """

    name = "nvml-sampler"

    def __init__(
        self,
        nv: Any,
        devices: Sequence[NvmlDevice],
        interval_s: float,
        capacity_bytes: int | None,
        memory_unsupported: str | None = None,
        busy_unsupported: str | None = None,
    ) -> None:
        self.nv = nv
        self.devices = list(devices)
        self.interval_s = interval_s
        self.capacity_bytes = capacity_bytes
        self.memory_unsupported = memory_unsupported
        self.busy_unsupported = busy_unsupported
        self.memory = Sampler(self._memory_used, interval_s)
        self.busy = Sampler(self._busy_percent, interval_s)

    def _memory_used(self) -> float:
        return float(
            sum(
                nvml_call(self.nv, "nvmlDeviceGetMemoryInfo", d.handle, version=self.nv.nvmlMemory_v2).used
                for d in self.devices
            )
        )

    def _busy_percent(self) -> float:
        values = [nvml_call(self.nv, "nvmlDeviceGetUtilizationRates", d.handle).gpu for d in self.devices]
        return float(sum(values)) / len(values)

    def _samplers(self) -> list[Sampler]:
        return [s for s, off in ((self.memory, self.memory_unsupported), (self.busy, self.busy_unsupported)) if not off]

    def open(self) -> None:
        for s in self._samplers():
            s.start()

    def close(self) -> None:
        for s in self._samplers():
            s.stop()

    def readings(self, wall_s: float) -> list[Metric]:
        for s in self._samplers():
            if s.error is not None:
                raise TelemetryError(f"NVML sampling failed during the window: {s.error}")
        every = f"sampled every {self.interval_s * 1e3:.0f} ms, time average"
        out: list[Metric] = []
        if self.memory_unsupported:
            out.append(unavailable("AMU", "measured", MEMORY_METHOD, self.memory_unsupported))
            out.append(unavailable("AMU_fraction", "measured", MEMORY_METHOD, self.memory_unsupported))
        else:
            avg = self.memory.time_average()
            out.append(measured("AMU", avg, f"{MEMORY_METHOD}; {every}"))
            if avg is not None and self.capacity_bytes:
                out.append(
                    measured("AMU_fraction", avg / self.capacity_bytes, f"{MEMORY_METHOD}; {every} / memory total")
                )
        if self.busy_unsupported:
            out.append(unavailable("PCU", "measured", PCU_METHOD, self.busy_unsupported))
        else:
            avg = self.busy.time_average()
            out.append(
                measured(
                    "PCU",
                    None if avg is None else avg / 100.0,
                    f"{PCU_METHOD}; {every} (NVML's own sample period is 1/6 s to 1 s)",
                )
            )
        return out


class NvmlTensorActivityProbe(Probe):
    """Hopper GPM share of time any tensor core was active, between samples at open and close (`tensor_active`)."""

    name = "nvml-gpm"

    def __init__(self, nv: Any, devices: Sequence[NvmlDevice], unsupported: str | None = None) -> None:
        self.nv = nv
        self.devices = unique_parents(devices)
        self.unsupported = unsupported
        self._samples: list[tuple[Any, Any]] = []
        self._error: TelemetryError | None = None

    def _allocate(self) -> None:
        # Allocated once and reused: samples are opaque driver buffers, not per-window state.
        if not self._samples:
            self._samples = [
                (nvml_call(self.nv, "nvmlGpmSampleAlloc"), nvml_call(self.nv, "nvmlGpmSampleAlloc"))
                for _ in self.devices
            ]

    def _take(self, which: int) -> None:
        if self.unsupported or self._error:
            return
        try:
            self._allocate()
            for d, pair in zip(self.devices, self._samples):
                nvml_call(self.nv, "nvmlGpmSampleGet", d.parent, pair[which])
        except TelemetryError as exc:
            self._error = exc

    def open(self) -> None:
        self._error = None
        self._take(0)

    def close(self) -> None:
        self._take(1)

    def readings(self, wall_s: float) -> list[Metric]:
        if self.unsupported:
            return [unavailable("tensor_active", "measured", TENSOR_METHOD, self.unsupported)]
        if self._error is not None:
            raise TelemetryError(f"NVML GPM sampling failed during the window: {self._error}")
        values = []
        for first, second in self._samples:
            get = self.nv.c_nvmlGpmMetricsGet_t()
            get.version = self.nv.NVML_GPM_METRICS_GET_VERSION
            get.numMetrics = 1
            get.sample1, get.sample2 = first, second
            get.metrics[0].metricId = self.nv.NVML_GPM_METRIC_ANY_TENSOR_UTIL
            nvml_call(self.nv, "nvmlGpmMetricsGet", get)
            if get.metrics[0].nvmlReturn != 0:
                raise TelemetryError(
                    f"NVML nvmlGpmMetricsGet ANY_TENSOR_UTIL returned error code {get.metrics[0].nvmlReturn}"
                )
            values.append(get.metrics[0].value / 100.0)
        return [measured("tensor_active", sum(values) / len(values), TENSOR_METHOD)]

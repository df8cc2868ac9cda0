"""FakePynvml: a test double of the pynvml calls we use. It measures nothing.

It stands in for the `pynvml` module (pass an instance where the module goes). Devices are
described by `FakeGpu`; the energy counter is a function of a clock (real or `FakeClock`)
that only advances every `period_s`, as NVML's does. Every call is logged with the thread
that made it, so tests can say where NVML was called. Faults are injected per function.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any


class FakeClock:
    """A clock for the double whose `sleep` advances time instantly. Units: seconds."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeGpu:
    """One physical GPU of the double. Units: W, seconds, bytes, percent."""

    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    power_w: float = 100.0
    period_s: float = 0.1
    memory_total: int = 80 * 2**30
    memory_used: int = 1 * 2**30
    busy_percent: int = 40
    tensor_percent: float = 25.0
    gpm: bool = True
    mig: list[str] = field(default_factory=list)  # UUIDs of MIG instances
    energy_offset_mj: int = 0  # set negative during a window to make the counter go backwards
    # The GPU's state (telemetry/gpu_state.py). Units: MHz, mW, degrees C, bytes.
    sm_clock_mhz: int = 1980
    mem_clock_mhz: int = 2619
    max_sm_clock_mhz: int = 1980
    max_mem_clock_mhz: int = 2619
    app_sm_clock_mhz: int = 1980  # application clocks (nvidia-smi -ac); the default means "not set"
    app_mem_clock_mhz: int = 2619
    default_app_sm_clock_mhz: int = 1980
    default_app_mem_clock_mhz: int = 2619
    power_limit_mw: int = 700_000
    default_power_limit_mw: int = 700_000
    temperature_c: int = 34
    persistence: int = 1
    ecc: tuple[int, int] = (1, 1)  # (current, pending)
    processes: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, used bytes) on this GPU
    event_reasons: int = 0  # clocks event reasons mask now; a test changes it during a window
    # Violation counters by perf policy (0 power, 1 thermal, ...): ns a limiter held the clocks
    # below the application clocks, cumulative; a test adds to them during a window.
    violation_ns: dict[int, int] = field(default_factory=dict)
    violation_unsupported: set[int] = field(default_factory=set)  # policies that answer NOT_SUPPORTED


@dataclass(frozen=True)
class FakeHandle:
    gpu: int
    mig: int | None = None


class FakeNVMLError(Exception):
    """Shaped like pynvml.NVMLError: carries the NVML return code in `value`."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return {3: "Not Supported", 15: "GPU is lost", 999: "Unknown Error"}.get(self.value, f"NVML error {self.value}")


class _Metric(SimpleNamespace):
    pass


class FakeGpmMetricsGet:
    """Shaped like pynvml.c_nvmlGpmMetricsGet_t (only the fields we use)."""

    def __init__(self) -> None:
        self.version = 0
        self.numMetrics = 0
        self.sample1: Any = None
        self.sample2: Any = None
        self.metrics = [_Metric(metricId=0, nvmlReturn=0, value=0.0) for _ in range(4)]


class FakePynvml:
    """Test double of the pynvml calls we use."""

    NVMLError = FakeNVMLError
    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_ERROR_GPU_IS_LOST = 15
    NVML_ERROR_UNKNOWN = 999
    NVML_ERROR_LIBRARY_NOT_FOUND = 12
    nvmlMemory_v2 = 0x02000028
    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVML_TEMPERATURE_GPU = 0
    NVML_GPM_METRIC_ANY_TENSOR_UTIL = 5
    NVML_GPM_METRICS_GET_VERSION = 1
    c_nvmlGpmMetricsGet_t = FakeGpmMetricsGet
    __version__ = "fake"

    def __init__(self, gpus: list[FakeGpu] | None = None, clock: Callable[[], float] = time.perf_counter) -> None:
        self.gpus = gpus if gpus is not None else [FakeGpu("GPU-aaaa1111-0000")]
        self.clock = clock
        self.calls: list[tuple[str, str, float]] = []  # (thread name, function, time)
        self._faults: dict[str, tuple[int, int]] = {}  # function -> (code, calls to let through first)
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.initialised = 0  # nvmlInit calls minus nvmlShutdown calls, as NVML counts them

    # -- faults and the call log ---------------------------------------------------------

    def fail(self, function: str, code: int, after: int = 0) -> None:
        """Make `function` raise NVMLError(code) from its (after+1)-th call on."""
        self._faults[function] = (code, self._counts.get(function, 0) + after)

    def _enter(self, function: str) -> None:
        with self._lock:
            self.calls.append((threading.current_thread().name, function, time.perf_counter()))
            n = self._counts.get(function, 0)
            self._counts[function] = n + 1
        fault = self._faults.get(function)
        if fault is not None and n >= fault[1]:
            raise FakeNVMLError(fault[0])

    def mark(self, label: str) -> None:
        """Put a marker (e.g. a round boundary) into the call log without counting it as a call."""
        with self._lock:
            self.calls.append((threading.current_thread().name, label, time.perf_counter()))

    def count(self, function: str) -> int:
        return self._counts.get(function, 0)

    def _gpu(self, handle: FakeHandle) -> FakeGpu:
        return self.gpus[handle.gpu]

    # -- the pynvml surface -------------------------------------------------------------

    def nvmlInit(self) -> None:
        self._enter("nvmlInit")
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        if self.initialised <= 0:
            raise FakeNVMLError(1)  # NVML_ERROR_UNINITIALIZED, as the real library answers
        self.initialised -= 1

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeHandle:
        self._enter("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise FakeNVMLError(2)
        return FakeHandle(index)

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> FakeHandle:
        self._enter("nvmlDeviceGetHandleByUUID")
        for i, gpu in enumerate(self.gpus):
            if gpu.uuid == uuid:
                return FakeHandle(i)
            if uuid in gpu.mig:
                return FakeHandle(i, gpu.mig.index(uuid))
        raise FakeNVMLError(6)  # NOT_FOUND

    def nvmlDeviceGetUUID(self, handle: FakeHandle) -> str:
        self._enter("nvmlDeviceGetUUID")
        gpu = self._gpu(handle)
        return gpu.uuid if handle.mig is None else gpu.mig[handle.mig]

    def nvmlDeviceIsMigDeviceHandle(self, handle: FakeHandle) -> int:
        self._enter("nvmlDeviceIsMigDeviceHandle")
        return int(handle.mig is not None)

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle: FakeHandle) -> FakeHandle:
        self._enter("nvmlDeviceGetDeviceHandleFromMigDeviceHandle")
        return FakeHandle(handle.gpu)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: FakeHandle) -> int:
        """Units: mJ, advancing only at multiples of the GPU's period, like the real counter."""
        self._enter("nvmlDeviceGetTotalEnergyConsumption")
        if handle.mig is not None:
            raise FakeNVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        gpu = self._gpu(handle)
        quantised_s = math.floor(self.clock() / gpu.period_s) * gpu.period_s
        return int(gpu.power_w * 1e3 * quantised_s) + gpu.energy_offset_mj

    def nvmlDeviceGetMemoryInfo(self, handle: FakeHandle, version: int | None = None) -> SimpleNamespace:
        self._enter("nvmlDeviceGetMemoryInfo")
        if version != self.nvmlMemory_v2:
            raise AssertionError("the double only answers memory info v2; v1 counts reserved memory as used")
        gpu = self._gpu(handle)
        share = len(gpu.mig) if handle.mig is not None else 1
        return SimpleNamespace(total=gpu.memory_total // share, used=gpu.memory_used // share, reserved=0, free=0)

    def nvmlDeviceGetUtilizationRates(self, handle: FakeHandle) -> SimpleNamespace:
        self._enter("nvmlDeviceGetUtilizationRates")
        if handle.mig is not None:
            raise FakeNVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        return SimpleNamespace(gpu=self._gpu(handle).busy_percent, memory=0)

    def nvmlGpmQueryDeviceSupport(self, handle: FakeHandle) -> SimpleNamespace:
        self._enter("nvmlGpmQueryDeviceSupport")
        return SimpleNamespace(isSupportedDevice=int(self._gpu(handle).gpm), version=1)

    def nvmlGpmSampleAlloc(self) -> dict[str, Any]:
        self._enter("nvmlGpmSampleAlloc")
        return {}

    def nvmlGpmSampleGet(self, handle: FakeHandle, sample: dict[str, Any]) -> dict[str, Any]:
        self._enter("nvmlGpmSampleGet")
        sample["gpu"] = handle.gpu
        return sample

    def nvmlGpmMetricsGet(self, get: FakeGpmMetricsGet) -> FakeGpmMetricsGet:
        self._enter("nvmlGpmMetricsGet")
        gpu = self.gpus[get.sample1["gpu"]]
        get.metrics[0].value = gpu.tensor_percent
        return get

    def nvmlDeviceGetName(self, handle: FakeHandle) -> str:
        self._enter("nvmlDeviceGetName")
        return self._gpu(handle).name

    def _whole_gpu(self, function: str, handle: FakeHandle) -> FakeGpu:
        """A device-wide query: NOT_SUPPORTED on a MIG instance's handle, as NVML answers for most of them."""
        self._enter(function)
        if handle.mig is not None:
            raise FakeNVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        return self._gpu(handle)

    def _by_clock(self, gpu: FakeGpu, clock_type: int, sm: int, mem: int) -> int:
        if clock_type not in (self.NVML_CLOCK_SM, self.NVML_CLOCK_MEM):
            raise FakeNVMLError(2)  # INVALID_ARGUMENT: the double knows the SM and memory clocks only
        return sm if clock_type == self.NVML_CLOCK_SM else mem

    def nvmlDeviceGetMaxClockInfo(self, handle: FakeHandle, clock_type: int) -> int:
        gpu = self._whole_gpu("nvmlDeviceGetMaxClockInfo", handle)
        return self._by_clock(gpu, clock_type, gpu.max_sm_clock_mhz, gpu.max_mem_clock_mhz)

    def nvmlDeviceGetClockInfo(self, handle: FakeHandle, clock_type: int) -> int:
        gpu = self._whole_gpu("nvmlDeviceGetClockInfo", handle)
        return self._by_clock(gpu, clock_type, gpu.sm_clock_mhz, gpu.mem_clock_mhz)

    def nvmlDeviceGetApplicationsClock(self, handle: FakeHandle, clock_type: int) -> int:
        gpu = self._whole_gpu("nvmlDeviceGetApplicationsClock", handle)
        return self._by_clock(gpu, clock_type, gpu.app_sm_clock_mhz, gpu.app_mem_clock_mhz)

    def nvmlDeviceGetDefaultApplicationsClock(self, handle: FakeHandle, clock_type: int) -> int:
        gpu = self._whole_gpu("nvmlDeviceGetDefaultApplicationsClock", handle)
        return self._by_clock(gpu, clock_type, gpu.default_app_sm_clock_mhz, gpu.default_app_mem_clock_mhz)

    def nvmlDeviceGetPowerManagementLimit(self, handle: FakeHandle) -> int:
        return self._whole_gpu("nvmlDeviceGetPowerManagementLimit", handle).power_limit_mw

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: FakeHandle) -> int:
        return self._whole_gpu("nvmlDeviceGetPowerManagementDefaultLimit", handle).default_power_limit_mw

    def nvmlDeviceGetTemperature(self, handle: FakeHandle, sensor: int) -> int:
        """Units: degrees C."""
        if sensor != self.NVML_TEMPERATURE_GPU:
            raise AssertionError("the double only has the GPU die sensor")
        return self._whole_gpu("nvmlDeviceGetTemperature", handle).temperature_c

    def nvmlDeviceGetPersistenceMode(self, handle: FakeHandle) -> int:
        return self._whole_gpu("nvmlDeviceGetPersistenceMode", handle).persistence

    def nvmlDeviceGetEccMode(self, handle: FakeHandle) -> list[int]:
        return list(self._whole_gpu("nvmlDeviceGetEccMode", handle).ecc)

    def nvmlDeviceGetMigMode(self, handle: FakeHandle) -> list[int]:
        enabled = int(bool(self._whole_gpu("nvmlDeviceGetMigMode", handle).mig))
        return [enabled, enabled]

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: FakeHandle) -> int:
        return self._whole_gpu("nvmlDeviceGetCurrentClocksEventReasons", handle).event_reasons

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: FakeHandle) -> int:
        """The name before NVML 12.2; a test removes the newer one to stand for an older pynvml."""
        return self._whole_gpu("nvmlDeviceGetCurrentClocksThrottleReasons", handle).event_reasons

    def nvmlDeviceGetViolationStatus(self, handle: FakeHandle, perfPolicyType: int) -> SimpleNamespace:
        gpu = self._whole_gpu("nvmlDeviceGetViolationStatus", handle)
        if perfPolicyType in gpu.violation_unsupported:
            raise FakeNVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        held_ns = gpu.violation_ns.get(perfPolicyType, 0)
        return SimpleNamespace(referenceTime=int(self.clock() * 1e6), violationTime=held_ns)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeHandle) -> list[SimpleNamespace]:
        """Processes of the device the handle names (a MIG instance answers for itself)."""
        self._enter("nvmlDeviceGetComputeRunningProcesses")
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in self._gpu(handle).processes]

    def nvmlSystemGetDriverVersion(self) -> str:
        self._enter("nvmlSystemGetDriverVersion")
        return "550.54.15"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._enter("nvmlSystemGetCudaDriverVersion")
        return 12040

"""NVIDIA GPU telemetry through NVML (nvidia-ml-py, imported as `pynvml`).

The pynvml module is a parameter everywhere, so tests inject a test double. What we read:

* energy: `nvmlDeviceGetTotalEnergyConsumption` (Units: mJ), read at window open and close.
  Its update step and period are probed once at start-up, together with the idle power;
  windows spanning only a few updates are flagged, a counter that did not move is reported
  unavailable (never 0 J), a counter that went backwards is reported unavailable with why.
* memory: `nvmlDeviceGetMemoryInfo(handle, version=nvmlMemory_v2)`.used (Units: bytes), and
* kernel-busy share: `nvmlDeviceGetUtilizationRates(handle).gpu` (Units: percent),
  both sampled by a thread only while a window is open;
* Hopper GPM tensor activity (`NVML_GPM_METRIC_ANY_TENSOR_UTIL`) between samples taken at
  window open and close;
* the GPU temperature (`nvmlDeviceGetTemperature`, Units: degrees C) before a window, for the
  cooldown record, never inside one.

With several GPUs each counter is read and reported on its own (`energy:cuda:<ordinal>`)
beside the sum. `NvmlSet.close` undoes the session's `nvmlInit` (`nvmlShutdown`).

A call that is NOT_SUPPORTED at start-up makes its metric unavailable with the reason; any
NVML error during a window raises `TelemetryError` naming the call, so the test fails
rather than recording a wrong number. Under MIG the energy counter (and GPM here) exist only
for the whole GPU, and utilization queries are unsupported: both are said in notes.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from pytest_efficientllm.core.metrics import measured, unavailable
from pytest_efficientllm.core.record import Metric
from pytest_efficientllm.telemetry.base import Probe, TelemetryError
from pytest_efficientllm.telemetry.sampler import Sampler

# A window must span at least this many counter updates before its energy is trusted
# without a flag: the counter's quantisation costs up to one update at each end.
SHORT_WINDOW_UPDATES = 5
PROBE_MAX_S = 1.0  # bound on the start-up counter probe
PROBE_CHANGES = 6  # the probe stops early once the counter changed this often
PROBE_POLL_S = 0.001

PCU_METHOD = "NVML utilization.gpu (kernel-busy share)"
MEMORY_METHOD = "NVML nvmlDeviceGetMemoryInfo v2 .used (device-wide, all processes; excludes driver-reserved memory)"
ENERGY_METHOD = "NVML nvmlDeviceGetTotalEnergyConsumption (mJ counter), read at window open and close"
TENSOR_METHOD = "NVML GPM ANY_TENSOR_UTIL between samples at window open and close"
IDLE_METHOD = "NVML energy counter at session start-up"


class NvmlUnsupported(TelemetryError):
    """An NVML function this device or driver does not support (NOT_SUPPORTED, or absent)."""


def nvml_call(nv: Any, name: str, *args: Any, **kwargs: Any) -> Any:
    """Call `nv.<name>`, turning NVML errors into ours, named after the call."""
    fn = getattr(nv, name, None)
    if fn is None:
        raise NvmlUnsupported(f"{name}: not in this pynvml ({getattr(nv, '__version__', 'unknown version')})")
    try:
        return fn(*args, **kwargs)
    except nv.NVMLError as exc:
        code = getattr(exc, "value", None)
        if code in (nv.NVML_ERROR_NOT_SUPPORTED, getattr(nv, "NVML_ERROR_FUNCTION_NOT_FOUND", object())):
            raise NvmlUnsupported(f"{name}: NVML_ERROR_NOT_SUPPORTED on this device/driver") from exc
        raise TelemetryError(f"NVML {name} failed: {exc} (NVML error code {code})") from exc


# -- which devices ------------------------------------------------------------------------


def parse_visible_devices(value: str | None) -> list[int | str] | None:
    """Entries of CUDA_VISIBLE_DEVICES in CUDA ordinal order; None when unset (all devices).

    Entries are NVML indices or `GPU-`/`MIG-` UUIDs (a unique prefix is allowed, as CUDA
    allows). A malformed or repeated entry is a ValueError naming it.
    """
    if value is None:
        return None
    out: list[int | str] = []
    for raw in value.split(","):
        entry = raw.strip()
        if not entry:
            continue
        if entry.startswith(("GPU-", "MIG-")):
            out.append(entry)
        elif entry.isdigit():
            out.append(int(entry))
        else:
            raise ValueError(
                f"CUDA_VISIBLE_DEVICES={value!r}: entry {entry!r} is neither an index nor a GPU-/MIG- UUID"
            )
        if out[-1] in out[:-1]:
            raise ValueError(f"CUDA_VISIBLE_DEVICES={value!r}: {entry!r} is listed twice")
    return out


@dataclass(frozen=True)
class NvmlDevice:
    """One CUDA-visible device as NVML sees it.

    `handle` answers memory/utilisation queries (the MIG instance under MIG); `parent` is
    the whole GPU, the only level that has an energy counter and GPM here.
    """

    handle: Any
    parent: Any
    uuid: str
    is_mig: bool
    label: str
    # The CUDA ordinal this process sees the device at (None until `open_nvml` picks it):
    # names the device's own energy (`energy:cuda:<ordinal>`) when several are measured.
    ordinal: int | None = None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _as_device(nv: Any, handle: Any, label: str) -> NvmlDevice:
    uuid = _text(nvml_call(nv, "nvmlDeviceGetUUID", handle))
    try:
        flag = nvml_call(nv, "nvmlDeviceIsMigDeviceHandle", handle)
        is_mig = bool(getattr(flag, "value", flag))
    except NvmlUnsupported:  # pre-MIG drivers or GPUs
        is_mig = False
    parent = nvml_call(nv, "nvmlDeviceGetDeviceHandleFromMigDeviceHandle", handle) if is_mig else handle
    return NvmlDevice(handle, parent, uuid, is_mig, f"{label} ({uuid})")


def resolve_visible(nv: Any, env_value: str | None) -> list[NvmlDevice]:
    """The devices CUDA can see, in CUDA ordinal order, mapped to NVML handles.

    Raises ValueError naming CUDA_VISIBLE_DEVICES when an entry matches no NVML device.
    Indices follow NVML's (PCI bus) order; `cuda_backend` cross-checks the result against
    torch's UUID so a different CUDA_DEVICE_ORDER cannot silently pick the wrong GPU.
    """
    entries = parse_visible_devices(env_value)
    count = int(nvml_call(nv, "nvmlDeviceGetCount"))
    if entries is None:
        entries = list(range(count))
    all_uuids: list[str] | None = None
    out: list[NvmlDevice] = []
    for entry in entries:
        if isinstance(entry, int):
            if entry >= count:
                raise ValueError(f"CUDA_VISIBLE_DEVICES entry {entry}: NVML sees only {count} device(s)")
            out.append(_as_device(nv, nvml_call(nv, "nvmlDeviceGetHandleByIndex", entry), f"GPU {entry}"))
        elif entry.startswith("MIG-"):
            try:
                handle = nvml_call(nv, "nvmlDeviceGetHandleByUUID", entry)
            except TelemetryError as exc:
                raise ValueError(
                    f"CUDA_VISIBLE_DEVICES entry {entry!r} matches no MIG device NVML knows: {exc}"
                ) from None
            out.append(_as_device(nv, handle, "MIG instance"))
        else:
            if all_uuids is None:
                all_uuids = [
                    _text(nvml_call(nv, "nvmlDeviceGetUUID", nvml_call(nv, "nvmlDeviceGetHandleByIndex", i)))
                    for i in range(count)
                ]
            matches = [i for i, u in enumerate(all_uuids) if u.startswith(entry)]
            if len(matches) != 1:
                what = "matches no" if not matches else "is ambiguous among the"
                raise ValueError(
                    f"CUDA_VISIBLE_DEVICES entry {entry!r} {what} NVML device UUIDs ({', '.join(all_uuids)})"
                )
            out.append(_as_device(nv, nvml_call(nv, "nvmlDeviceGetHandleByIndex", matches[0]), f"GPU {matches[0]}"))
    return out


# -- the energy counter's step, probed once -----------------------------------------------


@dataclass(frozen=True)
class CounterStep:
    """What the energy counter did while nothing of ours ran on the GPU.

    Units: mJ for `step_mj`, seconds for `period_s` and `duration_s`, W for `idle_power_w`.
    Fields are None when the probe saw too few updates to tell.
    """

    step_mj: float | None
    period_s: float | None
    idle_power_w: float | None
    changes: int
    duration_s: float


NO_STEP = CounterStep(None, None, None, 0, 0.0)


def probe_counter(
    read_mj: Callable[[], int],
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
    max_s: float = PROBE_MAX_S,
    changes_wanted: int = PROBE_CHANGES,
    poll_s: float = PROBE_POLL_S,
) -> CounterStep:
    """Read the counter every `poll_s` for at most `max_s` and time its updates.

    The idle power is taken between the first and the last observed update, so it is exact
    to the counter's own resolution rather than to our poll.
    """
    return probe_counters(lambda: [read_mj()], clock, sleep, max_s, changes_wanted, poll_s)[0]


def probe_counters(
    read_all_mj: Callable[[], Sequence[int]],
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
    max_s: float = PROBE_MAX_S,
    changes_wanted: int = PROBE_CHANGES,
    poll_s: float = PROBE_POLL_S,
) -> list[CounterStep]:
    """`probe_counter` for several counters read together, one `CounterStep` each.

    Each counter is timed on its own: two GPUs' counters tick at unrelated phases, so their
    sum would change twice per period and show half the real period.
    """
    t0 = clock()
    last = list(read_all_mj())
    updates: list[list[tuple[float, int]]] = [[] for _ in last]
    while clock() - t0 < max_s and min(len(u) for u in updates) < changes_wanted:
        sleep(poll_s)
        values = list(read_all_mj())
        now = clock()
        for i, value in enumerate(values):
            if value != last[i]:
                updates[i].append((now, value))
                last[i] = value
    duration = clock() - t0
    return [_step_of(u, duration) for u in updates]


def _step_of(updates: list[tuple[float, int]], duration: float) -> CounterStep:
    if len(updates) < 2:
        return CounterStep(None, None, None, len(updates), duration)
    steps = [b[1] - a[1] for a, b in zip(updates, updates[1:])]
    periods = [b[0] - a[0] for a, b in zip(updates, updates[1:])]
    span_s = updates[-1][0] - updates[0][0]
    idle = (updates[-1][1] - updates[0][1]) / 1e3 / span_s if span_s > 0 else None
    return CounterStep(float(statistics.median(steps)), float(statistics.median(periods)), idle, len(updates), duration)


def combine_steps(steps: Sequence[CounterStep]) -> CounterStep:
    """The counters of several devices as one energy source. Units as `CounterStep`.

    The period is the slowest counter's (a window must span enough updates of each), the
    step and the idle power are sums; a field is None when any counter's is.
    """
    if len(steps) == 1:
        return steps[0]

    def total(values: list[float | None]) -> float | None:
        return None if any(v is None for v in values) else float(sum(v for v in values if v is not None))

    periods = [s.period_s for s in steps]
    return CounterStep(
        total([s.step_mj for s in steps]),
        None if any(p is None for p in periods) else max(p for p in periods if p is not None),
        total([s.idle_power_w for s in steps]),
        min(s.changes for s in steps),
        max(s.duration_s for s in steps),
    )


# -- probes -------------------------------------------------------------------------------


def device_key(device: NvmlDevice) -> str:
    """How a record names one device: `cuda:<ordinal>` as this process sees it, else its UUID."""
    return f"cuda:{device.ordinal}" if device.ordinal is not None else device.uuid


def _unique_parents(devices: Sequence[NvmlDevice]) -> list[NvmlDevice]:
    # Two MIG instances of one GPU share its energy counter: count it once.
    seen: list[NvmlDevice] = []
    for d in devices:
        if not any(d.parent == s.parent for s in seen):
            seen.append(d)
    return seen


class NvmlEnergyProbe(Probe):
    """Whole-GPU energy over a window from the mJ counter. Reports `energy` (J) and `idle_power` (W)."""

    name = "nvml-energy"

    def __init__(
        self,
        nv: Any,
        devices: Sequence[NvmlDevice],
        step: CounterStep,
        unsupported: str | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.nv = nv
        self.devices = _unique_parents(devices)
        self.step = step
        self.unsupported = unsupported
        self.clock = clock
        self._open: list[int] = []
        self._close: list[int] = []
        self._t_open = 0.0
        self._t_close = 0.0
        self._error: TelemetryError | None = None

    def _read(self) -> list[int]:
        return [int(nvml_call(self.nv, "nvmlDeviceGetTotalEnergyConsumption", d.parent)) for d in self.devices]

    def open(self) -> None:
        self._error = None
        if self.unsupported:
            return
        try:
            self._open = self._read()
        except TelemetryError as exc:  # raised from readings(), after every probe has closed
            self._error = exc
        self._t_open = self.clock()

    def close(self) -> None:
        if self.unsupported or self._error:
            return
        try:
            self._close = self._read()
        except TelemetryError as exc:
            self._error = exc
        self._t_close = self.clock()

    def _idle(self) -> Metric:
        s = self.step
        if self.unsupported or s.idle_power_w is None:
            why = (
                self.unsupported
                or f"the energy counter changed {s.changes} time(s) in {s.duration_s:.2f} s at start-up"
            )
            return unavailable("idle_power", "measured", IDLE_METHOD, why)
        return measured(
            "idle_power",
            s.idle_power_w,
            f"NVML energy counter over {s.duration_s:.2f} s with no work queued by this process, at session start-up",
        )

    def _per_device(self, method: str) -> list[Metric]:
        """Each counter's own energy (`energy:cuda:<ordinal>`, J) when several are read; a
        counter that went backwards is unavailable there, the others keep their value."""
        if len(self.devices) < 2:
            return []
        out = []
        for d, a, b in zip(self.devices, self._open, self._close):
            name = f"energy:{device_key(d)}"
            how = f"{method}; {d.label} alone"
            if b < a:
                out.append(
                    unavailable(name, "measured", how, f"its counter went backwards ({a} mJ at open, {b} mJ at close)")
                )
            else:
                out.append(measured(name, (b - a) / 1e3, how))
        return out

    def readings(self, wall_s: float) -> list[Metric]:
        if self._error is not None:
            raise TelemetryError(f"NVML energy read failed during the window: {self._error}")
        method = ENERGY_METHOD
        if any(d.is_mig for d in self.devices):
            method += "; whole GPU: under MIG the counter includes every instance on the GPU"
        if len(self.devices) > 1:
            method += f"; sum over {len(self.devices)} GPUs ({', '.join(device_key(d) for d in self.devices)})"
        if self.unsupported:
            return [unavailable("energy", "measured", method, self.unsupported), self._idle()]
        per_device = self._per_device(method)
        backwards = [(d, a, b) for d, a, b in zip(self.devices, self._open, self._close) if b < a]
        if backwards:
            # A reset (driver reload, GPU reset) reads as a counter lower at close than at open;
            # the energy before and after it cannot be joined, so the window is dropped, as
            # vLLM's benchmark drops such windows, with the device named.
            d, a, b = backwards[0]
            why = (
                f"the energy counter of {d.label} went backwards ({a} mJ at open, {b} mJ at close): "
                "reset by a driver reload or GPU reset during the window; window dropped, energy unknown"
            )
            return [unavailable("energy", "measured", method, why), self._idle(), *per_device]
        delta_mj = sum(b - a for a, b in zip(self._open, self._close))
        window_s = self._t_close - self._t_open
        period = self.step.period_s
        if delta_mj == 0:
            period_text = f"update period {period * 1e3:.0f} ms" if period else "update period unknown"
            why = (
                f"the energy counter did not advance in this {window_s * 1e3:.1f} ms window ({period_text}): "
                "too short to measure; lengthen the window (more rounds or min_time)"
            )
            return [unavailable("energy", "measured", method, why), self._idle(), *per_device]
        note = ""
        if period is None:
            note = "counter update period unknown (too few updates seen at start-up): short windows cannot be flagged"
        elif window_s < SHORT_WINDOW_UPDATES * period:
            updates = window_s / period
            note = (
                f"short window: {window_s * 1e3:.1f} ms spans ~{updates:.1f} counter updates "
                f"(period {period * 1e3:.0f} ms, "
                f"fewer than {SHORT_WINDOW_UPDATES}); uncertain by up to ~{100 / max(updates, 1e-9):.0f}%"
            )
        return [measured("energy", delta_mj / 1e3, method, note=note), self._idle(), *per_device]


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
        self.devices = _unique_parents(devices)
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


class NvmlUnavailableProbe(Probe):
    """The null NVML source: every NVML metric unavailable, with the one reason.

    Reporting `energy` as unavailable (rather than leaving it out) also keeps the CPU
    power estimate from standing in for GPU energy.
    """

    name = "nvml-unavailable"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def open(self) -> None:
        return None

    def close(self) -> None:
        return None

    def readings(self, wall_s: float) -> list[Metric]:
        why = self.reason
        return [
            unavailable("energy", "measured", ENERGY_METHOD, why),
            unavailable("idle_power", "measured", IDLE_METHOD, why),
            unavailable("AMU", "measured", MEMORY_METHOD, why),
            unavailable("AMU_fraction", "measured", MEMORY_METHOD, why),
            unavailable("PCU", "measured", PCU_METHOD, why),
            unavailable("tensor_active", "measured", TENSOR_METHOD, why),
        ]


# -- the session's device set -------------------------------------------------------------


@dataclass
class NvmlSet:
    """NVML, initialised once per session, over the devices this process uses.

    `problem` set means the null object: `make_probes` then yields one probe reporting every
    NVML metric unavailable with that reason. `notices` say once per session what is missing.
    """

    nv: Any = None
    devices: list[NvmlDevice] = field(default_factory=list)
    step: CounterStep = NO_STEP
    unsupported: dict[str, str] = field(default_factory=dict)
    capacity_bytes: int | None = None
    notices: list[str] = field(default_factory=list)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None
    clock: Callable[[], float] = time.perf_counter

    @classmethod
    def empty(cls, reason: str) -> NvmlSet:
        return cls(problem=reason, notices=[f"GPU energy, memory and utilisation (NVML): {reason}"])

    def close(self) -> None:
        """`nvmlShutdown`, once, for the `nvmlInit` of `open_nvml` (NVML counts them); the null set has none."""
        if self.nv is not None and self.problem is None:
            nv, self.nv = self.nv, None
            try:
                nvml_call(nv, "nvmlShutdown")
            except TelemetryError:
                pass  # at session end there is nothing left to measure wrongly

    def temperatures(self) -> dict[str, Any]:
        """GPU temperature of each measured GPU now, `{"cuda:0": 41}` (Units: degrees C), or
        `{"cuda:0": "why not"}` where NVML cannot say. Read outside timed rounds only."""
        if self.problem is not None:
            return {"*": self.problem}
        out: dict[str, Any] = {}
        for d in _unique_parents(self.devices):
            try:
                out[device_key(d)] = int(
                    nvml_call(
                        self.nv, "nvmlDeviceGetTemperature", d.parent, getattr(self.nv, "NVML_TEMPERATURE_GPU", 0)
                    )
                )
            except TelemetryError as exc:
                out[device_key(d)] = str(exc)
        return out

    def make_probes(self, interval_s: float) -> list[Probe]:
        """Probes in open order: the energy counter last, so it is read nearest the timed rounds."""
        if self.problem is not None:
            return [NvmlUnavailableProbe(self.problem)]
        u = self.unsupported
        return [
            NvmlSamplerProbe(self.nv, self.devices, interval_s, self.capacity_bytes, u.get("memory"), u.get("busy")),
            NvmlTensorActivityProbe(self.nv, self.devices, u.get("tensor")),
            NvmlEnergyProbe(self.nv, self.devices, self.step, u.get("energy"), self.clock),
        ]


def load_pynvml() -> ModuleType | None:
    """The real bindings, or None when nvidia-ml-py is not installed."""
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


def _capability(call: Callable[[], Any]) -> str | None:
    try:
        call()
        return None
    except NvmlUnsupported as exc:
        return str(exc)
    except TelemetryError as exc:
        return f"failed at start-up: {exc}"


def open_nvml(
    nv: Any,
    visible: str | None,
    ordinals: Sequence[int] = (0,),
    *,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
    probe_max_s: float = PROBE_MAX_S,
) -> NvmlSet:
    """Initialise NVML once, map CUDA ordinals through `visible` (CUDA_VISIBLE_DEVICES), probe what works.

    Only the devices at `ordinals` (the ones this process uses) are measured. Never raises
    for a missing or broken NVML: the result is then the null set with the reason.
    """
    if nv is None:
        return NvmlSet.empty("nvidia-ml-py is not installed (pip install nvidia-ml-py)")
    try:
        nvml_call(nv, "nvmlInit")
    except TelemetryError as exc:
        return NvmlSet.empty(f"nvmlInit failed: {exc}")
    try:
        visible_devices = resolve_visible(nv, visible)
    except (ValueError, TelemetryError) as exc:
        return _shut(nv, NvmlSet.empty(str(exc)))
    missing = [o for o in ordinals if o >= len(visible_devices)]
    if missing:
        return _shut(
            nv,
            NvmlSet.empty(
                f"CUDA device ordinal(s) {missing} not among the {len(visible_devices)} CUDA_VISIBLE_DEVICES"
            ),
        )
    devices = [dataclasses.replace(visible_devices[o], ordinal=o) for o in ordinals]
    parents = _unique_parents(devices)

    unsupported: dict[str, str] = {}
    energy = _capability(lambda: [nvml_call(nv, "nvmlDeviceGetTotalEnergyConsumption", d.parent) for d in parents])
    memory = _capability(
        lambda: [nvml_call(nv, "nvmlDeviceGetMemoryInfo", d.handle, version=nv.nvmlMemory_v2) for d in devices]
    )
    busy = _capability(lambda: [nvml_call(nv, "nvmlDeviceGetUtilizationRates", d.handle) for d in devices])
    if busy and any(d.is_mig for d in devices):
        busy = f"utilization queries are not supported on MIG instances ({busy})"
    tensor = _gpm_support(nv, parents)
    for key, why in (("energy", energy), ("memory", memory), ("busy", busy), ("tensor", tensor)):
        if why:
            unsupported[key] = why

    step = NO_STEP
    if not energy:

        def read_each() -> list[int]:
            return [int(nvml_call(nv, "nvmlDeviceGetTotalEnergyConsumption", d.parent)) for d in parents]

        try:
            step = combine_steps(probe_counters(read_each, clock, sleep, probe_max_s))
        except TelemetryError as exc:
            unsupported["energy"] = f"failed while probing the counter step at start-up: {exc}"

    capacity = None
    if not memory:
        capacity = sum(
            int(nvml_call(nv, "nvmlDeviceGetMemoryInfo", d.handle, version=nv.nvmlMemory_v2).total) for d in devices
        )

    notices = [
        f"GPU {name} (NVML): {why}"
        for name, why in (
            ("energy", unsupported.get("energy")),
            ("memory", unsupported.get("memory")),
            ("kernel-busy share / PCU", unsupported.get("busy")),
            ("tensor activity", unsupported.get("tensor")),
        )
        if why
    ]
    if any(d.is_mig for d in devices):
        notices.append("GPU energy under MIG: NVML has the counter only for the whole GPU; it includes every instance")
    if "energy" not in unsupported and step.period_s is None:
        notices.append(
            f"GPU energy counter changed {step.changes} time(s) in {step.duration_s:.2f} s at start-up: "
            "update period unknown, short windows cannot be flagged"
        )
    fingerprint = _fingerprint(nv, devices, step, capacity, notices)
    return NvmlSet(nv, devices, step, unsupported, capacity, notices, fingerprint, clock=clock)


def _shut(nv: Any, null: NvmlSet) -> NvmlSet:
    """The null set, after undoing the `nvmlInit` it will not use."""
    try:
        nvml_call(nv, "nvmlShutdown")
    except TelemetryError:
        pass
    return null


def _gpm_support(nv: Any, parents: Sequence[NvmlDevice]) -> str | None:
    if any(d.is_mig for d in parents):
        return "GPM tensor activity for MIG instances is not read by this plugin (nvmlGpmMigSampleGet)"
    try:
        for d in parents:
            if not getattr(nvml_call(nv, "nvmlGpmQueryDeviceSupport", d.parent), "isSupportedDevice", 0):
                return "GPM is not supported on this GPU (Hopper or newer needed)"
    except NvmlUnsupported as exc:
        return str(exc)
    except TelemetryError as exc:
        return f"failed at start-up: {exc}"
    return None


def power_limit_w(nv: Any, handle: Any) -> float:
    """`nvmlDeviceGetPowerManagementLimit` in W (NVML gives mW).

    A limit of 0 or less is no limit a GPU can run under (drivers without power management
    report 0): it raises ValueError naming the value, so callers leave the entry out rather
    than record a 0 W cap. NVML errors raise as `TelemetryError`.
    """
    limit_mw = nvml_call(nv, "nvmlDeviceGetPowerManagementLimit", handle)
    if not limit_mw or limit_mw <= 0:
        raise ValueError(f"nvmlDeviceGetPowerManagementLimit reported {limit_mw} mW, which no GPU runs under")
    return float(limit_mw) / 1e3


def _fingerprint(
    nv: Any, devices: Sequence[NvmlDevice], step: CounterStep, capacity: int | None, notices: list[str]
) -> dict[str, Any]:
    """Device facts for the record; an entry NVML cannot give is left out, never guessed
    (and said in `notices` where NVML gave a value that cannot be right)."""
    out: dict[str, Any] = {"gpu_uuids": [d.uuid for d in devices], "gpu_mig": any(d.is_mig for d in devices)}
    # How many GPUs' counters make up `energy`: a baseline taken over another number of
    # GPUs is another configuration, which the fingerprint comparison then warns about.
    out["gpus_measured"] = len(_unique_parents(devices))
    first = devices[0]

    def put(key: str, call: Callable[[], Any]) -> None:
        try:
            out[key] = call()
        except TelemetryError:
            pass

    put("gpu_name", lambda: _text(nvml_call(nv, "nvmlDeviceGetName", first.parent)))
    put("gpu_max_sm_clock_mhz", lambda: int(nvml_call(nv, "nvmlDeviceGetMaxClockInfo", first.parent, nv.NVML_CLOCK_SM)))
    try:
        out["gpu_power_limit_w"] = power_limit_w(nv, first.parent)
    except ValueError as exc:  # a value NVML gave and we refused: said once, not silently dropped
        notices.append(f"GPU power limit (NVML): {exc}; left out of the fingerprint")
    except TelemetryError:
        pass
    put("driver_version", lambda: _text(nvml_call(nv, "nvmlSystemGetDriverVersion")))

    def cuda_driver() -> str:
        v = int(nvml_call(nv, "nvmlSystemGetCudaDriverVersion"))
        return f"{v // 1000}.{v % 1000 // 10}"

    put("cuda_driver_version", cuda_driver)
    if capacity is not None:
        out["gpu_memory_total_bytes"] = capacity
    out["nvml_energy_step_mj"] = step.step_mj
    out["nvml_energy_period_s"] = step.period_s
    out["gpu_idle_power_w"] = step.idle_power_w
    return out

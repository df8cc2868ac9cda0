"""NVIDIA GPU telemetry through NVML (nvidia-ml-py, imported as `pynvml`): the session's device set.

`open_nvml` initialises NVML once, maps the CUDA ordinals this process uses to NVML devices
(`nvml_devices`), asks which queries work, probes the energy counter's step and the idle power
(`nvml_energy`), and returns the `NvmlSet` that makes each window's probes. The pynvml module
is a parameter everywhere, so tests inject a test double. What we read:

* energy: `nvmlDeviceGetTotalEnergyConsumption` (Units: mJ), read at window open and close
  (`nvml_energy`);
* memory: `nvmlDeviceGetMemoryInfo(handle, version=nvmlMemory_v2)`.used (Units: bytes), and
* kernel-busy share: `nvmlDeviceGetUtilizationRates(handle).gpu` (Units: percent),
  both sampled by a thread only while a window is open (`nvml_sampling`);
* Hopper GPM tensor activity (`NVML_GPM_METRIC_ANY_TENSOR_UTIL`) between samples taken at
  window open and close (`nvml_sampling`);
* the GPU temperature (`nvmlDeviceGetTemperature`, Units: degrees C) before a window, for the
  cooldown record, never inside one (here).

The GPU's state (clocks, power limit, modes, other processes, throttle reasons) is
`gpu_state`'s.

With several GPUs each counter is read and reported on its own (`energy:cuda:<ordinal>`)
beside the sum. `NvmlSet.close` undoes the session's `nvmlInit` (`nvmlShutdown`).

A call that is NOT_SUPPORTED at start-up makes its metric unavailable with the reason; any
NVML error during a window raises `TelemetryError` naming the call, so the test fails
rather than recording a wrong number. Under MIG the energy counter (and GPM here) exist only
for the whole GPU, and utilization queries are unsupported: both are said in notes.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_efficientllm.core.metrics import unavailable
from pytest_efficientllm.core.record import Metric
from pytest_efficientllm.telemetry.base import Probe, TelemetryError
from pytest_efficientllm.telemetry.nvml_devices import (
    NvmlDevice,
    NvmlUnsupported,
    as_text,
    device_key,
    nvml_call,
    resolve_visible,
    unique_parents,
)
from pytest_efficientllm.telemetry.nvml_energy import (
    ENERGY_METHOD,
    IDLE_METHOD,
    NO_STEP,
    PROBE_MAX_S,
    CounterStep,
    NvmlEnergyProbe,
    combine_steps,
    probe_counters,
)
from pytest_efficientllm.telemetry.nvml_sampling import (
    MEMORY_METHOD,
    PCU_METHOD,
    TENSOR_METHOD,
    NvmlSamplerProbe,
    NvmlTensorActivityProbe,
)


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
        for d in unique_parents(self.devices):
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
    parents = unique_parents(devices)

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
    fingerprint = _fingerprint(nv, devices, step, capacity)
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


def _fingerprint(nv: Any, devices: Sequence[NvmlDevice], step: CounterStep, capacity: int | None) -> dict[str, Any]:
    """Device facts for the record; an entry NVML cannot give is left out, never guessed. The
    GPU's state (clocks, power limit, modes) is `telemetry.gpu_state`'s."""
    out: dict[str, Any] = {"gpu_uuids": [d.uuid for d in devices], "gpu_mig": any(d.is_mig for d in devices)}
    # How many GPUs' counters make up `energy`: a baseline taken over another number of
    # GPUs is another configuration, which the fingerprint comparison then warns about.
    out["gpus_measured"] = len(unique_parents(devices))
    first = devices[0]

    def put(key: str, call: Callable[[], Any]) -> None:
        try:
            out[key] = call()
        except TelemetryError:
            pass

    put("gpu_name", lambda: as_text(nvml_call(nv, "nvmlDeviceGetName", first.parent)))
    put("gpu_max_sm_clock_mhz", lambda: int(nvml_call(nv, "nvmlDeviceGetMaxClockInfo", first.parent, nv.NVML_CLOCK_SM)))
    put("driver_version", lambda: as_text(nvml_call(nv, "nvmlSystemGetDriverVersion")))

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

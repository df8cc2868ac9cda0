"""The GPU's state through NVML: before measuring (pre-flight) and during each window (throttling).

The pynvml module is a parameter, as in `telemetry.nvml`, so tests inject a test double.

**Pre-flight** (`read_gpu_state`, once per session at start-up, never inside a window), for
the device this process measures. Device-wide facts are read from the whole GPU (the MIG
parent under MIG: NVML answers clock, power and mode queries only for the whole GPU), the
processes from the device in use. What goes where:

* the fingerprint, compared with the baseline's (`judging.fingerprint.fingerprint_diff`): facts a
  run-to-run comparison depends on and that stay put while nobody changes the machine:
  `gpu_clocks` (locked/application clocks or GPU boost), `gpu_max_mem_clock_mhz`,
  `gpu_power_limit_w` and `gpu_power_limit_default_w`, `gpu_persistence_mode`,
  `gpu_ecc_mode`, `gpu_mig_mode`;
* `fingerprint["gpu_preflight"]`, in every record but never compared (`IGNORED_KEYS`):
  values of the moment, which differ between two runs on one machine: temperature, current
  clocks, the clocks event reasons at start-up, the power limit's share of its default, the
  other processes on the device, and `unknown` (each field NVML could not give, with why).

A query NVML answers NOT_SUPPORTED, or that fails, or a value that cannot be right (a power
limit of 0 mW) is recorded as unknown with the reason: it never stops the session. An
unknown fingerprint field is left out of the fingerprint, so it is not compared.

**Per window**, read at window open and close only, outside the timed rounds; the energy
counter, read nearest the rounds, is opened after these probes and closed before them:
* `NvmlThrottleProbe`: NVML's current clocks event reasons ("throttle reasons"), OR-ed.
  Reasons that come and go between the two reads are not seen by them;
* `NvmlViolationProbe`: the violation counters (`nvmlDeviceGetViolationStatus`), which
  accumulate how long each limiter (power, thermal, sync boost, board limit, reliability)
  held the clocks below the application clocks: their difference over the window sees what
  happened between the two reads.

Units: MHz, W (NVML gives mW), degrees C, bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_efficientllm.core.metrics import measured, unavailable
from pytest_efficientllm.core.record import Metric
from pytest_efficientllm.telemetry.base import Probe, TelemetryError
from pytest_efficientllm.telemetry.nvml_devices import NvmlDevice, NvmlUnsupported, as_text, nvml_call

# nvml.h's clocks event reason bits (the ABI; pynvml names them twice, as
# nvmlClocksEventReason* and the older nvmlClocksThrottleReason*).
GPU_IDLE = 0x1
APPLICATIONS_CLOCKS_SETTING = 0x2  # also set while clocks are locked (nvidia-smi -lgc)
REASON_NAMES: tuple[tuple[int, str], ...] = (
    (GPU_IDLE, "GPU idle"),
    (APPLICATIONS_CLOCKS_SETTING, "applications/locked clocks setting"),
    (0x4, "SW power cap"),
    (0x8, "HW slowdown"),
    (0x10, "sync boost"),
    (0x20, "SW thermal slowdown"),
    (0x40, "HW thermal slowdown"),
    (0x80, "HW power brake slowdown"),
    (0x100, "display clock setting"),
    (0x200, "board limit"),
    (0x400, "reliability"),
)
# Reasons that mean the GPU ran slower than its clocks setting allows. Not "GPU idle" (every
# window starts and ends with an idle GPU), nor the user's own clocks setting, nor a
# display clock (a datacenter GPU has no display).
THROTTLING = 0x4 | 0x8 | 0x10 | 0x20 | 0x40 | 0x80 | 0x200 | 0x400
EVENT_REASONS_CALL = "nvmlDeviceGetCurrentClocksEventReasons"  # NVML 12.2 and newer
THROTTLE_REASONS_CALL = "nvmlDeviceGetCurrentClocksThrottleReasons"  # its older name
THROTTLE_METHOD = "NVML current clocks event reasons at window open and close, OR-ed"

# What `--efficiency-require` accepts, and what each promises.
REQUIREMENTS: dict[str, str] = {
    "locked-clocks": "the GPU's clocks are locked or application clocks are set",
    "idle-gpu": "no other process computes on the GPU",
}
LOCK_HINT = "lock them with `nvidia-smi -lgc <min,max>` (or set application clocks with `nvidia-smi -ac <mem,sm>`)"
CONTAINER_CAVEAT = (
    "inside a container NVML lists host PIDs, so this process itself may be listed as another; "
    "run with --pid=host to tell them apart"
)


def reason_names(mask: int) -> list[str]:
    """The clocks event reasons in `mask`, by name; an unknown bit is named by its value."""
    names = [name for bit, name in REASON_NAMES if mask & bit]
    known = 0
    for bit, _ in REASON_NAMES:
        known |= bit
    rest = mask & ~known
    if rest:
        names.append(f"unknown reason bits {rest:#x}")
    return names


def read_reasons(nv: Any, handle: Any) -> int:
    """The current clocks event reasons (a bit mask), through the newer call or, where this
    pynvml or driver lacks it, the older one. NvmlUnsupported when neither answers."""
    try:
        return int(nvml_call(nv, EVENT_REASONS_CALL, handle))
    except NvmlUnsupported as newer:
        try:
            return int(nvml_call(nv, THROTTLE_REASONS_CALL, handle))
        except NvmlUnsupported as older:
            raise NvmlUnsupported(f"{newer}; {older}") from None


@dataclass(frozen=True)
class GpuState:
    """What the pre-flight read of one device found.

    `fingerprint`: the stable facts (compared); `preflight`: the values of the moment (never
    compared), `unknown` included; `clocks_locked`/`other_processes` are None when NVML could
    not tell, with why in `preflight["unknown"]`.
    """

    label: str
    fingerprint: dict[str, Any]
    preflight: dict[str, Any]
    clocks_locked: bool | None
    other_processes: list[dict[str, Any]] | None
    throttle_unsupported: str | None = None
    notices: list[str] = field(default_factory=list)

    @property
    def unknown(self) -> dict[str, str]:
        return dict(self.preflight.get("unknown", {}))

    def unmet(self, requirement: str) -> str | None:
        """Why `requirement` (a key of `REQUIREMENTS`) is not met on this device; None when it is."""
        if requirement == "locked-clocks":
            if self.clocks_locked:
                return None
            if self.clocks_locked is None:
                why = self.unknown.get("gpu_clocks", "unknown")
                return f"{self.label}: whether its clocks are locked cannot be read ({why}); drop the requirement here"
            return f"{self.label} has no locked/application clocks set; {LOCK_HINT}, or drop the requirement"
        if requirement == "idle-gpu":
            if self.other_processes == []:
                return None
            if self.other_processes is None:
                why = self.unknown.get("other_processes", "unknown")
                return f"{self.label}: its processes cannot be listed ({why}); drop the requirement here"
            listed = ", ".join(
                f"pid {p['pid']}"
                + (f" ({p['used_memory_bytes'] / 2**20:.0f} MiB)" if p.get("used_memory_bytes") is not None else "")
                for p in self.other_processes
            )
            return (
                f"{self.label} is used by {len(self.other_processes)} other process(es): {listed}; "
                f"wait for them to end, or drop the requirement ({CONTAINER_CAVEAT})"
            )
        raise ValueError(f"unknown GPU requirement {requirement!r}; choose from {', '.join(REQUIREMENTS)}")


def _mode(value: Any) -> str:
    return "enabled" if int(value) else "disabled"


def read_gpu_state(nv: Any, device: NvmlDevice, own_pid: int) -> GpuState:
    """The pre-flight state of `device`; never raises for what NVML cannot tell (see the module)."""
    unknown: dict[str, str] = {}

    def ask(key: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except NvmlUnsupported as exc:
            unknown[key] = str(exc)
        except TelemetryError as exc:
            unknown[key] = f"failed at start-up: {exc}"
        except Exception as exc:  # a pynvml or driver mismatch must not stop the session either
            unknown[key] = f"failed at start-up: {type(exc).__name__}: {exc}"
        return None

    whole = device.parent
    sm, mem = getattr(nv, "NVML_CLOCK_SM", 1), getattr(nv, "NVML_CLOCK_MEM", 2)

    def clock(call: str, kind: int) -> Callable[[], int]:
        return lambda: int(nvml_call(nv, call, whole, kind))

    name = ask("gpu_name", lambda: nvml_call(nv, "nvmlDeviceGetName", whole))
    label = device.label.split(" (")[0] + (f" ({as_text(name)})" if name is not None else "")
    pre: dict[str, Any] = {"device": device.label}
    fp: dict[str, Any] = {}
    notices: list[str] = []
    if device.is_mig:
        pre["device_wide_from"] = "the whole GPU (the MIG parent): NVML answers these only for the whole GPU"

    # Clocks: now, at most, and whether the user fixed them.
    pre["sm_clock_mhz"] = ask("sm_clock_mhz", clock("nvmlDeviceGetClockInfo", sm))
    pre["mem_clock_mhz"] = ask("mem_clock_mhz", clock("nvmlDeviceGetClockInfo", mem))
    max_sm = ask("max_sm_clock_mhz", clock("nvmlDeviceGetMaxClockInfo", sm))
    max_mem = ask("gpu_max_mem_clock_mhz", clock("nvmlDeviceGetMaxClockInfo", mem))
    pre["max_sm_clock_mhz"] = max_sm
    if max_mem is not None:
        fp["gpu_max_mem_clock_mhz"] = max_mem
    app = {
        "sm": ask("application_clocks", clock("nvmlDeviceGetApplicationsClock", sm)),
        "mem": ask("application_clocks", clock("nvmlDeviceGetApplicationsClock", mem)),
    }
    default_app = {
        "sm": ask("default_application_clocks", clock("nvmlDeviceGetDefaultApplicationsClock", sm)),
        "mem": ask("default_application_clocks", clock("nvmlDeviceGetDefaultApplicationsClock", mem)),
    }
    throttle_unsupported: str | None = None
    reasons: int | None = None
    try:
        reasons = read_reasons(nv, whole)
    except NvmlUnsupported as exc:
        throttle_unsupported = unknown["clocks_event_reasons"] = str(exc)
    except TelemetryError as exc:
        unknown["clocks_event_reasons"] = f"failed at start-up: {exc}"
    if reasons is not None:
        pre["clocks_event_reasons"] = reason_names(reasons)
    else:
        notices.append(
            f"{label}: throttling is not checked: the clocks event reasons cannot be read "
            f"({unknown['clocks_event_reasons']}); gpu_throttled is unavailable"
        )

    locked, clocks_text = _clocks(app, default_app, reasons, max_sm)
    if locked is None:
        unknown["gpu_clocks"] = clocks_text
    else:
        fp["gpu_clocks"] = clocks_text

    # Power limit against its default. A limit of 0 is a driver that does not know it, not a
    # GPU that may draw nothing: unknown, and never divided by.
    limit = ask("gpu_power_limit_w", lambda: int(nvml_call(nv, "nvmlDeviceGetPowerManagementLimit", whole)))
    default = ask(
        "gpu_power_limit_default_w", lambda: int(nvml_call(nv, "nvmlDeviceGetPowerManagementDefaultLimit", whole))
    )
    for key, mw in (("gpu_power_limit_w", limit), ("gpu_power_limit_default_w", default)):
        if mw is None:
            continue
        if mw <= 0:  # said once, not silently dropped
            unknown[key] = f"the driver reported a power limit of {mw} mW"
            notices.append(f"{label}: {unknown[key]} ({key}); left out of the fingerprint")
        else:
            fp[key] = mw / 1e3
    if "gpu_power_limit_w" in fp and "gpu_power_limit_default_w" in fp:
        share = fp["gpu_power_limit_w"] / fp["gpu_power_limit_default_w"]
        pre["power_limit_share_of_default"] = share
        if share < 1:
            notices.append(
                f"{label}: power limit {fp['gpu_power_limit_w']:.0f} W is {share:.0%} of its default "
                f"{fp['gpu_power_limit_default_w']:.0f} W (nvidia-smi -pl): times and energy are those of a capped GPU"
            )

    temperature = ask(
        "temperature_c",
        lambda: int(nvml_call(nv, "nvmlDeviceGetTemperature", whole, getattr(nv, "NVML_TEMPERATURE_GPU", 0))),
    )
    pre["temperature_c"] = temperature
    persistence = ask("gpu_persistence_mode", lambda: nvml_call(nv, "nvmlDeviceGetPersistenceMode", whole))
    if persistence is not None:
        fp["gpu_persistence_mode"] = _mode(persistence)
    ecc = ask("gpu_ecc_mode", lambda: nvml_call(nv, "nvmlDeviceGetEccMode", whole))
    if ecc is not None:
        fp["gpu_ecc_mode"] = _mode(ecc[0])
        pre["ecc_mode_pending"] = _mode(ecc[1])
    mig = ask("gpu_mig_mode", lambda: nvml_call(nv, "nvmlDeviceGetMigMode", whole))
    if mig is not None:
        fp["gpu_mig_mode"] = _mode(mig[0])

    # Other processes on the device in use (the MIG instance under MIG: the ones that share its SMs).
    found = ask("other_processes", lambda: nvml_call(nv, "nvmlDeviceGetComputeRunningProcesses", device.handle))
    others: list[dict[str, Any]] | None = None
    if found is not None:
        others = [
            {"pid": int(p.pid), "used_memory_bytes": _bytes(getattr(p, "usedGpuMemory", None))}
            for p in found
            if int(p.pid) != own_pid
        ]
        pre["other_processes"] = others
        if others:
            notices.append(
                f"{label}: {len(others)} other process(es) compute on this GPU at start-up "
                f"(pid {', '.join(str(p['pid']) for p in others)}): they share its SMs, memory bandwidth "
                f"and power ({CONTAINER_CAVEAT})"
            )
    if unknown:
        pre["unknown"] = dict(sorted(unknown.items()))
    return GpuState(label, fp, pre, locked, others, throttle_unsupported, notices)


def _bytes(value: Any) -> int | None:
    return None if value is None else int(value)


def _clocks(
    app: dict[str, int | None], default_app: dict[str, int | None], reasons: int | None, max_sm: int | None
) -> tuple[bool | None, str]:
    """(whether clocks are fixed, the fingerprint's words for it); (None, why) when NVML cannot tell.

    Application clocks that differ from their defaults are set (nvidia-smi -ac). NVML has no
    query for clocks locked with nvidia-smi -lgc; what it has is the "applications clocks
    setting" event reason, which says the clocks are held by a user's setting, either kind.
    """
    set_app = [
        f"{k.upper() if k == 'sm' else 'memory'} {app[k]} MHz (default {default_app[k]})"
        for k in ("sm", "mem")
        if app[k] is not None and default_app[k] is not None and app[k] != default_app[k]
    ]
    if set_app:
        return True, "application clocks set: " + ", ".join(set_app)
    if reasons is not None and reasons & APPLICATIONS_CLOCKS_SETTING:
        return True, "locked: NVML reports the clocks held by a user's clocks setting (nvidia-smi -lgc/-lmc or -ac)"
    if reasons is not None:
        boost = f", SM up to {max_sm} MHz" if max_sm is not None else ""
        return False, f"not locked (GPU boost{boost})"
    return None, "neither application clocks nor the clocks event reasons could be read"


class NvmlThrottleProbe(Probe):
    """Whether the GPU limited its clocks in the window (`gpu_throttled`), the reasons named in its note.

    Reads the clocks event reasons of each GPU at open and close (outside the timed rounds)
    and ORs them; 1.0 when a throttling reason (power cap, thermal, sync boost, HW slowdown,
    ...) was seen, else 0.0. A read that fails makes the metric unavailable with the reason:
    the window's own numbers are not wrong for it.
    """

    name = "nvml-throttle"

    def __init__(self, nv: Any, handles: Sequence[Any], unsupported: str | None = None) -> None:
        self.nv = nv
        self.handles = list(handles)
        self.unsupported = unsupported
        self._mask = 0
        self._error = ""

    def _read(self) -> None:
        if self.unsupported or self._error:
            return
        try:
            for handle in self.handles:
                self._mask |= read_reasons(self.nv, handle)
        except TelemetryError as exc:
            self._error = str(exc)

    def open(self) -> None:
        self._mask, self._error = 0, ""
        self._read()

    def close(self) -> None:
        self._read()

    def readings(self, wall_s: float) -> list[Metric]:
        if self.unsupported:
            return [unavailable("gpu_throttled", "measured", THROTTLE_METHOD, self.unsupported)]
        if self._error:
            return [unavailable("gpu_throttled", "measured", THROTTLE_METHOD, f"failed in this window: {self._error}")]
        throttled = self._mask & THROTTLING
        return [measured("gpu_throttled", 1.0 if throttled else 0.0, THROTTLE_METHOD, note=_throttle_note(self._mask))]


_THROTTLED = "throttled: "
_SEEN = "clocks event reasons seen (not throttling): "


def _throttle_note(mask: int) -> str:
    if mask & THROTTLING:
        return _THROTTLED + ", ".join(reason_names(mask & THROTTLING))
    seen = reason_names(mask & ~GPU_IDLE)
    return _SEEN + ", ".join(seen) if seen else ""


def _names(note: str, prefix: str) -> list[str]:
    """The names a note lists after `prefix` ("throttled: sw power cap, hw slowdown"), one by one;
    [] where the note does not start with it."""
    listed = note.removeprefix(prefix) if note.startswith(prefix) else ""
    return listed.split(", ") if listed else []


def throttled_by(note: str) -> str:
    """The reasons of a `gpu_throttled` note that says the window throttled ("throttled: sw power
    cap, hw slowdown" -> "sw power cap, hw slowdown"), or "": the note's format stays this module's."""
    return note.removeprefix(_THROTTLED) if note.startswith(_THROTTLED) else ""


def throttle_reasons(note: str) -> list[str]:
    """The reasons a `gpu_throttled` note names for a window that throttled, one by one ([] where none)."""
    return _names(note, _THROTTLED)


def _merged_names(first: str, second: str, prefix: str) -> str:
    """`prefix` + every name listed after it in either note, once each; "" when neither lists one."""
    merged = dict.fromkeys(_names(first, prefix) + _names(second, prefix))
    return prefix + ", ".join(merged) if merged else ""


def merge_throttle_notes(first: str, second: str) -> str:
    """The note of `gpu_throttled` over two windows: every throttling reason either named.

    A test measured in several windows (generation's prefill and decode, a retried window) is
    one record; keeping one window's note would drop the reasons of the others.
    """
    return _merged_names(first, second, _THROTTLED) or _merged_names(first, second, _SEEN)


# nvml.h's perf policies whose violation counters (ns, cumulative since the driver loaded) say
# how long a limiter held the clocks below the application clocks. Not LOW_UTILIZATION (4):
# an idle GPU is not a throttled one; nor the totals (10, 11), which include it.
VIOLATION_POLICIES: tuple[tuple[int, str], ...] = (
    (0, "power"),
    (1, "thermal"),
    (2, "sync boost"),
    (3, "board limit"),
    (5, "reliability"),
)
VIOLATION_CALL = "nvmlDeviceGetViolationStatus"
VIOLATION_METHOD = "NVML violation counters at window open and close; the largest limiter's time over the window time"
_HELD = "held below application clocks by: "


def held_by(note: str) -> str:
    """The limiters part of a `gpu_throttled_share` note ("held below application clocks by:
    power, thermal"), or "" where none held the clocks: the note's format stays this module's."""
    first = note.split("; ")[0]
    return first if first.startswith(_HELD) else ""


def limiters(note: str) -> list[str]:
    """The limiters a `gpu_throttled_share` note names as having held the clocks, one by one ([] where none)."""
    return _names(note.split("; ")[0], _HELD)


def merge_violation_notes(first: str, second: str) -> str:
    """The note of `gpu_throttled_share` over two windows: every limiter either named."""
    held = _merged_names(first.split("; ")[0], second.split("; ")[0], _HELD)
    rest = [part for note in (first, second) for part in note.split("; ")[1:]]
    return "; ".join([p for p in [held, *dict.fromkeys(rest)] if p])


class NvmlViolationProbe(Probe):
    """How much of the window a limiter held the GPU's clocks down (`gpu_throttled_share`), by name.

    Reads each limiter's violation counter of each GPU at open and close. The limiters
    overlap in time, so the share is the largest one's time over the window's, never their
    sum; over several GPUs, the most held GPU's. A limiter whose counter NVML does not support
    is left out for the session (the metric is unavailable only when none is supported); one
    whose counter went backwards in a window (a driver reload) is left out of that window, said
    in the note.
    """

    name = "nvml-violation"

    def __init__(self, nv: Any, handles: Sequence[Any]) -> None:
        self.nv = nv
        self.handles = list(handles)
        self._unsupported: dict[int, str] = {}  # policy -> why NVML refused it, for the session
        self._at_open: dict[tuple[int, int], int] = {}  # (GPU, policy) -> ns
        self._at_close: dict[tuple[int, int], int] = {}
        self._error = ""

    def _read(self) -> dict[tuple[int, int], int]:
        out = {}
        for gpu, handle in enumerate(self.handles):
            for policy, _ in VIOLATION_POLICIES:
                if policy in self._unsupported:
                    continue
                try:
                    out[(gpu, policy)] = int(nvml_call(self.nv, VIOLATION_CALL, handle, policy).violationTime)
                except NvmlUnsupported as exc:
                    self._unsupported[policy] = str(exc)
        return out

    def open(self) -> None:
        self._error, self._at_open, self._at_close = "", {}, {}
        try:
            self._at_open = self._read()
        except TelemetryError as exc:
            self._error = str(exc)

    def close(self) -> None:
        if self._error:
            return
        try:
            self._at_close = self._read()
        except TelemetryError as exc:
            self._error = str(exc)

    def readings(self, wall_s: float) -> list[Metric]:
        if self._error:
            return [
                unavailable(
                    "gpu_throttled_share", "measured", VIOLATION_METHOD, f"failed in this window: {self._error}"
                )
            ]
        names = dict(VIOLATION_POLICIES)
        held: dict[str, float] = {}  # limiter -> seconds, the most held GPU's
        backwards: list[str] = []
        for (gpu, policy), start in self._at_open.items():
            end = self._at_close.get((gpu, policy))
            if end is None:
                continue
            if end < start:
                backwards.append(names[policy])
                continue
            held[names[policy]] = max(held.get(names[policy], 0.0), (end - start) / 1e9)
        if not held and not backwards:
            why = "; ".join(dict.fromkeys(self._unsupported.values())) or "no GPU to read"
            return [unavailable("gpu_throttled_share", "measured", VIOLATION_METHOD, f"no violation counter: {why}")]
        seen = sorted(((s, n) for n, s in held.items() if s > 0), reverse=True)
        share = min(1.0, seen[0][0] / wall_s) if seen and wall_s > 0 else 0.0
        parts = [_HELD + ", ".join(n for _, n in seen)] if seen else []
        if backwards:
            parts.append(
                f"counter went backwards (driver reloaded?), not counted: {', '.join(dict.fromkeys(backwards))}"
            )
        return [measured("gpu_throttled_share", share, VIOLATION_METHOD, note="; ".join(parts))]

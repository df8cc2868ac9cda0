"""GPU energy from NVML's total-energy counter (Units: mJ), read at window open and close.

The counter's update step and period are probed once at start-up, together with the idle
power; windows spanning only a few updates are flagged, a counter that did not move is
reported unavailable (never 0 J), a counter that went backwards is reported unavailable with
why. With several GPUs each counter is read and reported on its own (`energy:cuda:<ordinal>`)
beside the sum.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_efficientllm.core.metrics import measured, unavailable
from pytest_efficientllm.core.record import Metric
from pytest_efficientllm.telemetry.base import Probe, TelemetryError
from pytest_efficientllm.telemetry.nvml_devices import NvmlDevice, device_key, nvml_call, unique_parents

# A window must span at least this many counter updates before its energy is trusted
# without a flag: the counter's quantisation costs up to one update at each end.
SHORT_WINDOW_UPDATES = 5
PROBE_MAX_S = 1.0  # bound on the start-up counter probe
PROBE_CHANGES = 6  # the probe stops early once the counter changed this often
PROBE_POLL_S = 0.001

ENERGY_METHOD = "NVML nvmlDeviceGetTotalEnergyConsumption (mJ counter), read at window open and close"
IDLE_METHOD = "NVML energy counter at session start-up"
# How a window the counter did not tick in says so (`counter_did_not_advance` reads it).
NOT_ADVANCED = "the energy counter did not advance"


def counter_did_not_advance(energy: Metric) -> bool:
    """An energy reading unavailable only because the counter did not tick in its window: the
    energy was below one update, not unknown. Over several windows of one test the counter's
    advance is the sum of theirs, to which such a window adds nothing; a window whose energy is
    unknown (a counter that went backwards) leaves that sum unknown."""
    return energy.value is None and energy.note.startswith(NOT_ADVANCED)


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


def probe_counters(
    read_all_mj: Callable[[], Sequence[int]],
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
    max_s: float = PROBE_MAX_S,
    changes_wanted: int = PROBE_CHANGES,
    poll_s: float = PROBE_POLL_S,
) -> list[CounterStep]:
    """Read the counters together every `poll_s` for at most `max_s` and time each one's updates,
    one `CounterStep` per counter.

    Each counter is timed on its own: two GPUs' counters tick at unrelated phases, so their
    sum would change twice per period and show half the real period. The idle power is taken
    between the first and the last observed update, so it is exact to the counter's own
    resolution rather than to our poll.
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
        self.devices = unique_parents(devices)
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
                f"{NOT_ADVANCED} in this {window_s * 1e3:.1f} ms window ({period_text}): "
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

"""CPU-side telemetry from the kernel's own counters: RSS, VmHWM, process CPU time, wall clock."""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

from pytest_efficientllm.core.metrics import measured, unavailable
from pytest_efficientllm.core.record import Metric
from pytest_efficientllm.telemetry.base import Probe, RoundTimer
from pytest_efficientllm.telemetry.retained_memory import retained_metrics
from pytest_efficientllm.telemetry.sampler import CAN_ACCOUNT, Sampler, samplers_cpu_ns

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class ProcPaths:
    """Where the process files live; tests point this at a temporary tree."""

    def __init__(self, root: str | Path = "/proc/self") -> None:
        self.root = Path(root)

    @property
    def status(self) -> Path:
        return self.root / "status"

    @property
    def statm(self) -> Path:
        return self.root / "statm"

    @property
    def clear_refs(self) -> Path:
        return self.root / "clear_refs"


def read_status_kib(paths: ProcPaths, field: str) -> int:
    """A `kB` field of /proc/<pid>/status (e.g. VmHWM), in bytes."""
    for line in paths.status.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(f"{field} not in {paths.status}")


def read_rss_bytes(paths: ProcPaths) -> int:
    """Resident set size from /proc/<pid>/statm (second field, in pages). Units: bytes."""
    # Bare os calls: the RSS sampler reads this 50 times a second, and a sample cost its thread
    # about 250 µs of CPU through Path.read_text against about 150 µs this way.
    fd = os.open(paths.statm, os.O_RDONLY)
    try:
        data = os.read(fd, 256)
    finally:
        os.close(fd)
    return int(data.split()[1]) * _PAGE_BYTES


def reset_hwm(paths: ProcPaths) -> str | None:
    """Reset VmHWM to the current RSS by writing 5 to clear_refs; the reason if not allowed."""
    try:
        paths.clear_refs.write_text("5")
        return None
    except OSError as exc:
        return f"cannot reset VmHWM ({paths.clear_refs}: {exc.strerror or exc})"


@functools.cache
def total_memory_bytes() -> int | None:
    # Installed RAM does not change during a run; read once, not at every window close.
    try:
        return int(psutil.virtual_memory().total)
    except Exception:
        return None


class ProcessMemoryProbe(Probe):
    """Peak and time-average resident memory of this process over a window.

    The peak is the kernel's VmHWM after resetting it at window open; where the reset is
    not permitted it falls back to the maximum of the sampled RSS and says so in the
    method. `prefix` is "host_" when a GPU's memory is the primary memory metric.
    """

    name = "procfs-memory"

    def __init__(self, paths: ProcPaths | None = None, interval_s: float = 0.02, prefix: str = "") -> None:
        self.paths = paths or ProcPaths()
        self.prefix = prefix
        self.sampler = Sampler(lambda: read_rss_bytes(self.paths), interval_s)
        self.interval_s = interval_s
        self._reset_problem: str | None = None
        self._open_rss = 0
        self._hwm: int | None = None

    def open(self) -> None:
        self._reset_problem = reset_hwm(self.paths)
        self._open_rss = read_rss_bytes(self.paths)
        self.sampler.start()

    def close(self) -> None:
        self.sampler.stop()
        try:
            self._hwm = read_status_kib(self.paths, "VmHWM") if self._reset_problem is None else None
        except (OSError, KeyError, ValueError) as exc:
            self._reset_problem = f"cannot read VmHWM: {exc}"
            self._hwm = None

    def readings(self, wall_s: float) -> list[Metric]:
        p = self.prefix
        sampled_method = f"procfs: /proc/self/statm RSS sampled every {self.interval_s * 1e3:.0f} ms"
        peak: float | None
        if self._hwm is not None:
            peak, method, note = float(self._hwm), "procfs: VmHWM reset per window via clear_refs", ""
        else:
            peak_sample = self.sampler.maximum()
            peak = float(peak_sample) if peak_sample is not None else None
            method = sampled_method + " (maximum; may miss spikes between samples)"
            note = self._reset_problem or ""
        out = [
            measured(f"{p}peak_memory", peak, method, note=note),
            measured(
                f"{p}peak_memory_delta",
                None if peak is None else max(0.0, peak - self._open_rss),
                method + "; minus RSS at window open",
                note=note,
            ),
        ]
        if not p:
            out += retained_metrics(self.sampler, sampled_method, wall_s)
        avg = self.sampler.time_average()
        if self.sampler.error is not None:
            out.append(unavailable(f"{p}AMU", "measured", sampled_method, f"RSS sampling failed: {self.sampler.error}"))
        else:
            out.append(measured(f"{p}AMU", avg, sampled_method + ", time average"))
            capacity = total_memory_bytes()
            if not p and avg is not None and capacity:
                out.append(
                    measured("AMU_fraction", avg / capacity, sampled_method + ", time average / physical memory")
                )
        return out


PROCESS_CPU = (
    "user + system, all threads but the plugin's samplers"
    if CAN_ACCOUNT
    else "user + system, all threads, the plugin's samplers included (no readable per-thread CPU clock here)"
)


class ProcessCpuTimeProbe(Probe):
    """User + system CPU seconds of this process over a window, less the plugin's samplers,
    whose own CPU seconds are recorded beside it (`sampler_cpu_time`)."""

    name = "cpu-time"

    def __init__(self) -> None:
        self._start = (0, 0)
        self.cpu_s = 0.0
        self.sampler_s = 0.0

    def open(self) -> None:
        self._start = (samplers_cpu_ns(), time.process_time_ns())

    def close(self) -> None:
        process = time.process_time_ns() - self._start[1]
        samplers = samplers_cpu_ns() - self._start[0]
        self.cpu_s = max(0, process - samplers) * 1e-9
        self.sampler_s = samplers * 1e-9

    def readings(self, wall_s: float) -> list[Metric]:
        cpu = measured("cpu_time", self.cpu_s, f"time.process_time_ns ({PROCESS_CPU})")
        if not CAN_ACCOUNT:
            why = "no per-thread CPU clock this process can read (time.pthread_getcpuclockid)"
            return [cpu, unavailable("sampler_cpu_time", "measured", "sampler threads' CPU clocks", why)]
        return [cpu, measured("sampler_cpu_time", self.sampler_s, "the plugin's sampler threads' CPU clocks")]


class PerfCounterTimer(RoundTimer):
    """Host wall clock around each round: two `perf_counter_ns` reads per round.

    Process CPU time is read just outside those two reads, so each round also has its
    CPU seconds (`cpu_s_per_round`): on a shared machine a busy neighbour stretches the
    wall clock but not the CPU time the work itself costs, and per-round samples give
    the gate a noise estimate for it. The samplers' CPU is read outside those, and taken
    out: their wake-ups follow the wall clock, so left in they would bring the
    neighbour's stretch back into the CPU time.
    """

    method = "perf_counter_ns around each round"
    cpu_method = f"time.process_time_ns around each round ({PROCESS_CPU})"

    def __init__(self) -> None:
        self.cpu_s_per_round: list[float] = []

    def run(self, fn: Callable[[], Any], min_rounds: int, min_time_s: float, max_rounds: int) -> list[float]:
        clock, cpu_clock, samplers = time.perf_counter_ns, time.process_time_ns, samplers_cpu_ns
        min_time_ns = int(min_time_s * 1e9)
        durations: list[int] = []
        cpu: list[int] = []
        total = 0
        while len(durations) < max_rounds and (len(durations) < min_rounds or total < min_time_ns):
            s0 = samplers()
            c0 = cpu_clock()
            t0 = clock()
            fn()
            t1 = clock()
            c1 = cpu_clock()
            cpu.append(max(0, c1 - c0 - (samplers() - s0)))
            dt = t1 - t0
            durations.append(dt)
            total += dt
        self.cpu_s_per_round = [c * 1e-9 for c in cpu]
        return [d * 1e-9 for d in durations]

    @contextlib.contextmanager
    def time_block(self) -> Iterator[dict[str, float]]:
        timing: dict[str, float] = {}
        s0 = samplers_cpu_ns()
        c0 = time.process_time_ns()
        t0 = time.perf_counter_ns()
        yield timing
        timing["latency_s"] = (time.perf_counter_ns() - t0) * 1e-9
        c1 = time.process_time_ns()
        self.cpu_s_per_round = [max(0, c1 - c0 - (samplers_cpu_ns() - s0)) * 1e-9]

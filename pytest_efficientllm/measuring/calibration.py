"""A short fixed calibration workload: how fast this machine is right now.

Measured at the start of a run (lazily, before the first measured test) and again when
the run has gone on longer than the calibration interval. Two parts, because workloads
are bound by one or the other:

* compute: `MATMUL_REPEATS` fp32 matmuls of `MATMUL_N` x `MATMUL_N`;
* memory: a copy of `COPY_BYTES` between two preallocated buffers (larger than the L2/L3
  share of one core, so it runs at memory bandwidth).

The index is the geometric mean of the two medians (seconds), so a machine 10% slower at
both reads 10% slower. Each part is timed twice: by the wall clock (`index_s`, for
latencies) and by the process's CPU time (`cpu_index_s`, for CPU-time metrics, which other
processes on the machine do not inflate). Records carry it in `fingerprint["calibration"]`; when a test's
fingerprint differs from its baseline's, `compare` divides latencies by the ratio of the
two indexes (their raw values are kept as they were measured).
"""

from __future__ import annotations

import datetime as _dt
import math
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

MATMUL_N = 256
MATMUL_REPEATS = 8
COPY_BYTES = 32 * 2**20
ROUNDS = 15
WARMUP = 2


@dataclass(frozen=True)
class Calibration:
    """Medians of the two calibration workloads. Units: seconds per round (wall, and CPU)."""

    matmul_s: float
    copy_s: float
    rounds: int
    threads: int
    at: str
    matmul_cpu_s: float = 0.0
    copy_cpu_s: float = 0.0
    method: str = (
        f"median of {ROUNDS} rounds: {MATMUL_REPEATS} fp32 {MATMUL_N}x{MATMUL_N} matmuls; "
        f"copy of {COPY_BYTES // 2**20} MiB; index = geometric mean"
    )

    @property
    def index_s(self) -> float:
        return math.sqrt(self.matmul_s * self.copy_s)

    @property
    def cpu_index_s(self) -> float:
        return math.sqrt(self.matmul_cpu_s * self.copy_cpu_s)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["index_s"] = self.index_s
        out["cpu_index_s"] = self.cpu_index_s
        return out


def _median_times(fn: Any, rounds: int, warmup: int) -> tuple[float, float]:
    """Median wall and process-CPU seconds per round."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(rounds):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def calibrate(rounds: int = ROUNDS, warmup: int = WARMUP) -> Calibration:
    """Run the calibration workload with torch's current thread count (about 0.2 s on one core)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(MATMUL_N, MATMUL_N, generator=gen)
    b = torch.randn(MATMUL_N, MATMUL_N, generator=gen)
    out = torch.empty(MATMUL_N, MATMUL_N)
    src = torch.ones(COPY_BYTES // 4)
    dst = torch.empty_like(src)

    def matmuls() -> None:
        for _ in range(MATMUL_REPEATS):
            torch.mm(a, b, out=out)

    def copy() -> None:
        dst.copy_(src)

    matmul_s, matmul_cpu_s = _median_times(matmuls, rounds, warmup)
    copy_s, copy_cpu_s = _median_times(copy, rounds, warmup)
    return Calibration(
        matmul_s,
        copy_s,
        rounds,
        torch.get_num_threads(),
        _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        matmul_cpu_s,
        copy_cpu_s,
    )


class Calibrator:
    """Keeps the current calibration and renews it when it is older than `every_s` (None: never)."""

    def __init__(self, every_s: float | None, clock: Any = time.monotonic) -> None:
        self.every_s = every_s
        self._clock = clock
        self._taken: float | None = None
        self.current: Calibration | None = None
        self.history: list[Calibration] = []

    def due(self) -> bool:
        if self._taken is None:
            return True
        return self.every_s is not None and self._clock() - self._taken >= self.every_s

    def ensure(self) -> Calibration:
        if self.current is None or self.due():
            self.current = calibrate()
            self._taken = self._clock()
            self.history.append(self.current)
        return self.current

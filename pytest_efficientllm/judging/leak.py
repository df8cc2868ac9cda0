"""Memory a workload keeps across rounds: a leak that AMU and the peak would average away.

A time average (AMU) or a high-water mark (peak) of a leaking workload looks like an
ordinary, slightly larger number; only the *trend* over the window tells a leak from a
workload that simply needs that memory. This module measures the trend without touching
the timed rounds: `RetainedMemoryProbe` samples resident memory from a thread while the
window is open (like `ProcessMemoryProbe`), and `find_leak` judges the samples:

* retained = memory at window close − memory at window open (RSS counts pages, not
  allocations: a leak that reuses memory the allocator had freed but kept resident shows
  less than its size, so the reported rate is a lower bound);
* it is a leak when the retained amount is above a floor (allocator and interpreter
  noise, `MIN_RETAINED_BYTES`) **and** the growth continues into the second half of the
  window — a one-time growth (a cache filled in the first round) stops early.

Known false positive: torch aligns CPU blocks of 2 MiB and more to 2 MiB (for transparent
huge pages), and glibc does not always reuse such a freed block for the next one, so a
workload that allocates and frees an 8 MiB tensor every round can read as RSS growing by
8 MiB a round (1 of 4 fresh runs here, THP in `madvise` mode). The same workload with plain
Python buffers does not. Hence a warning, never a failure.

The finding is a value that renders itself (`as_section`, `as_verdict`), in the style of
`verdicts`; a leak warns rather than fails, since RSS also moves with allocator caching.

The CPU's `ProcessMemoryProbe` reports these metrics from its own RSS sampler (no second
thread); `RetainedMemoryProbe` serves other memory readers (e.g. a device allocator). The
plugin turns a finding into a warning verdict on the test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pytest_efficientllm.core.record import Metric, Record, unavailable
from pytest_efficientllm.telemetry.base import Probe
from pytest_efficientllm.telemetry.sampler import Sampler
from pytest_efficientllm.core.units import format_bytes

MiB = 2**20
# Below this, RSS changes across a window can be the allocator's doing: in a long pytest
# session glibc's heap holds freed memory that it may keep resident or re-fault, which moved
# RSS by up to 18 MiB over a window of a workload that frees everything (seen here).
MIN_RETAINED_BYTES = 32 * MiB
# Share of the retained growth that must happen in the window's second half for a leak.
LATE_GROWTH_SHARE = 0.25
# With fewer samples the trend cannot be told from a one-time step.
MIN_SAMPLES_FOR_TREND = 4

RETAINED = "retained_memory"
LATE_GROWTH = "retained_memory_late"


class RetainedMemoryProbe(Probe):
    """Resident memory at window open and close, and how much of the growth came late.

    Reports `retained_memory` (close − open) and `retained_memory_late` (close − the
    sample nearest the window's midpoint). Units: bytes. `read_bytes` defaults to this
    process's RSS; pass e.g. `torch.cuda.memory_allocated` for a device allocator.
    """

    name = "retained-memory"

    def __init__(self, read_bytes: Callable[[], float] | None = None, interval_s: float = 0.02,
                 method: str = "procfs: /proc/self/statm RSS") -> None:
        if read_bytes is None:
            from pytest_efficientllm.telemetry.procfs import ProcPaths, read_rss_bytes  # procfs itself imports this module

            paths = ProcPaths()
            read_bytes = lambda: read_rss_bytes(paths)  # noqa: E731
        self._read = read_bytes
        self.interval_s = interval_s
        self.method = method
        self.sampler = Sampler(self._read, interval_s)

    def open(self) -> None:
        self.sampler.start()

    def close(self) -> None:
        self.sampler.stop()

    def readings(self, wall_s: float) -> list[Metric]:
        how = f"{self.method} sampled every {self.interval_s * 1e3:.0f} ms"
        return retained_metrics(self.sampler, how, wall_s)


def retained_metrics(sampler: Sampler, how: str, wall_s: float) -> list[Metric]:
    """`retained_memory` (close − open) and `retained_memory_late` (close − the sample
    nearest the window's midpoint) from a memory sampler's samples. Units: bytes."""
    pts = sampler.samples
    if sampler.error is not None or len(pts) < 2:
        why = f"sampling failed: {sampler.error}" if sampler.error else "fewer than two samples"
        return [unavailable(RETAINED, "B", "lower", "measured", how, why),
                unavailable(LATE_GROWTH, "B", "lower", "measured", how, why)]
    (t0, first), (t1, last) = pts[0], pts[-1]
    mid_t = (t0 + t1) / 2
    mid = min(pts, key=lambda p: abs(p[0] - mid_t))[1]
    retained = Metric(RETAINED, last - first, "B", "lower", "measured", f"{how}; at window close minus at open")
    late_how = f"{how}; at close minus at the window's midpoint"
    if len(pts) < MIN_SAMPLES_FOR_TREND:
        why = f"only {len(pts)} samples in a {wall_s * 1e3:.0f} ms window: too few to see a trend"
        return [retained, unavailable(LATE_GROWTH, "B", "lower", "measured", late_how, why)]
    return [retained, Metric(LATE_GROWTH, last - mid, "B", "lower", "measured", late_how)]


@dataclass(frozen=True)
class LeakFinding:
    """Memory retained across the measured rounds, growing through the window."""

    retained_bytes: float
    late_bytes: float | None  # None: the window was too short to see the trend
    rounds: int
    nodeid: str = ""

    @property
    def per_round_bytes(self) -> float:
        return self.retained_bytes / max(1, self.rounds)

    def message(self) -> str:
        grew = f"memory grew by {format_bytes(self.retained_bytes)} over {self.rounds} rounds " \
               f"(~{format_bytes(self.per_round_bytes)} per round"
        if self.late_bytes is None:
            return (grew + "); the window was too short to tell a leak from one-time growth: "
                    "measure more rounds (min_time=) to find out")
        return (grew + f", {format_bytes(self.late_bytes)} of it in the window's second half): a leak across "
                "rounds; AMU and the peak include it as if the workload needed it")

    def as_section(self) -> tuple[str, str]:
        return ("efficiency", f"{RETAINED}: {self.message()}")

    def as_verdict(self):  # -> verdicts.Verdict; imported late so this module stays below the gate
        from pytest_efficientllm.judging.verdicts import Verdict

        return Verdict(RETAINED, "warn", self.message())


def find_leak(record: Record, min_retained_bytes: float = MIN_RETAINED_BYTES,
              late_share: float = LATE_GROWTH_SHARE) -> LeakFinding | None:
    """A `LeakFinding` when the record shows memory growing through its window, else None.

    Needs `retained_memory` and `retained_memory_late` (from `RetainedMemoryProbe`) and
    `rounds`; a record without them has nothing to judge.
    """
    retained, late, rounds = (record.metrics.get(n) for n in (RETAINED, LATE_GROWTH, "rounds"))
    if retained is None or retained.value is None or retained.value < min_retained_bytes:
        return None
    late_bytes = late.value if late is not None else None
    if late_bytes is not None and late_bytes < late_share * retained.value:
        return None  # the growth stopped early: a one-time allocation, not a leak
    n = int(rounds.value) if rounds is not None and rounds.value else 1
    return LeakFinding(retained.value, late_bytes, n, record.nodeid)

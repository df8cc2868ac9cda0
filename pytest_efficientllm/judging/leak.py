"""Leak finding: memory that grows through a window, judged from `telemetry.retained_memory`.

It is a leak when the retained amount is above a floor (allocator and interpreter noise,
`MIN_RETAINED_BYTES`) **and** the growth continues into the second half of the window — a
one-time growth (a cache filled in the first round) stops early.

Known false positive: torch aligns CPU blocks of 2 MiB and more to 2 MiB (for transparent
huge pages), and glibc does not always reuse such a freed block for the next one, so a
workload that allocates and frees an 8 MiB tensor every round can read as RSS growing by
8 MiB a round (1 of 4 fresh runs here, THP in `madvise` mode). The same workload with plain
Python buffers does not. Hence a warning, never a failure: RSS also moves with allocator
caching.

The finding is a value that renders itself as a warning (`as_verdict`), in the style of
`verdicts`.
"""

from __future__ import annotations

from dataclasses import dataclass

from pytest_efficientllm.core.record import Record
from pytest_efficientllm.core.units import format_bytes
from pytest_efficientllm.judging.verdicts import Verdict
from pytest_efficientllm.telemetry.retained_memory import LATE_GROWTH, RETAINED

MiB = 2**20
# Below this, RSS changes across a window can be the allocator's doing: in a long pytest
# session glibc's heap holds freed memory that it may keep resident or re-fault, which moved
# RSS by up to 18 MiB over a window of a workload that frees everything (seen here).
MIN_RETAINED_BYTES = 32 * MiB
# Share of the retained growth that must happen in the window's second half for a leak.
LATE_GROWTH_SHARE = 0.25


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
        grew = (
            f"memory grew by {format_bytes(self.retained_bytes)} over {self.rounds} rounds "
            f"(~{format_bytes(self.per_round_bytes)} per round"
        )
        if self.late_bytes is None:
            return (
                grew + "); the window was too short to tell a leak from one-time growth: "
                "measure more rounds (min_time=) to find out"
            )
        return (
            grew + f", {format_bytes(self.late_bytes)} of it in the window's second half): a leak across "
            "rounds; AMU and the peak include it as if the workload needed it"
        )

    def as_verdict(self) -> Verdict:
        return Verdict(
            RETAINED, "warn", self.message(), reason="leak_window_short" if self.late_bytes is None else "leak"
        )


def find_leak(
    record: Record, min_retained_bytes: float = MIN_RETAINED_BYTES, late_share: float = LATE_GROWTH_SHARE
) -> LeakFinding | None:
    """A `LeakFinding` when the record shows memory growing through its window, else None.

    Needs `retained_memory` and `retained_memory_late` (`telemetry.retained_memory`) and
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

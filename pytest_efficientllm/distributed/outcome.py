"""What one rank reports back about one test, as plain data, and how failures read.

Crosses process boundaries (a JSON file from a spawned rank; `gather_object` under
torchrun), so it holds only JSON types: the record as `Record.to_dict()`, the error as
the rank's formatted traceback.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import asdict, dataclass
from typing import Any

from pytest_efficientllm.core.record import Record

PASSED, FAILED, SKIPPED, DIED, MISSING = "passed", "failed", "skipped", "died", "missing"


@dataclass
class RankOutcome:
    rank: int
    status: str  # passed | failed | skipped | died | missing
    record: dict[str, Any] | None = None  # Record.to_dict() of this rank, when the test measured something
    error: str = ""  # traceback, exit code or signal, or why nothing came back
    first: bool = False  # this rank's failure is the one that stopped the others
    failed_at: float | None = None  # time.time() when the rank caught its own exception

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RankOutcome:
        return cls(**data)

    def to_record(self) -> Record | None:
        return Record.from_dict(self.record) if self.record else None


_HERE = os.path.dirname(os.path.abspath(__file__))


def format_error(exc: BaseException) -> str:
    """The exception's traceback without the plugin's own rank-running frames."""
    tb = traceback.TracebackException.from_exception(exc)
    tb.stack = traceback.StackSummary.from_list([f for f in tb.stack if not f.filename.startswith(_HERE)])
    return "".join(tb.format())


def root_cause(outcomes: list[RankOutcome], seen_first: int | None) -> int | None:
    """The rank whose failure stopped the others, from the one the parent saw exit first.

    A parent that wakes late finds every rank gone and names the lowest (rank 0, whose collective
    failed only because rank 1 had raised and left), so among ranks that raised, the one that
    raised earliest by its own report is the cause. A rank that died reported nothing, and what
    the parent saw stands.
    """
    if seen_first is None or outcomes[seen_first].status != FAILED:
        return seen_first
    raised = [o for o in outcomes if o.status == FAILED and o.failed_at is not None]
    return min(raised, key=lambda o: o.failed_at or 0.0).rank if raised else seen_first


def failure_message(outcomes: list[RankOutcome], world_size: int) -> str | None:
    """None when every rank passed or every rank skipped; else the failing ranks' errors, root cause first."""
    bad = [o for o in outcomes if o.status not in (PASSED, SKIPPED)]
    skipped = [o for o in outcomes if o.status == SKIPPED]
    if not bad and (not skipped or len(skipped) == len(outcomes)):
        return None
    lines = []
    if skipped:
        # A rank that skips leaves; the others' next collective then fails for want of it, so the
        # skip comes first: "Ranks 1 failed to pass monitoredBarrier" alone hides that rank 1 skipped.
        ranks = ", ".join(str(o.rank) for o in skipped)
        lines.append(f"rank(s) {ranks} of {world_size} skipped while the others ran: {skipped[0].error}")
    # The rank whose own error stopped the run first, then other raised errors, then the ranks
    # that were only terminated or never reported.
    order = {FAILED: 1, DIED: 1, MISSING: 2}
    bad.sort(key=lambda o: (not o.first, order[o.status], o.rank))
    for o in bad:
        verb = {FAILED: "failed", DIED: "died", MISSING: "did not report"}[o.status]
        lines.append(f"rank {o.rank} of {world_size} {verb}:")
        lines.extend("    " + line for line in o.error.rstrip().splitlines())
    return "\n".join(lines)


def skip_reason(outcomes: list[RankOutcome]) -> str | None:
    """The skip message when every rank skipped."""
    if outcomes and all(o.status == SKIPPED for o in outcomes):
        return outcomes[0].error or "skipped in every rank"
    return None

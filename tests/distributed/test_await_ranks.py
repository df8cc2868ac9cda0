"""When one rank fails, `run_ranks` waits `GRACE_S` for the others, then ends the rest itself.

The ranks it ended read as terminated because of the failing rank, not as ranks that died: torch's
`ProcessContext.join`, which did this before, SIGTERMed them first, so they read "killed by signal
SIGTERM", and before torch 2.5 it took no grace period at all (a TypeError on the declared floor,
torch 2.4).
"""

from __future__ import annotations

import os
import time
from typing import Any

from pytest_efficientllm.distributed.collectives import RankContext
from pytest_efficientllm.distributed.outcome import DIED, FAILED, MISSING, PASSED
from pytest_efficientllm.distributed.spawn import GRACE_S, run_ranks


def _rank_1_raises(ctx: RankContext) -> dict[str, Any]:
    if ctx.rank == 1:
        raise AssertionError("rank 1 broke")
    time.sleep(60 if ctx.rank == 2 else GRACE_S / 4)  # rank 0 ends within the grace, rank 2 never
    return {"rank": ctx.rank}


def _rank_1_exits(ctx: RankContext) -> None:
    if ctx.rank == 1:
        os._exit(3)
    time.sleep(60)


def test_a_failing_rank_leaves_the_others_the_grace_then_ends_them_as_terminated() -> None:
    started = time.monotonic()
    outcomes = run_ranks(_rank_1_raises, 3, timeout_s=120, start_method="fork")
    assert time.monotonic() - started < 30  # not rank 2's 60 s
    expected = [(0, PASSED, False), (1, FAILED, True), (2, MISSING, False)]
    assert [(o.rank, o.status, o.first) for o in outcomes] == expected
    assert "rank 1 broke" in outcomes[1].error
    assert outcomes[2].error == "terminated after rank 1 failed"


def test_a_rank_that_exits_without_a_traceback_is_named_by_its_exit_code() -> None:
    outcomes = run_ranks(_rank_1_exits, 3, timeout_s=120, start_method="fork")
    expected = [(0, MISSING, False), (1, DIED, True), (2, MISSING, False)]
    assert [(o.rank, o.status, o.first) for o in outcomes] == expected
    assert outcomes[1].error.startswith("exited with code 3 without a Python traceback")
    assert [outcomes[r].error for r in (0, 2)] == ["terminated after rank 1 failed"] * 2

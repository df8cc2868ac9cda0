"""`run_ranks` names the rank that raised first, even when the parent looks only after every rank left.

Rank 1 raises; rank 0's all-reduce then fails for want of it. torch names the first failed process
it sees, and a parent that wakes late (a loaded CI runner) sees both gone and names rank 0: CI once
printed rank 0's "Connection closed by peer" above rank 1's assertion. A test double wrapped around
the parent's wait for the ranks (`spawn._await_ranks`) holds it back until both are gone.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from pytest_efficientllm.distributed import spawn
from pytest_efficientllm.distributed.collectives import RankContext
from pytest_efficientllm.distributed.outcome import FAILED, failure_message
from pytest_efficientllm.distributed.spawn import run_ranks

HELD_S = 60.0  # at most: the double waits until both ranks have left


def _rank_1_disagrees(ctx: RankContext) -> dict[str, Any]:
    import torch
    import torch.distributed as dist

    if ctx.rank == 1:
        raise AssertionError("rank one disagrees")
    dist.all_reduce(torch.ones(1))
    return {}


def test_the_rank_that_raised_comes_first_when_the_parent_looks_late(monkeypatch: pytest.MonkeyPatch) -> None:
    real_await = spawn._await_ranks

    def await_ranks_looking_late(processes: list[Any], *args: Any, **kwargs: Any) -> int | None:
        deadline = time.monotonic() + HELD_S
        while any(p.is_alive() for p in processes) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(p.is_alive() for p in processes), f"a rank still ran after {HELD_S:.0f} s"
        return real_await(processes, *args, **kwargs)

    monkeypatch.setattr(spawn, "_await_ranks", await_ranks_looking_late)
    outcomes = run_ranks(_rank_1_disagrees, 2, timeout_s=60, start_method="fork")
    assert [o.status for o in outcomes] == [FAILED, FAILED], [o.error for o in outcomes]
    assert [o.first for o in outcomes] == [False, True]
    message = failure_message(outcomes, 2) or ""
    assert message.startswith("rank 1 of 2 failed:") and "rank one disagrees" in message, message
    # The rank's traceback is the test's: the frames of the plugin that ran it are left out.
    error = outcomes[1].error
    assert "in _rank_1_disagrees" in error and "distributed/spawn.py" not in error, error

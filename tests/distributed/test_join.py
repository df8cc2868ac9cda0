"""`join`: no rank leaves it before every rank has created its process groups.

Creating a group is not a collective: without a barrier, a rank whose test ends at once (a test
skipped on every rank) exits while a slower peer is still connecting to it, and the peer fails
with Gloo's "Connection closed by peer" (seen once in CI, in the skipped scenario of
test_spawn.py). Ground truth here: rank 0 is held for a known 2 s after creating its groups, by a
test double wrapped around `torch.distributed.new_group`, so rank 1 must leave `join` no sooner.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from pytest_efficientllm.distributed.collectives import RankContext
from pytest_efficientllm.distributed.outcome import PASSED
from pytest_efficientllm.distributed.spawn import run_ranks

HELD_S = 2.0


def _left_join_at(ctx: RankContext) -> dict[str, Any]:
    return {"left_join": time.time()}


def test_no_rank_leaves_join_before_the_slowest_has_its_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.distributed as dist

    real_new_group = dist.new_group

    def new_group_holding_rank_0(*args: Any, **kwargs: Any) -> Any:
        group = real_new_group(*args, **kwargs)
        if dist.get_rank() == 0:
            time.sleep(HELD_S)
        return group

    monkeypatch.setattr(dist, "new_group", new_group_holding_rank_0)  # inherited by the forked ranks
    outcomes = run_ranks(_left_join_at, 2, timeout_s=60, start_method="fork")
    assert [o.status for o in outcomes] == [PASSED, PASSED], [o.error for o in outcomes]
    left = [o.record["left_join"] for o in outcomes]  # type: ignore[index]
    # Without the barrier rank 1 leaves about HELD_S before rank 0; with it, about together.
    assert left[1] > left[0] - HELD_S / 2, left

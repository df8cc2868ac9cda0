"""`run_ranks` opens the rendezvous store only after it has forked every rank.

A rank forked beside the store's serving thread, busy with the rank forked before it, hung in its
own store client about once in 300-600 spawns on the development VM (benchmarks/RESULTS.md), so
the order is the fix: doubles wrapped around `torch.multiprocessing.start_processes` and
`_master_store` record it, and the ranks still meet through the real ones.
"""

from __future__ import annotations

import time
from typing import Any

import psutil
import pytest

from pytest_efficientllm.distributed import spawn
from pytest_efficientllm.distributed.collectives import RankContext
from pytest_efficientllm.distributed.outcome import PASSED
from pytest_efficientllm.distributed.spawn import SpawnError, run_ranks


def _rank_of(ctx: RankContext) -> dict[str, Any]:
    return {"rank": ctx.rank}


def test_the_store_opens_after_the_last_fork_and_the_ranks_still_meet(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.multiprocessing as mp

    events: list[str] = []
    real_start, real_store = mp.start_processes, spawn._master_store

    def start_processes_logged(*args: Any, **kwargs: Any) -> Any:
        events.append("fork")
        return real_start(*args, **kwargs)

    def master_store_logged(*args: Any, **kwargs: Any) -> Any:
        events.append(f"store beside {len(psutil.Process().children())} ranks")
        return real_store(*args, **kwargs)

    monkeypatch.setattr(mp, "start_processes", start_processes_logged)
    monkeypatch.setattr(spawn, "_master_store", master_store_logged)
    outcomes = run_ranks(_rank_of, 2, timeout_s=60, start_method="fork")
    assert [(o.status, o.record) for o in outcomes] == [(PASSED, {"rank": 0}), (PASSED, {"rank": 1})]
    assert events == ["fork", "store beside 2 ranks"]


def test_a_store_that_cannot_open_leaves_no_rank_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_port(*args: Any, **kwargs: Any) -> Any:
        raise SpawnError("could not open a rendezvous port on 127.0.0.1 after 3 attempts: test double")

    monkeypatch.setattr(spawn, "_master_store", no_port)
    before = {c.pid for c in psutil.Process().children()}
    started = time.monotonic()
    with pytest.raises(SpawnError, match="rendezvous port"):
        run_ranks(_rank_of, 2, timeout_s=60, start_method="fork")
    # The ranks, forked and waiting for the port, are stopped at once, not after their 60 s.
    assert time.monotonic() - started < 30
    assert {c.pid for c in psutil.Process().children()} - before == set()

"""What the barrier that ends `join` costs a spawned 2-rank test (a7df44d).

    python benchmarks/join_barrier.py [--reps 10]

Times `run_ranks` of a body that does nothing but one more monitored barrier, interleaved with
the same call where `join`'s barrier is replaced by a no-op (inherited by the forked ranks), and
prints the medians: the whole spawn's wall time with and without it, and the one barrier the body
times itself (what the barrier in `join` costs, measured inside a rank).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from pytest_efficientllm.distributed import collectives
from pytest_efficientllm.distributed.collectives import RankContext
from pytest_efficientllm.distributed.spawn import run_ranks


def _one_barrier(ctx: RankContext) -> dict[str, Any]:
    t0 = time.perf_counter()
    collectives.barrier(ctx, "probe")
    return {"barrier_s": time.perf_counter() - t0}


def _spawn() -> tuple[float, list[float]]:
    t0 = time.perf_counter()
    outcomes = run_ranks(_one_barrier, 2, timeout_s=60, start_method="fork")
    wall = time.perf_counter() - t0
    assert all(o.record for o in outcomes), [o.error for o in outcomes]
    return wall, [o.record["barrier_s"] for o in outcomes]  # type: ignore[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    real_barrier = collectives.barrier
    walls: dict[str, list[float]] = {"with": [], "without": []}
    barriers: list[float] = []
    for rep in range(args.reps):
        for side in ("with", "without") if rep % 2 == 0 else ("without", "with"):
            # join's barrier alone is skipped: the body's probe calls the real one.
            collectives.barrier = real_barrier if side == "with" else _no_join_barrier(real_barrier)  # type: ignore[assignment]
            wall, probes = _spawn()
            walls[side].append(wall)
            barriers += probes
    collectives.barrier = real_barrier  # type: ignore[assignment]
    print(
        f"{time.strftime('%Y-%m-%d %H:%M')}, {args.reps} spawns each, interleaved: run_ranks wall median "
        f"{statistics.median(walls['with']) * 1e3:.0f} ms with join's barrier, "
        f"{statistics.median(walls['without']) * 1e3:.0f} ms without; one monitored barrier of 2 ranks "
        f"median {statistics.median(barriers) * 1e3:.2f} ms, max {max(barriers) * 1e3:.2f} ms"
    )


def _no_join_barrier(real: Any) -> Any:
    def barrier(ctx: RankContext, step: str = "barrier") -> None:
        if step != "probe":
            return
        real(ctx, step)

    return barrier


if __name__ == "__main__":
    main()

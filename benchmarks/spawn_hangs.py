"""How often a spawned 2-rank test fails to meet: `run_ranks` of a trivial body, many times.

    python benchmarks/spawn_hangs.py [--spawns 1500] [--timeout 10]

Each spawn forks 2 ranks that join over gloo and return; one that does not meet within
`--timeout` seconds fails with its rank's error. Prints the count and each failure's last line.
With the rendezvous store opened before the forks (up to a7df44d) about 1 spawn in 230 hung
here: a rank stuck in its own store client while its peer waited for its address.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from pytest_efficientllm.distributed.collectives import RankContext
from pytest_efficientllm.distributed.spawn import run_ranks


def _rank_of(ctx: RankContext) -> dict[str, Any]:
    return {"rank": ctx.rank}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spawns", type=int, default=1500)
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    started = time.monotonic()
    failures = []
    for i in range(args.spawns):
        outcomes = run_ranks(_rank_of, 2, timeout_s=args.timeout, start_method="fork")
        if not all(o.record for o in outcomes):
            failures.append((i, [(o.error.strip().splitlines() or [o.status])[-1][:160] for o in outcomes]))
    print(
        f"{time.strftime('%Y-%m-%d %H:%M')}: {args.spawns} spawns of 2 ranks, {len(failures)} failed "
        f"({time.monotonic() - started:.0f} s)"
    )
    for i, errors in failures:
        print(f"  spawn {i}: {errors}")


if __name__ == "__main__":
    main()

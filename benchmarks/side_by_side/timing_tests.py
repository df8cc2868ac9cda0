"""Run by compare_tools.py under pytest with both plugins loaded: one test per workload times the
same rounds three ways, in an order that rotates between runs — by hand (perf_counter_ns
around each call), with `efficiency.measure` and with pytest-benchmark's `benchmark.pedantic`.

Env: SBS_OUT (JSON-lines file to append to), SBS_ROUNDS, SBS_RUN (rotation index).
"""

import json
import os
import statistics
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from side_by_side.workloads import NAMES, build  # noqa: E402

ROUNDS = int(os.environ.get("SBS_ROUNDS", "20"))
WARMUP = 2
ORDERS = [("hand", "ours", "theirs"), ("ours", "theirs", "hand"), ("theirs", "hand", "ours")]


@pytest.mark.efficiency(rounds=ROUNDS, warmup=WARMUP, flops=False)
@pytest.mark.parametrize("name", NAMES)
def test_timing(name, efficiency, benchmark):
    fn = build(name)
    out = {"workload": name, "run": int(os.environ.get("SBS_RUN", "0"))}
    order = ORDERS[out["run"] % len(ORDERS)]
    for tool in order:
        t0 = time.perf_counter()
        if tool == "hand":
            for _ in range(WARMUP):
                fn()
            times = []
            for _ in range(ROUNDS):
                s = time.perf_counter_ns()
                fn()
                times.append((time.perf_counter_ns() - s) * 1e-9)
            out["hand_median_s"] = statistics.median(times)
            out["hand_busy_s"] = sum(times)
        elif tool == "ours":
            record = efficiency.measure(fn)
            out["ours_median_s"] = record["latency_p50"].value
            out["ours_busy_s"] = record["wall_time"].value
        else:
            benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=WARMUP)
            out["theirs_median_s"] = benchmark.stats.stats.median
            out["theirs_busy_s"] = benchmark.stats.stats.total
        out[f"{tool}_wall_s"] = time.perf_counter() - t0
    with open(os.environ["SBS_OUT"], "a") as fh:
        fh.write(json.dumps(out) + "\n")

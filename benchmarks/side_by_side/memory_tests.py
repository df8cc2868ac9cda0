"""Run by compare_tools.py: peak memory of a known allocation and of a tiny forward, and the
slowdown of the tracking tool, with pytest-memray (`--memray`, `limit_memory`) or with
pytest-efficientllm (`efficiency.measure`).

Env: SBS_OUT, SBS_TOOL ("memray" or "ours"), SBS_ROUNDS.
Under memray the test only runs the workload by hand (memray tracks the whole test); under
ours it runs it by hand and through `efficiency.measure`, alternating.
"""

import json
import os
import statistics
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import torch  # noqa: E402

from side_by_side.workloads import allocate_64_mib, build  # noqa: E402

ROUNDS = int(os.environ.get("SBS_ROUNDS", "10"))
torch.set_num_threads(1)  # as --efficiency-threads=1 does in the runs with our plugin
TOOL = os.environ.get("SBS_TOOL", "ours")


def _hand(fn):
    fn()  # warm-up
    times = []
    for _ in range(ROUNDS):
        s = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - s) * 1e-9)
    return statistics.median(times)


@pytest.fixture(params=["alloc64", "forward", "matmul"])
def workload(request):
    # Built in a fixture: pytest-memray tracks the test function's call only, so the model's
    # construction is outside both tools' windows.
    return request.param, (allocate_64_mib if request.param == "alloc64" else build(request.param))


@pytest.mark.limit_memory("2 GB")  # passes: memray's own peak is read from its capture file
@pytest.mark.efficiency(rounds=ROUNDS, warmup=1, flops=False)
def test_memory(workload, request):
    name, fn = workload
    out = {"workload": name, "tool": TOOL}
    if TOOL == "memray":
        out["hand_median_s"] = _hand(fn)
    else:
        efficiency = request.getfixturevalue("efficiency")
        out["hand_median_s"] = _hand(fn)
        record = efficiency.measure(fn)
        out["ours_median_s"] = record["latency_p50"].value
        out["ours_peak_delta_b"] = record["peak_memory_delta"].value
        out["ours_peak_method"] = record["peak_memory_delta"].method
        out["hand_median_after_s"] = _hand(fn)
    with open(os.environ["SBS_OUT"], "a") as fh:
        fh.write(json.dumps(out) + "\n")

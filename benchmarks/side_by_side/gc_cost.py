"""Why our per-measurement overhead is high: the full `gc.collect()` that `Meter` runs at every
window open, timed in a process holding the tiny transformer (torch + transformers loaded),
with and without `gc.freeze()` first. Run: python benchmarks/side_by_side/gc_cost.py
"""

import gc
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from side_by_side.workloads import build  # noqa: E402


def collect_ms(n: int = 5) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        gc.collect()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


if __name__ == "__main__":
    fn = build("forward")
    fn()
    before = collect_ms()
    gc.freeze()  # moves every object alive now to a permanent generation no collection scans
    after = collect_ms()
    for label, xs in (("full gc.collect()", before), ("after gc.freeze()", after)):
        print(f"{label}: median {statistics.median(xs):.2f} ms (min {min(xs):.2f} .. max {max(xs):.2f}), n={len(xs)}")
    print(f"load average {os.getloadavg()[0]:.1f}")

"""What a garbage collection before a measurement window costs in a process holding the tiny
transformer (torch + transformers loaded): a full `gc.collect()` (what `Meter` ran before every
window until the side-by-side timing showed it was most of our overhead), the same after
`gc.freeze()`, and `gc.collect(1)` (the young generations: what `Meter` runs now).
Run: python benchmarks/side_by_side/gc_cost.py
"""

import gc
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from side_by_side.workloads import build  # noqa: E402


def collect_ms(n: int = 5, generation: int = 2) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        gc.collect(generation)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


if __name__ == "__main__":
    fn = build("forward")
    fn()
    young = collect_ms(generation=1)
    before = collect_ms()
    gc.freeze()  # moves every object alive now to a permanent generation no collection scans
    after = collect_ms()
    for label, xs in (
        ("gc.collect(1), young generations", young),
        ("full gc.collect()", before),
        ("full, after gc.freeze()", after),
    ):
        print(f"{label}: median {statistics.median(xs):.2f} ms (min {min(xs):.2f} .. max {max(xs):.2f}), n={len(xs)}")
    print(f"load average {os.getloadavg()[0]:.1f}")

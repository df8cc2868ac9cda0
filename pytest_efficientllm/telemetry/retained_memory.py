"""Memory a workload keeps across a window: the samples a leak is judged from.

A time average (AMU) or a high-water mark (peak) of a leaking workload looks like an
ordinary, slightly larger number; only the *trend* over the window tells a leak from a
workload that simply needs that memory. `retained_metrics` reads them from the samples of
a memory sampler that ran through the window (the CPU's `ProcessMemoryProbe` passes its RSS
sampler, so no second thread samples):

* `retained_memory`: memory at window close minus at window open (RSS counts pages, not
  allocations, so a leak that reuses memory the allocator kept resident shows less than its
  size: a lower bound);
* `retained_memory_late`: close minus the sample nearest the window's midpoint, so a
  one-time growth (a cache filled in the first round) can be told from continued growth.

Judging the samples is `judging.leak`'s job.
"""

from __future__ import annotations

from pytest_efficientllm.core.metrics import measured, unavailable
from pytest_efficientllm.core.record import Metric
from pytest_efficientllm.telemetry.sampler import Sampler

RETAINED = "retained_memory"
LATE_GROWTH = "retained_memory_late"
# With fewer samples the trend cannot be told from a one-time step.
MIN_SAMPLES_FOR_TREND = 4


def retained_metrics(sampler: Sampler, how: str, wall_s: float) -> list[Metric]:
    """`retained_memory` (close − open) and `retained_memory_late` (close − the sample
    nearest the window's midpoint) from a memory sampler's samples. Units: bytes."""
    pts = sampler.samples
    if sampler.error is not None or len(pts) < 2:
        why = f"sampling failed: {sampler.error}" if sampler.error else "fewer than two samples"
        return [unavailable(RETAINED, "measured", how, why), unavailable(LATE_GROWTH, "measured", how, why)]
    (t0, first), (t1, last) = pts[0], pts[-1]
    mid_t = (t0 + t1) / 2
    mid = min(pts, key=lambda p: abs(p[0] - mid_t))[1]
    retained = measured(RETAINED, last - first, f"{how}; at window close minus at open")
    late_how = f"{how}; at close minus at the window's midpoint"
    if len(pts) < MIN_SAMPLES_FOR_TREND:
        why = f"only {len(pts)} samples in a {wall_s * 1e3:.0f} ms window: too few to see a trend"
        return [retained, unavailable(LATE_GROWTH, "measured", late_how, why)]
    return [retained, measured(LATE_GROWTH, last - mid, late_how)]

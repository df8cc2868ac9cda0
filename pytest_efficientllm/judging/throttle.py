"""A window whose GPU throttled: a warning beside the verdicts, never a failure.

The record's `gpu_throttled` (`telemetry.gpu_state.NvmlThrottleProbe`) says whether NVML
named a throttling clocks event reason at the window's open or close. A throttled window's
times and energy are those of a slower GPU, which a regression or an improvement against the
baseline may be nothing but; the warning says so, and which reasons, so the run can be read
(or repeated) with that in mind. It is never put to a confirmation vote, as a leak is not.
"""

from __future__ import annotations

from pytest_efficientllm.core.record import Record
from pytest_efficientllm.judging.verdicts import Verdict

# How the summary recognises this finding (`glue.summary._REASONS`).
THROTTLED = "the GPU limited its clocks during the window"


def find_throttle(record: Record) -> Verdict | None:
    """A warning when the record's GPU throttled in its window; None otherwise or when unknown."""
    metric = record.metrics.get("gpu_throttled")
    if metric is None or not metric.value:
        return None
    # Over several windows (`WindowResult.merge`) the value is the throttled share of the time
    # and the note names every window's reasons.
    reasons = metric.note.removeprefix("throttled: ")
    if metric.value < 1:
        reasons += f"; in {metric.value:.0%} of the measured time"
    return Verdict(
        "gpu_throttled",
        "warn",
        f"{THROTTLED} ({reasons}; {metric.method}): its times and energy are a throttled GPU's",
        kind="gpu_state",
    )

"""A window whose GPU throttled: a warning beside the verdicts, never a failure.

The record's `gpu_throttled` (`telemetry.gpu_state.NvmlThrottleProbe`) says whether NVML
named a throttling clocks event reason at the window's open or close; `gpu_throttled_share`
(`NvmlViolationProbe`) how much of the window a limiter held the clocks down. A throttled window's
times and energy are those of a slower GPU, which a regression or an improvement against the
baseline may be nothing but; the warning says so, and which reasons, so the run can be read
(or repeated) with that in mind. It is never put to a confirmation vote, as a leak is not.
"""

from __future__ import annotations

from pytest_efficientllm.core.record import Record
from pytest_efficientllm.judging.verdicts import Verdict
from pytest_efficientllm.telemetry.gpu_state import held_by, throttled_by


def find_throttle(record: Record) -> Verdict | None:
    """A warning when the record's GPU throttled in its window; None otherwise or when unknown.

    Either source says so: a throttling reason at the window's open or close (`gpu_throttled`),
    or time a limiter held the clocks down in between (`gpu_throttled_share`)."""
    seen = []
    reasons = record.metrics.get("gpu_throttled")
    if reasons is not None and reasons.value:
        # Over several windows (`WindowResult.merge`) the value is the throttled share of the
        # time and the note names every window's reasons.
        text = throttled_by(reasons.note) or "throttling"
        if reasons.value < 1:
            text += f" in {reasons.value:.0%} of the measured time"
        seen.append(f"{text} ({reasons.method})")
    held = record.metrics.get("gpu_throttled_share")
    if held is not None and held.value:
        limiters = held_by(held.note) or "a limiter"
        seen.append(f"{limiters} for {held.value:.1%} of the window ({held.method})")
    if not seen:
        return None
    return Verdict(
        "gpu_throttled",
        "warn",
        f"the GPU limited its clocks during the window ({'; '.join(seen)}): its times and energy are a throttled GPU's",
        kind="gpu_state",
        reason="throttled",
    )

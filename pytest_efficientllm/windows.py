"""How many measurement windows a test takes, and which one its record keeps.

On a shared machine a neighbour's burst slows every round of a window alike: the same
60-matmul workload, run in 40 fresh processes on this 2-core VM, took 19.6-19.8 ms of CPU
per round in most and 23-26 ms, once 33-54 ms, in the rest (benchmarks/RESULTS.md,
issue 3). The rounds of such a window agree with each other, so no interval over them
can tell that the whole window is off; only another window, later, can. Hence:

* a test takes one window; when that window looks like a regression against the
  baseline (`suspect`: the gate's own rule, the CPU profile's warn-only default
  counted as failing), it takes up to `retries` more, `pause_s` apart, and keeps the
  window with the lowest median round. A true regression is slower in every window
  and still fails; a window that met a neighbour's burst is outvoted.
* with `--update-baselines` every test takes 1 + `retries` windows and keeps the lowest,
  so the baseline itself does not enshrine a burst (which would hide a later
  regression as large as the burst).

The record says how many windows were taken and what each one's median was (the
`windows` metric), so a verdict reached after retries is visible as such. Only
`measure()` and `generate()` can retry: a `window()` block's body cannot be re-run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from .measure import WindowResult
from .record import Metric, Record
from .units import format_seconds

DEFAULT_RETRIES = 2
DEFAULT_PAUSE_S = 0.5


@dataclass(frozen=True)
class WindowPolicy:
    """`retries`: extra windows at most; `always`: take them all (recording baselines);
    `suspect(record)`: does this provisional record look like a regression?"""

    retries: int = 0
    always: bool = False
    pause_s: float = DEFAULT_PAUSE_S
    suspect: Callable[[Record], bool] | None = None


def window_median(result: WindowResult) -> float:
    """The median round of a window by the clock the gate reads: process CPU time where the
    timer records it per round (the CPU profile), else the round latency."""
    per_round = result.cpu_s_per_round if len(result.cpu_s_per_round) == len(result.latencies_s) else ()
    values = per_round or result.latencies_s
    return statistics.median(values) if values else float("inf")


def take_windows(run: Callable[[], WindowResult], policy: WindowPolicy,
                 provisional: Callable[[WindowResult], Record]) -> tuple[WindowResult, Metric]:
    """Run `run` (one warmed-up window) once or more under `policy`; the kept window and the
    `windows` metric describing every window taken."""
    windows = [run()]
    kept = windows[0]
    reason = ""
    for _ in range(policy.retries):
        if policy.always:
            reason = "recording a baseline"
        elif policy.suspect is not None and policy.suspect(provisional(kept)):
            reason = "the window kept so far looked like a regression"
        else:
            break
        time.sleep(policy.pause_s)
        windows.append(run())
        kept = min(windows, key=window_median)
    medians = [window_median(w) for w in windows]
    index = windows.index(kept)
    shown = ", ".join(format_seconds(m) + (" (kept)" if i == index and len(windows) > 1 else "")
                      for i, m in enumerate(medians))
    note = f"median round per window: {shown}" + (f"; more windows because {reason}" if reason else "")
    metric = Metric("windows", float(len(windows)), "", "info", "counted",
                    "measurement windows taken; the one with the lowest median round is kept", note=note)
    return kept, metric

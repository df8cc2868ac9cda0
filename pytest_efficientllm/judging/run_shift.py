"""How far the run as a whole moved on a metric: what a test's gross slowdown must stand out from.

On a shared CPU the whole machine drifts for hours. One A/A run of the suites (2026-12-06
04:07 UTC) read `cpu_time_per_round` +47% at the median of its 61 tests against baselines
recorded four hours before, every test between +18% and +103%, while the index of the
calibration workload in the same run read -4% (benchmarks/RESULTS.md, "A gross slowdown
against its own run"): there a test at +100% had moved about as far as the machine, not on
its own. The vote's fresh processes cannot tell, seconds apart in the same hours: one such
test read +99.6% and then +105.0% in the first fresh process.

The reference is the **lower quartile** of the changes every test of this process read on
the metric against its baseline (passed ones too), from `MIN_TESTS` tests up. A regression
of up to three quarters of the tests does not move it; a test far out stays as far out; and
on a machine that did not move it is about zero.

Plain data; no pytest.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from pytest_efficientllm.core.units import format_change
from pytest_efficientllm.judging.verdicts import Verdict

# Fewer tests than this say nothing about where the run as a whole stands.
MIN_TESTS = 8
QUANTILE = 0.25


@dataclass(frozen=True)
class RunShift:
    """The run's reference change on one metric (current / baseline - 1), how many tests it is of, and
    which quartile of their changes it is."""

    change: float
    tests: int
    quartile: str = "lower"  # of the changes: "upper" for a metric better higher

    def describe(self) -> str:
        shown = format_change(self.change)
        return f"the {self.quartile} quartile of the {self.tests} tests this process compared, {shown}"


@dataclass
class RunChanges:
    """Every change against its baseline that the tests judged in this process read, by metric.

    Fed the first verdicts of each test as it is judged (`add`), before any vote: a fresh
    process measures one test, not the run.
    """

    changes: dict[str, list[float]] = field(default_factory=dict)

    def add(self, verdicts: Iterable[Verdict]) -> None:
        for v in verdicts:
            if v.kind == "baseline" and v.metric != "*" and v.change is not None:
                self.changes.setdefault(v.metric, []).append(v.change)

    def shift(self, metric: str, direction: str = "lower") -> RunShift | None:
        """The run's quartile of least slowdown on `metric` (the lower quartile of the changes of a
        metric better lower, the upper one of a metric better higher), or None from fewer than
        `MIN_TESTS` tests."""
        seen = self.changes.get(metric, [])
        if len(seen) < MIN_TESTS:
            return None
        if direction == "lower":
            return RunShift(float(np.quantile(seen, QUANTILE)), len(seen))
        return RunShift(float(np.quantile(seen, 1 - QUANTILE)), len(seen), "upper")

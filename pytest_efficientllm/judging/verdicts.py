"""Verdicts as pure functions over data: a record and its limits in, `Verdict`s out.

A verdict knows how to render itself for the test's failure report and the summary, and
crosses the xdist wire as a plain dict (`to_dict`/`from_dict`). Absolute budgets are
checked here; comparisons against stored baselines produce the same `Verdict` type
(see `compare`), and `gate` combines both under the run's gate mode.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from pytest_efficientllm.core.limits import Limit
from pytest_efficientllm.core.record import Record
from pytest_efficientllm.core.units import format_value

Status = Literal["pass", "fail", "warn", "new", "improved", "skipped", "error"]
STATUSES: tuple[str, ...] = ("pass", "fail", "warn", "new", "improved", "skipped", "error")
# What a concise listing (`compare`, the Markdown report) counts instead of listing: what holds, and
# what could not be compared. The suites' 71 tests give about 750 verdicts, about 700 of them these.
QUIET_STATUSES: tuple[str, ...] = ("pass", "skipped")

# What a verdict is about: an absolute budget, a comparison with the stored baseline,
# a source or fingerprint mismatch, the baseline file itself, or the GPU's state in the window.
Kind = Literal["budget", "baseline", "source", "fingerprint", "store", "gpu_state"]


@dataclass(frozen=True)
class Verdict:
    """One finding about one metric (or about the test as a whole, metric "*").

    `change` is the relative change against the baseline (current / baseline - 1) where a
    comparison was made, so the summary can show it without re-deriving it; `interval` is that
    change's confidence interval (low, high), in the same terms, where the comparison had one
    (the gate's rank interval over the two runs' rounds, `ab`'s over its pairs), so a reader of
    the run file gets it as data, not prose. `unresolved` is, on a pass, the worst change that
    interval leaves possible where it reaches beyond the tolerance: the pass does not rule out a
    slowdown that large.
    """

    metric: str
    status: Status
    message: str
    kind: str = "budget"
    change: float | None = None
    interval: tuple[float, float] | None = None
    unresolved: float | None = None

    @property
    def failed(self) -> bool:
        return self.status in ("fail", "error")

    def render(self) -> str:
        return f"{self.metric}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verdict:
        if data.get("status") not in STATUSES:
            raise ValueError(f"verdict status must be one of {STATUSES}, got {data.get('status')!r}")
        interval = data.get("interval")
        return cls(**{**data, "interval": tuple(interval) if interval is not None else None})


def check_budget(record: Record, limit: Limit) -> Verdict:
    """One absolute budget against the recorded value.

    An estimated value never fails a budget (docs/metrics.md: estimates are informational);
    it warns instead. An unavailable value is skipped with its reason.
    """
    metric = record.metrics.get(limit.metric)
    if metric is None or metric.value is None:
        why = metric.note if metric is not None else "not recorded by this test"
        return Verdict(limit.metric, "skipped", f"budget {limit.text} not checked: {why}")
    ok = metric.value <= limit.bound if limit.op == "<=" else metric.value >= limit.bound
    shown = f"{format_value(metric.value, metric.unit)} (budget {limit.text}, {metric.source})"
    if ok:
        return Verdict(limit.metric, "pass", shown)
    if metric.source == "estimated":
        return Verdict(limit.metric, "warn", f"{shown}: over budget, but an estimate never fails a test")
    return Verdict(limit.metric, "fail", f"{shown}: over budget")


def check_budgets(record: Record, limits: tuple[Limit, ...]) -> list[Verdict]:
    return [check_budget(record, limit) for limit in limits if limit.kind == "budget"]


def soften(verdicts: list[Verdict]) -> list[Verdict]:
    """The same findings with failures turned into warnings (gate mode `warn`)."""
    return [
        dataclasses.replace(v, status="warn", message=f"{v.message} [gate=warn: not failing]") if v.failed else v
        for v in verdicts
    ]

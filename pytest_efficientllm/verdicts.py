"""Verdicts as pure functions over data: a record and its limits in, `Verdict`s out.

A verdict knows how to render itself for the test's failure report and the summary.
Absolute budgets are checked here; comparisons against stored baselines produce the same
`Verdict` type (see `compare`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .marker import Limit
from .record import Record
from .units import format_value

Status = Literal["pass", "fail", "warn", "new", "improved", "skipped"]


@dataclass(frozen=True)
class Verdict:
    metric: str
    status: Status
    message: str

    @property
    def failed(self) -> bool:
        return self.status == "fail"

    def render(self) -> str:
        return f"{self.metric}: {self.message}"


def check_budget(record: Record, limit: Limit) -> Verdict:
    """One absolute budget against the recorded value.

    An estimated value never fails a budget (DESIGN.md §2: estimates are informational);
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

"""Verdicts as pure functions over data: a record and its limits in, `Verdict`s out.

A verdict knows how to render itself for the test's failure report and the summary, and
crosses the xdist wire as a plain dict (`to_dict`/`from_dict`). Absolute budgets are
checked here; comparisons against stored baselines produce the same `Verdict` type
(see `compare`), and `gate` combines both under the run's gate mode.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

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
KINDS: tuple[str, ...] = get_args(Kind)

# What a finding is, as data: the summary counts findings by it and a reader of the run file
# filters on it, so neither depends on a message's wording. "" where a verdict needs none (a
# pass, a new metric) or its message alone says it.
Reason = Literal[
    "",
    "over_budget",  # an absolute budget broken
    "far_over_budget",  # a measured budget broken FAR_OVER_BUDGET times over: not re-measured to confirm
    "beyond_noise",  # a measured change beyond the tolerance and the noise of the runs
    "beyond_others",  # `ab`: a timing beyond the tolerance and the noise against the other tests of its pairs
    "one_value",  # a measured change beyond the tolerance, one value per run: no noise estimate
    "too_few_rounds",  # beyond the tolerance, but too few rounds to tell change from noise
    "counted_regression",  # a counted value moved the worse way
    "counted_better",  # a counted value moved the better way
    "better",  # a measured value improved beyond the tolerance and the noise
    "other_cpu",  # a counted float moved, computed on another CPU: not gated exactly
    "source_differs",  # measured on one side, estimated on the other: not compared
    "leak",  # memory grew through the rounds
    "leak_window_short",  # memory grew, in a window too short to tell a leak
    "world_size",  # baseline taken at another world size: not compared
    "vote_failed",  # a fresh process of the confirmation vote could not vote
    "vote_stopped",  # the run stopped before the fresh processes voted
    "other_hardware",  # the baseline's hardware is not this run's
    "fingerprint_differs",  # fingerprint fields other than the hardware's differ
    "throttled",  # the GPU limited its clocks during the window
    "within_resolution",  # a pass: beyond the tolerance, but within the energy counter's resolution
    "within_noise",  # a pass: beyond the tolerance, but within the noise (the two runs' rounds, or run to run)
]
REASONS: tuple[str, ...] = get_args(Reason)
# What let a failure through as a warning, as data (a verdict is softened once: each of these
# acts on a failure only).
Softened = Literal[
    "",
    "gate_warn",  # --efficiency-gate=warn
    "baseline_replaced",  # --update-baselines is replacing the baseline it failed against
    "vote_cleared",  # a fresh process of the confirmation vote passed
    "run_moved",  # the run as a whole moved: below the gross floor beyond that
    "estimate",  # an estimate never fails
    "gross_floor",  # the default check on the CPU: below the gross floor
    "pairs_cleared",  # `ab`: more pairs did not find it
]
SOFTENINGS: tuple[str, ...] = get_args(Softened)
# What measured a failure again and found it again, as data ("" where nothing measured it
# again; where the new measurements cleared it, `Softened` says so instead).
Confirmed = Literal[
    "",
    "fresh_processes",  # every fresh process of the confirmation vote found it
    "more_pairs",  # `ab`: the more pairs found it
]
CONFIRMATIONS: tuple[str, ...] = get_args(Confirmed)


@dataclass(frozen=True)
class FingerprintFinding:
    """What a fingerprint verdict found, as data (the summary and a reader of the run file use it,
    not the message): each difference as `field: baseline -> current`; for a warning, how the
    test's times were compared, and where they were calibrated, this machine's calibration time
    over the baseline's."""

    differs: tuple[str, ...]
    times: str = ""
    calibration: float | None = None


@dataclass(frozen=True)
class Verdict:
    """One finding about one metric (or about the test as a whole, metric "*").

    `change` is the relative change against the baseline (current / baseline - 1) where a
    comparison was made, so the summary can show it without re-deriving it; `interval` is that
    change's confidence interval (low, high), in the same terms, where the comparison had one
    (the gate's rank interval over the two runs' rounds, `ab`'s over its pairs), so a reader of
    the run file gets it as data, not prose. `unresolved` is, on a pass, the worst change that
    interval leaves possible where it reaches beyond the tolerance: the pass does not rule out a
    slowdown that large. `reason`: what the finding is (`Reason`); `softened`: what turned a
    failure into this warning (`Softened`); `confirmed`: what found a failure again (`Confirmed`);
    `readings`: on a comparison the confirmation vote weighed, each voting process's change, this
    process's first; `fingerprint`: a fingerprint verdict's finding.
    """

    metric: str
    status: Status
    message: str
    kind: Kind = "budget"
    change: float | None = None
    interval: tuple[float, float] | None = None
    unresolved: float | None = None
    reason: Reason = ""
    softened: Softened = ""
    confirmed: Confirmed = ""
    readings: tuple[float, ...] = ()
    fingerprint: FingerprintFinding | None = None

    @property
    def failed(self) -> bool:
        return self.status in ("fail", "error")

    def render(self) -> str:
        return f"{self.metric}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verdict:
        for name, allowed, default in _FIXED_WORDS:
            if data.get(name, default) not in allowed:
                raise ValueError(f"verdict {name} must be one of {allowed}, got {data.get(name)!r}")
        interval = data.get("interval")
        found = data.get("fingerprint")
        if found is not None:
            found = FingerprintFinding(**{**found, "differs": tuple(found["differs"])})
        return cls(
            **{
                **data,
                "interval": tuple(interval) if interval is not None else None,
                "readings": tuple(data.get("readings", ())),
                "fingerprint": found,
            }
        )


# The fields of a verdict that hold one of a fixed list of words, each with its value where a dict
# leaves it out (a required status has none).
_FIXED_WORDS: tuple[tuple[str, tuple[str, ...], str | None], ...] = (
    ("status", STATUSES, None),
    ("kind", KINDS, "budget"),
    ("reason", REASONS, ""),
    ("softened", SOFTENINGS, ""),
    ("confirmed", CONFIRMATIONS, ""),
)


# Memory figures of the whole process or device, and beside them what the workload itself took. A
# budget written as pytest-memray's (the test's own allocations) against the CPU's peak_memory, the
# process's RSS, fails on the interpreter and torch (~300 MiB) whatever the test does, so its failure
# names the workload's own figures.
_WHOLE_MEMORY = ("peak_memory", "AMU", "host_peak_memory")
_OWN_MEMORY = ("peak_memory_delta", "tensor_peak_bytes")


def _own_memory(record: Record, metric: str) -> str:
    """The clause naming the workload's own memory figures beside a whole-memory budget's failure, or ""."""
    if metric not in _WHOLE_MEMORY:
        return ""
    own = [
        f"{name} {format_value(m.value, m.unit)}"
        for name in _OWN_MEMORY
        if (m := record.metrics.get(name)) is not None and m.value is not None
    ]
    return f"; the workload's own: {', '.join(own)} (a budget on one of those gates the test alone)" if own else ""


# A measured budget broken this many times over fails as it is, never re-measured to confirm
# (the gate's vote in fresh processes, `ab`'s more pairs). The worst slow spell of a shared
# runner read +144% over 85 A/A suite runs (benchmarks/RESULTS.md); this is the gross floor's
# ceiling too, 1 + `gross.GROSS_MAX`, set where no unchanged run came near. Re-measuring such a
# test (a CUDA test that fell back to the CPU, 100x over its latency budget) only delays its failure.
FAR_OVER_BUDGET = 3.0


def times_over(value: float, limit: Limit) -> float:
    """How many times over its budget `value` is (below 1 within it), in the budget's direction."""
    if limit.op == "<=":
        return value / limit.bound if limit.bound > 0 else math.inf if value > 0 else 0.0
    return limit.bound / value if value > 0 else math.inf if limit.bound > 0 else 0.0


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
        return Verdict(
            limit.metric,
            "warn",
            f"{shown}: over budget, but an estimate never fails a test",
            reason="over_budget",
            softened="estimate",
        )
    how = f" ({metric.method})" if metric.method else ""
    own = _own_memory(record, limit.metric)
    times = times_over(metric.value, limit)
    if metric.source == "measured" and times >= FAR_OVER_BUDGET:
        shown_times = f"{times:.3g}x" if math.isfinite(times) else "infinitely"
        far = f"{shown_times} over it, beyond any slow spell of a shared runner ({FAR_OVER_BUDGET:g}x)"
        message = f"{shown}: over budget{how}; {far}: not re-measured to confirm{own}"
        return Verdict(limit.metric, "fail", message, reason="far_over_budget")
    return Verdict(limit.metric, "fail", f"{shown}: over budget{how}{own}", reason="over_budget")


def check_budgets(record: Record, limits: tuple[Limit, ...]) -> list[Verdict]:
    return [check_budget(record, limit) for limit in limits if limit.kind == "budget"]


def soften(verdicts: list[Verdict]) -> list[Verdict]:
    """The same findings with failures turned into warnings (gate mode `warn`)."""
    return [
        dataclasses.replace(v, status="warn", message=f"{v.message} [gate=warn: not failing]", softened="gate_warn")
        if v.failed
        else v
        for v in verdicts
    ]

"""One test's decision: its record, its limits, its baseline and the run's options in, a `Decision` out.

The pytest hook only applies a decision to the test's report (`glue.outcome`), the way
pytest-memray's `makereport` only renders what its markers returned. Everything the gate
decides for a test is decided here:

* the derived metrics the gate reads (`gate.add_derived`);
* the effective limits: ini defaults, then the marker, then the command line;
* the verdicts: budgets, the baseline comparison, strictness and gate mode (`gate.judge`);
* whether measured regressions must first be confirmed by fresh processes (`suspects`,
  the `confirmation` package holds the vote), and the leak and throttling findings, which
  are never put to a vote.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pytest_efficientllm.core.limits import Limit
from pytest_efficientllm.core.record import Record
from pytest_efficientllm.judging.compare import default_measured, tolerances
from pytest_efficientllm.judging.gate import (
    GateOptions,
    add_derived,
    effective_limits,
    judge,
)
from pytest_efficientllm.judging.gross import GROSS_ONLY, apart_from_run
from pytest_efficientllm.judging.leak import find_leak
from pytest_efficientllm.judging.run_noise import RunPrior
from pytest_efficientllm.judging.run_shift import RunChanges
from pytest_efficientllm.judging.throttle import find_throttle
from pytest_efficientllm.judging.verdicts import Verdict


@dataclass(frozen=True)
class BaselineView:
    """What the store holds for one test: its baseline, the run-to-run spread its file
    shares, and why there is no baseline where reading it failed ("" otherwise)."""

    record: Record | None = None
    priors: Mapping[str, RunPrior] = field(default_factory=dict)
    error: str = ""


@dataclass(frozen=True)
class Decision:
    """The gate's findings for one test.

    `verdicts` are final unless `suspects` is non-empty: those measured metrics failed in
    this process and must fail in `processes - 1` fresh ones too before they fail the test
    (`rejudge` judges a fresh process's record by the same rule). `extra` holds findings
    that are never put to a vote (a leak warning): they are added to whatever the vote decides.
    """

    verdicts: list[Verdict]
    suspects: list[str] = field(default_factory=list)
    extra: list[Verdict] = field(default_factory=list)
    limits: tuple[Limit, ...] = ()
    baseline: BaselineView = field(default_factory=BaselineView)
    options: GateOptions = field(default_factory=GateOptions)
    processes: int = 1

    @property
    def final(self) -> list[Verdict]:
        """The verdicts when no vote is held."""
        return self.verdicts + self.extra

    def apart_from_run(self, verdicts: list[Verdict], run: RunChanges, profile: str) -> list[Verdict]:
        """`verdicts` (the vote's final ones, with its `readings`) with each gross failure of the
        default check that moved with the run as a whole turned into a warning (`gross.apart_from_run`)."""
        base = self.baseline.record
        if profile not in GROSS_ONLY or base is None:
            return verdicts
        given = tolerances(self.limits)
        out = []
        for v in verdicts:
            metric = base.metrics.get(v.metric)
            by_default = v.metric not in given and v.metric in default_measured(profile)
            if metric is not None and v.failed and v.kind == "baseline" and by_default:
                shift = run.shift(v.metric, metric.direction)
                if shift is not None:
                    prior = self.baseline.priors.get(v.metric)
                    v = apart_from_run(v, metric, prior, shift, profile)
            out.append(v)
        return out

    def rejudge(self, other: Record) -> list[Verdict]:
        """Another process's record of the same test, judged by this decision's rule."""
        add_derived(other)
        return judge(other, self.limits, self.baseline.record, "", self.options, self.baseline.priors, self.processes)


def suspects(record: Record, verdicts: Sequence[Verdict]) -> list[str]:
    """The measured metrics of this process's record that failed: those fresh processes must confirm,
    but for one far over its budget (`far_over_budget`), which no slow spell explains."""
    failed = {v.metric for v in verdicts if v.failed}
    far = {v.metric for v in verdicts if v.failed and v.reason == "far_over_budget"}
    return [
        name
        for name, metric in sorted(record.metrics.items())
        if name in failed - far and metric.source == "measured" and metric.value is not None
    ]


def voting_processes(record: Record, baseline: BaselineView, confirm_processes: int) -> int:
    """How many processes must all find a measured regression of `record` before it fails."""
    if confirm_processes <= 0 or baseline.error or record.world_size != 1:
        return 1  # no vote: under torchrun the ranks are one measurement, and a fresh process is not
    return 1 + confirm_processes


def evaluate(
    record: Record,
    marker_limits: Iterable[Limit],
    baseline: BaselineView,
    options: GateOptions,
    confirm_processes: int = 0,
    functional: str = "passed",
) -> Decision:
    """The decision for one measured test.

    `confirm_processes`: fresh processes that may confirm a measured regression (0: none,
    e.g. no confirmation queue in this run); `functional`: the outcome of the test's own
    assertions. A test that did not pass them is not judged: its record only gets its
    derived metrics.
    """
    add_derived(record)
    if functional != "passed":
        return Decision([])
    limits = effective_limits(marker_limits, options, record.metrics)
    processes = voting_processes(record, baseline, confirm_processes)
    verdicts = judge(record, limits, baseline.record, baseline.error, options, baseline.priors, processes)
    leak = find_leak(record)
    extra = [leak.as_verdict()] if leak is not None else []
    throttled = find_throttle(record)
    if throttled is not None:
        extra.append(throttled)
    held = suspects(record, verdicts) if processes > 1 else []
    return Decision(verdicts, held, extra, limits, baseline, options, processes)

"""A test's verdicts applied to its pytest report, and its result attached for the controller."""

from __future__ import annotations

import pytest

# pytest has no public constructor for a failure's representation; these dataclasses are the
# ones its own failures use and xdist's report serialisation reads, the same from pytest 8.0 to 9.2.
from _pytest._code.code import ReprEntryNative, ReprExceptionInfo, ReprFileLocation, ReprTraceback

from pytest_efficientllm.core.limits import Limit
from pytest_efficientllm.core.record import Record
from pytest_efficientllm.core.units import format_change
from pytest_efficientllm.glue.state import TestResult
from pytest_efficientllm.glue.worker import attach
from pytest_efficientllm.judging.verdicts import Verdict

# A marker on a test that measures nothing: its limits and protocol would apply to nothing.
UNMEASURED = (
    "the test does not request the `efficiency` fixture, so nothing is measured and the marker's "
    "limits are never checked: add `efficiency` to its arguments and measure with efficiency.measure(fn)"
)


def unmeasured_limits(limits: tuple[Limit, ...]) -> str:
    """The failure of a test whose marker declares limits but which measured nothing."""
    declared = ", ".join(f"{limit.metric} {limit.text}" for limit in limits)
    return (
        f"efficiency: the marker declares {declared}, but the test measured nothing, so they were not checked: "
        "measure its workload with efficiency.measure(fn), efficiency.generate(...) or efficiency.count(...)"
    )


# A collection error's headline, as an attribute of its report: reports carry extra attributes
# across xdist's wire, and `ShownCollectionErrors` makes it the message where the report is shown.
COLLECTION_HEADLINE = "efficiency_headline"


def _failure(path: str, lineno: int | None, text: str, message: str) -> ReprExceptionInfo:
    crash = ReprFileLocation(path, (lineno or 0) + 1, message)
    return ReprExceptionInfo(ReprTraceback([ReprEntryNative([text + "\n"])], None, "native"), crash)


def fail_report(report: pytest.TestReport, text: str) -> None:
    """Fail `report` with `text`, as pytest's own failure representation: printed as `text`,
    with its first line as the crash message that pytest puts in the short test summary
    (`FAILED <id> - <first line>`), in JUnit's `message` and in `--tb=line`. A plain string
    gives pytest 8 (the declared floor) no message there at all, `--tb=line` its first 50
    characters, and pytest 9 on CI the whole text. xdist carries it as it carries a traceback."""
    path, lineno, _ = report.location
    report.outcome = "failed"
    report.longrepr = _failure(path, lineno, text, text.splitlines()[0])


def fail_collection(report: pytest.CollectReport, problems: list[str]) -> None:
    """Fail a module's collection with its tests' marker problems, one a line. It stays a string
    until it is shown (`ShownCollectionErrors`): xdist reports a collection error once, by
    comparing the strings of its workers' reports."""
    report.outcome = "failed"
    report.longrepr = "\n".join(problems)
    report.result = []
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    setattr(report, COLLECTION_HEADLINE, problems[0] + more)


class ShownCollectionErrors:
    """Registered where collection errors are shown: a serial run, or xdist's controller once it
    has found its workers' copies of one error equal."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        """`fail_collection`'s error as pytest's own failure representation, its headline the
        crash message, before the terminal keeps it: pytest 8's short test summary then says why
        (`ERROR <module> - <headline>`), and pytest 9's says it in one line, not every problem."""
        headline = getattr(report, COLLECTION_HEADLINE, None)
        if headline and isinstance(report.longrepr, str):
            report.longrepr = _failure(report.fspath, None, report.longrepr, headline)


def headline(failed: list[Verdict]) -> str:
    """What failed, in one line.

    pytest's short test summary shows only a failure's first line (`fail_report`), so that
    line names each failing metric and how far it moved; the details follow it.
    """
    items = []
    for v in failed:
        if v.kind == "budget":
            items.append(f"{v.metric} {v.message}")
        elif v.change is not None:
            items.append(f"{v.metric} {format_change(v.change)}")
        else:
            # No change to show (a finding about the whole test, metric "*", or about the window).
            items.append(v.message if v.metric == "*" else v.render())
    return "efficiency: " + ", ".join(items)


def failure_text(failed: list[Verdict]) -> str:
    budgets = [v for v in failed if v.kind == "budget"]
    # A finding without a change stands whole in the headline; said again below, a corrupt
    # baseline file's message read twice in a row.
    others = [v for v in failed if v.kind != "budget" and v.change is not None]
    parts = [headline(failed)]
    if budgets:
        parts.append("efficiency budget exceeded:\n" + "\n".join("  " + v.render() for v in budgets))
    if others:
        parts.append("efficiency gate (against the baseline):\n" + "\n".join("  " + v.render() for v in others))
    return "\n".join(parts)


def settle(report: pytest.TestReport, record: Record, verdicts: list[Verdict], functional: str) -> None:
    """Apply the gate's verdicts to the test's call report and attach its result for the controller."""
    failed = [v for v in verdicts if v.failed]
    if failed:
        fail_report(report, failure_text(failed))
    notes = [v.render() for v in verdicts if v.status in ("warn", "improved")]
    if notes:
        report.sections.append(("efficiency", "\n".join(notes)))
    record.outcome = report.outcome
    record.verdicts = [v.to_dict() for v in verdicts]
    attach(report, TestResult(record, verdicts, functional))

"""What the terminal summary says of the findings: failures with their numbers, the rest counted.

What is said of many tests is said once: a fingerprint that differs from the baselines' in
fields other than the hardware's (`is_shared_fingerprint`) above the table, not as each row's
`warn`; warnings and improvements counted by kind (`finding_kind`), with each test's numbers
under `-v`. The verdicts themselves are unchanged: every one is in the run file.
"""

from __future__ import annotations

import statistics
from collections import Counter

from pytest_efficientllm.core.units import format_change
from pytest_efficientllm.glue.state import TestResult
from pytest_efficientllm.glue.summary_text import WIDTH, count_tests, short_ids, wrap
from pytest_efficientllm.judging.compare import times_compared
from pytest_efficientllm.judging.verdicts import FingerprintFinding, Verdict

VERBOSE_HINT = "-v shows each test's numbers; the run file (--efficiency-json) keeps every verdict"


def is_shared_fingerprint(v: Verdict) -> bool:
    """A fingerprint that differs from the baseline's in fields that do not make it other
    hardware (a kernel build, a package's patch version): a fact about the machine, shared by
    the run's tests, not a finding of one test. Other hardware (status error) stays the test's."""
    return v.reason == "fingerprint_differs" and v.status == "warn"


def own_verdicts(result: TestResult) -> list[Verdict]:
    """The test's own findings: its verdicts less the shared fingerprint difference."""
    return [v for v in result.verdicts if not is_shared_fingerprint(v)]


def _how_lines(found: list[tuple[bool, FingerprintFinding]], verbose: int) -> list[str]:
    """How each test's times were compared (`found`: on the CPU?, the finding): the calibration
    factors as one range unless -v."""
    hows = Counter(f.times for _, f in found if f.times)
    factors = [f.calibration for _, f in found if f.calibration is not None]
    calibrated = {f.times for _, f in found if f.calibration is not None}
    if verbose > 0 or len(calibrated) < 2:
        return [f"{how}: {count_tests(n)}" for how, n in sorted(hows.items(), key=lambda kv: (-kv[1], kv[0]))]
    on_cpu = next(cpu for cpu, f in found if f.calibration is not None)
    ranged = times_compared(on_cpu, True, f"x{min(factors):.3f} .. x{max(factors):.3f} the baselines'")
    rest = [(how, n) for how, n in hows.items() if how not in calibrated]
    lines = [f"{ranged}: {count_tests(len(factors))}"]
    return lines + [f"{how}: {count_tests(n)}" for how, n in sorted(rest, key=lambda kv: (-kv[1], kv[0]))]


def fingerprint_lines(results: list[TestResult], width: int = WIDTH, verbose: int = 0) -> list[str]:
    """The fingerprint differences shared by the run's tests, said once: which fields, how many
    tests, how their times were compared (each factor under -v; each test's in the run file)."""
    differing = [(r, v) for r in results for v in r.verdicts if is_shared_fingerprint(v)]
    if not differing:
        return []
    tests = len({r.record.nodeid for r, _ in differing})
    found = [(r.record.profile == "cpu", v.fingerprint) for r, v in differing if v.fingerprint is not None]
    fields: Counter[str] = Counter()
    for _, f in found:
        fields.update(set(f.differs))
    of = f"all {tests}" if tests == len(results) else f"{tests} of {len(results)}"
    lines = wrap(f"fingerprint differs from the baselines' in {of} tests (said here once, not in each row):", "", width)
    for text, n in sorted(fields.items(), key=lambda kv: (-kv[1], kv[0])):
        lines += wrap(text + (f" ({count_tests(n)})" if n != tests else ""), "  ", width)
    for line in _how_lines(found, verbose):
        lines += wrap(line, "  ", width)
    return lines


# What each kind of finding is called where the summary counts it (`Verdict.reason`).
REASON_TEXTS: dict[str, str] = {
    "over_budget": "over budget",
    "far_over_budget": "over budget 3x or more (beyond any slow spell: not re-measured)",
    "beyond_noise": "beyond tolerance and noise",
    "beyond_others": "beyond tolerance and noise against the other tests of its pairs",
    "one_value": "beyond tolerance (one value per run)",
    "too_few_rounds": "beyond tolerance but within noise (too few rounds to tell)",
    "counted_regression": "regression (counted)",
    "counted_better": "better than the baseline (counted)",
    "better": "better than the baseline",
    "other_cpu": "moved, computed on another CPU: not gated exactly",
    "source_differs": "not compared: the baseline's source differs",
    "leak": "grew across rounds: a leak",
    "leak_window_short": "grew across rounds: window too short to tell a leak",
    "world_size": "baseline at another world size: not compared",
    "vote_failed": "not confirmed: a fresh process could not vote",
    "vote_stopped": "not confirmed: the run stopped before fresh processes voted",
    "other_hardware": "baseline measured on other hardware",
    "fingerprint_differs": "fingerprint differs from the baseline's",
    "throttled": "in a window where the GPU throttled (its clocks limited)",
    "within_resolution": "beyond tolerance but within the energy counter's resolution",
    "within_noise": "beyond tolerance but within the noise",
}
# What let a failure through, added to its kind (`Verdict.softened`).
SOFTENED_TEXTS: dict[str, str] = {
    "gate_warn": "gate=warn: not failing",
    "baseline_replaced": "baseline being replaced",
    "vote_cleared": "not confirmed in fresh processes",
    "run_moved": "moved with the run as a whole: below the gross floor beyond it, warns only",
    "estimate": "an estimate never fails",
    "gross_floor": "below the gross floor of the default check: warns only",
    "pairs_cleared": "not confirmed in more pairs",
}


def finding_kind(v: Verdict, unit: str = "") -> str:
    """What a warning or an improvement is, without its numbers: the line it is counted under.
    `unit`: the metric's, so that a time that improved reads "faster".

    A finding with no `reason` is grouped by its whole text (only identical ones together)."""
    if not v.reason:
        return v.render()
    said = REASON_TEXTS[v.reason]
    if v.reason == "better" and unit == "s":
        said = "faster than the baseline"
    text = said if v.metric == "*" else f"{v.metric} {said}"
    return f"{text} ({SOFTENED_TEXTS[v.softened]})" if v.softened else text


def _spread(items: list[tuple[TestResult, Verdict]]) -> str:
    # The changes behind one kind of finding tell a shifted machine (every test about as much
    # slower) from a shifted test (one far out), without -v.
    changes = sorted(v.change for _, v in items if v.change is not None)
    if not changes or len(changes) != len(items):
        return ""
    if len(changes) == 1:
        return f" ({format_change(changes[0])})"
    if changes[0] == changes[-1]:
        return f" ({format_change(changes[0])} each)"
    median = statistics.median(changes)
    return f" ({format_change(changes[0])} .. {format_change(changes[-1])}, median {format_change(median)})"


def _grouped(title: str, found: list[tuple[TestResult, Verdict]], width: int, verbose: int) -> list[str]:
    """One line per kind of finding with how many tests have it; each test's under -v."""
    if not found:
        return []
    kinds: dict[str, list[tuple[TestResult, Verdict]]] = {}
    for r, v in found:
        recorded = r.record.metrics.get(v.metric)
        kinds.setdefault(finding_kind(v, recorded.unit if recorded else ""), []).append((r, v))
    tests = len({r.record.nodeid for r, _ in found})
    lines = wrap(f"{title} ({count_tests(tests)}):", "", width)
    for kind, items in sorted(kinds.items(), key=lambda kv: (-len({r.record.nodeid for r, _ in kv[1]}), kv[0])):
        lines += wrap(f"{kind}: {count_tests(len({r.record.nodeid for r, _ in items}))}{_spread(items)}", "  ", width)
        if verbose > 0:
            names = short_ids([r.record.nodeid for r, _ in items], 60)
            for r, v in sorted(items, key=lambda rv: rv[0].record.nodeid):
                lines += wrap(f"{names[r.record.nodeid]}: {v.message}", "    ", width)
    return lines


# Fewer tests compared than this say nothing about the run as a whole.
_RUN_WIDE_MIN = 5


def _measured(result: TestResult, metric: str) -> bool:
    recorded = result.record.metrics.get(metric)
    return recorded is not None and recorded.source == "measured"


def _run_wide(results: list[TestResult], found: list[tuple[TestResult, Verdict]], width: int) -> list[str]:
    """For each measured metric a warning or improvement compared with its baseline, the median
    change over every test compared on it, those that passed too: near the warned tests' own
    median, the whole run moved (the machine); far from it, the warned tests did. Counted
    metrics (bytes, FLOPs) are left out: a machine does not move them, so a run-wide median of
    theirs says nothing the warnings do not."""
    lines = []
    for metric in sorted({v.metric for _, v in found if v.kind == "baseline" and v.change is not None}):
        changes = [
            v.change
            for r in results
            for v in r.verdicts
            if v.metric == metric and v.kind == "baseline" and v.change is not None and _measured(r, metric)
        ]
        if len(changes) >= _RUN_WIDE_MIN:
            lines += wrap(
                f"the run as a whole: {metric} {format_change(statistics.median(changes))}, the median over "
                f"all {len(changes)} tests compared (passed ones too); a test far beyond that moved on its own",
                "",
                width,
            )
    return lines


def details(results: list[TestResult], width: int = WIDTH, verbose: int = 0) -> list[str]:
    """Failing tests with each broken budget or tolerance and its numbers; warnings and
    improvements counted by kind, each test's numbers under -v (`verbose` > 0)."""
    lines: list[str] = []
    for r in sorted(results, key=lambda r: r.record.nodeid):
        failed = [v for v in r.verdicts if v.failed]
        if failed:
            lines += wrap(f"FAILED {r.record.nodeid}", "", width)
            for v in failed:
                lines += wrap(v.render(), "    ", width)
    ordered = sorted(results, key=lambda r: r.record.nodeid)
    warned = [(r, v) for r in ordered for v in own_verdicts(r) if v.status == "warn"]
    improved = [(r, v) for r in ordered for v in r.verdicts if v.status == "improved"]
    lines += _grouped("warnings", warned, width, verbose)
    lines += _grouped("improved, refresh with --update-baselines", improved, width, verbose)
    lines += _run_wide(results, warned + improved, width)
    if (warned or improved) and verbose <= 0:
        lines += wrap(f"({VERBOSE_HINT})", "", width)
    return lines

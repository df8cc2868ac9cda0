"""`pytest-efficientllm ab BASE HEAD [pytest args...]`: both versions measured in alternating fresh
processes on this machine, and HEAD judged against BASE on the pairs.

Exit status: 0 no regression; 1 a regression, a test that fails on one side only, or a side
that could not be measured (the verdict says incomplete); 2 bad input (an unknown revision,
a dirty work tree), naming what to fix.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from filelock import Timeout

from pytest_efficientllm.ab.revisions import Side, sides
from pytest_efficientllm.ab.runner import ProcessResult, run_process
from pytest_efficientllm.ab.schedule import BASE, HEAD, abba
from pytest_efficientllm.core.devices import machine_lock
from pytest_efficientllm.core.limits import Limit, record_limits
from pytest_efficientllm.judging.evaluate import suspects
from pytest_efficientllm.judging.paired import others_in_pairs, pair_ratios, paired_verdicts
from pytest_efficientllm.judging.verdicts import Verdict
from pytest_efficientllm.storage.runfile import Run, write_run

DEFAULT_PAIRS = 6
# Other tests the confirming pairs measure beside the suspects, the quickest ones: the control a
# suspect is judged against there as in the first pairs (`judging.paired.relative_change`).
CONTROL_TESTS = 8


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class TestVerdict:
    """One test's outcome of the comparison."""

    __test__ = False  # not a pytest test class, despite the name

    nodeid: str
    status: str  # compared | added | removed | failed on base | failed on head | skipped | incomplete | not measured
    verdicts: list[Verdict] = field(default_factory=list)
    note: str = ""
    # A suspect's verdicts in the confirming pairs, as they judged it (empty where it was not measured
    # again or they could not compare it): which rule found it there is data, not only prose.
    again: list[Verdict] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.status in ("failed on head", "incomplete") or any(v.failed for v in self.verdicts)


@dataclass
class Comparison:
    """The whole comparison: both sides, every test's verdict, what went wrong on the way."""

    base: Side
    head: Side
    pairs: int
    tests: list[TestVerdict]
    problems: list[str]
    seconds: float
    confirmed: list[str] = field(default_factory=list)  # the tests measured again in more pairs
    controls: list[str] = field(default_factory=list)  # the other tests measured beside them there

    @property
    def failed(self) -> bool:
        return bool(self.problems) or any(t.failed for t in self.tests)


def _outcome(results: list[ProcessResult], nodeid: str) -> str | None:
    seen = [r.outcomes[nodeid] for r in results if nodeid in r.outcomes]
    if not seen:
        return None
    if "failed" in seen:
        return "failed"
    return "skipped" if all(s == "skipped" for s in seen) else "passed"


def judge_tests(base: list[ProcessResult], head: list[ProcessResult], extra: Sequence[Limit] = ()) -> list[TestVerdict]:
    """Every test's verdict from the processes of both sides, in pair order."""
    ids = sorted({n for r in base + head for n in r.outcomes} | {n for r in base + head for n in r.records})
    heads = {r.pair: r.records for r in head}
    ratios = pair_ratios({r.pair: (r.records, heads[r.pair]) for r in base if r.pair in heads})
    out: list[TestVerdict] = []
    for nodeid in ids:
        b_out, h_out = _outcome(base, nodeid), _outcome(head, nodeid)
        if b_out is None and h_out is not None:
            out.append(TestVerdict(nodeid, "added", note="only on HEAD"))
            continue
        if h_out is None and b_out is not None:
            out.append(TestVerdict(nodeid, "removed", note="only on BASE"))
            continue
        if h_out == "failed":
            why = "fails on both sides" if b_out == "failed" else "its own assertions fail on HEAD, pass on BASE"
            out.append(TestVerdict(nodeid, "failed on head", note=why))
            continue
        if b_out == "failed":
            out.append(TestVerdict(nodeid, "failed on base", note="fails on BASE, passes on HEAD: not compared"))
            continue
        if h_out == "skipped" or b_out == "skipped":
            out.append(TestVerdict(nodeid, "skipped"))
            continue
        if not any(nodeid in r.records for r in base + head):
            out.append(TestVerdict(nodeid, "not measured"))
            continue
        pairs = sorted({r.pair for r in base} & {r.pair for r in head})
        complete = [
            p
            for p in pairs
            if any(r.pair == p and nodeid in r.records for r in base)
            and any(r.pair == p and nodeid in r.records for r in head)
        ]
        b_recs = [r.records[nodeid] for p in complete for r in base if r.pair == p]
        h_recs = [r.records[nodeid] for p in complete for r in head if r.pair == p]
        if not complete:
            out.append(TestVerdict(nodeid, "incomplete", note="no pair with a measurement on both sides"))
            continue
        limits = record_limits(h_recs[-1], extra)
        verdicts = paired_verdicts(b_recs, h_recs, limits, others_in_pairs(ratios, nodeid, complete))
        status = "compared" if len(complete) == len(pairs) else "incomplete"
        note = "" if status == "compared" else f"{len(complete)} of {len(pairs)} pairs complete"
        out.append(TestVerdict(nodeid, status, verdicts, note))
    return out


def measured_suspect(t: TestVerdict, head: list[ProcessResult]) -> bool:
    """Whether a compared test fails on measured metrics alone (a timing, a measured budget): more
    pairs can clear those, while a count, an assertion or a missing side fails it whatever they find.
    Which metrics those are is the gate's own rule for its vote (`judging.evaluate.suspects`)."""
    failing = {v.metric for v in t.verdicts if v.failed}
    record = next((r.records[t.nodeid] for r in head if t.nodeid in r.records), None)
    if t.status != "compared" or not failing or record is None:
        return False
    return failing <= set(suspects(record, t.verdicts))


def control_tests(tests: Sequence[TestVerdict], results: Sequence[ProcessResult], suspected: set[str]) -> list[str]:
    """The `CONTROL_TESTS` quickest compared tests that are not suspects and measured something (a
    test that only counts is no control of a time), by their median time over the processes
    (JUnit's), for the confirming pairs to measure beside the suspects."""
    measured = {
        nodeid
        for r in results
        for nodeid, record in r.records.items()
        if any(metric.source == "measured" for metric in record.metrics.values())
    }
    seconds: dict[str, list[float]] = {}
    for r in results:
        for nodeid, s in r.durations.items():
            seconds.setdefault(nodeid, []).append(s)
    candidates = [
        t.nodeid for t in tests if t.status == "compared" and t.nodeid not in suspected and t.nodeid in measured
    ]
    quickest = sorted(candidates, key=lambda n: (statistics.median(seconds.get(n) or [math.inf]), n))
    return quickest[:CONTROL_TESTS]


def after_more_pairs(t: TestVerdict, again: TestVerdict | None, pairs: int) -> TestVerdict:
    """A suspect's verdicts after `pairs` more pairs: each failing one stays failing only where the
    new pairs find it too; one they could not judge keeps this verdict, saying why."""
    judged = again.verdicts if again is not None and again.status == "compared" else []
    # By metric and kind: a metric can have both a budget and a tolerance.
    found = {(v.metric, v.kind): v for v in judged}
    why = "no result" if again is None else (again.note or again.status)
    out: list[Verdict] = []
    for v in t.verdicts:
        w = found.get((v.metric, v.kind))
        if not v.failed:
            out.append(v)
        elif w is None:
            out.append(replace(v, message=f"{v.message}; not measured again ({why}), so it stands"))
        elif w.failed:
            out.append(
                replace(v, message=f"{v.message}; confirmed in {pairs} more pairs: {w.message}", confirmed="more_pairs")
            )
        else:
            out.append(
                replace(
                    v,
                    status="warn",
                    message=f"{v.message}; not confirmed in {pairs} more pairs: {w.message}",
                    softened="pairs_cleared",
                )
            )
    note = t.note or f"measured again in {pairs} more pairs"
    return replace(t, verdicts=out, note=note, again=list(judged))


def _run_pairs(
    by_side: dict[str, Side],
    pairs: int,
    pytest_args: list[str],
    out_dir: Path,
    progress: Callable[[str], None],
    first: int = 0,
    what: str = "pair",
) -> tuple[dict[str, list[ProcessResult]], list[str]]:
    results: dict[str, list[ProcessResult]] = {BASE: [], HEAD: []}
    problems: list[str] = []
    for slot in abba(pairs):
        side = by_side[slot.side]
        progress(f"ab: {what} {slot.pair + 1}/{pairs}: {slot.side} ({side.spec})")
        result = run_process(side, first + slot.pair, pytest_args, out_dir)
        results[slot.side].append(result)
        if result.problem:
            problems.append(result.problem)
    return results, problems


def run_comparison(
    base_spec: str,
    head_spec: str,
    pytest_args: list[str],
    out_dir: Path,
    *,
    pairs: int = DEFAULT_PAIRS,
    extra_limits: Sequence[Limit] = (),
    allow_dirty: bool = False,
    confirm: bool = True,
    start: Path | None = None,
    progress: Callable[[str], None] = lambda line: None,
    waiting: Callable[[str], None] = _stderr,
) -> Comparison:
    """Measure BASE and HEAD in `pairs` ABBA pairs of fresh processes and judge the pairs.

    With `confirm`, a test that fails on measured metrics alone is measured again in `pairs`
    more pairs (beside `control_tests`, the rest deselected) and fails only if those find it
    too: as the gate's vote in fresh processes, a slow spell of the machine must strike twice to
    fail a pull request.
    """
    started = time.monotonic()
    # Absolute: each side's processes run in that side's own folder, where a relative path (the
    # default, `efficiency-ab`) named a folder that does not exist, and every process failed.
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    # One comparison at a time on a machine: each would measure beside the other's processes.
    lock = machine_lock("ab")
    try:
        held = lock.acquire(timeout=0)
    except Timeout:
        waiting(f"ab: waiting for another comparison on this machine to finish ({lock.lock_file})")
        held = lock.acquire()
        started = time.monotonic()
    with held, sides(base_spec, head_spec, start or Path.cwd(), allow_dirty, outputs=out_dir) as (base, head):
        by_side = {BASE: base, HEAD: head}
        results, problems = _run_pairs(by_side, pairs, pytest_args, out_dir, progress)
        tests = judge_tests(results[BASE], results[HEAD], extra_limits)
        suspected = {t.nodeid for t in tests if measured_suspect(t, results[HEAD])} if confirm else set()
        controls: list[str] = []
        if suspected:
            processes = results[BASE] + results[HEAD]
            seen = {n for r in processes for n in (*r.outcomes, *r.records)}
            controls = control_tests(tests, processes, suspected)
            kept = suspected | set(controls)
            # pytest deselects by prefix: `t.py::test_a` would take `t.py::test_ab` with it.
            others = [n for n in sorted(seen - kept) if not any(s.startswith(n) for s in kept)]
            args = [*pytest_args, *(f"--deselect={n}" for n in others)]
            more, also = _run_pairs(by_side, pairs, args, out_dir, progress, first=pairs, what="confirming pair")
            problems += also
            again = {t.nodeid: t for t in judge_tests(more[BASE], more[HEAD], extra_limits)}
            tests = [after_more_pairs(t, again.get(t.nodeid), pairs) if t.nodeid in suspected else t for t in tests]
            for name in results:
                results[name] += more[name]
        for name, side_results in results.items():
            records = [r for res in side_results for r in res.records.values()]
            run_info = {"profile": records[0].profile if records else "", "label": f"ab {name} {by_side[name].spec}"}
            run_info["commit"] = by_side[name].commit
            if records:
                write_run(out_dir / f"{name}.json", Run(records=records, runs=[run_info]))
        seconds = time.monotonic() - started
        return Comparison(base, head, pairs, tests, problems, seconds, sorted(suspected), sorted(controls))

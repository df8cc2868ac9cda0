"""Two run files, test by test, through the plugin's own comparison rules (`compare.compare_record`).

This module only pairs records and lays out the verdicts; it decides nothing about what
is a regression, so the command line and the pytest gate can never disagree. Each test is judged
by the limits its NEW record ran under (`limits.record_limits`: the marker's, ini and command
line, as the gate wrote them), a `--tolerance` on the same metric overriding its own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from pytest_efficientllm.core.limits import Limit, record_limits
from pytest_efficientllm.core.record import Record
from pytest_efficientllm.judging.compare import compare_record
from pytest_efficientllm.judging.verdicts import QUIET_STATUSES, STATUSES, Verdict
from pytest_efficientllm.storage.runfile import Run


@dataclass
class TestComparison:
    nodeid: str
    profile: str
    verdicts: list[Verdict] = field(default_factory=list)
    only_in: str = ""  # "old" or "new" when the test is on one side only

    @property
    def failed(self) -> bool:
        return any(v.failed for v in self.verdicts)


def pair(old: Run, new: Run) -> tuple[list[tuple[Record | None, Record | None]], list[Record]]:
    """(old, new) pairs by node id and profile, and the old records no new one matched.

    A test measured under another profile is still paired when its node id is unique on
    both sides, so the comparison rules can say "other hardware" instead of silently
    calling it a new test.
    """
    old_by_key = {(r.nodeid, r.profile): r for r in old.records}
    old_by_id: dict[str, list[Record]] = {}
    for r in old.records:
        old_by_id.setdefault(r.nodeid, []).append(r)
    new_ids = [r.nodeid for r in new.records]
    pairs: list[tuple[Record | None, Record | None]] = []
    used: set[int] = set()
    for record in new.records:
        base = old_by_key.get((record.nodeid, record.profile))
        if base is None and len(old_by_id.get(record.nodeid, [])) == 1 and new_ids.count(record.nodeid) == 1:
            base = old_by_id[record.nodeid][0]
        if base is not None:
            used.add(id(base))
        pairs.append((base, record))
    missing = [r for r in old.records if id(r) not in used]
    return pairs, missing


def compare_runs(old: Run, new: Run, limits: Iterable[Limit] = (), mode: str = "fail") -> list[TestComparison]:
    limits = tuple(limits)
    pairs, missing = pair(old, new)
    out = []
    for base, current in pairs:
        assert current is not None
        if base is None:
            out.append(TestComparison(current.nodeid, current.profile, only_in="new"))
        else:
            judged = compare_record(base, current, record_limits(current, limits), mode)
            out.append(TestComparison(current.nodeid, current.profile, judged))
    out += [TestComparison(r.nodeid, r.profile, only_in="old") for r in missing]
    return sorted(out, key=lambda c: (c.nodeid, c.profile))


def render_comparison(
    results: list[TestComparison], old_label: str, new_label: str, verbose: bool = False
) -> list[str]:
    """Per test, its findings (every verdict with `verbose`), then a tally and the regressions."""
    lines = []
    for result in results:
        body = []
        if result.only_in == "new":
            body.append(f"  new       only in {new_label}: no baseline to compare with")
        elif result.only_in == "old":
            body.append(f"  missing   only in {old_label}: not measured in {new_label}")
        elif not result.verdicts:
            body.append("  (no gated metric in common)")
        for v in result.verdicts:
            if verbose or v.status not in QUIET_STATUSES:
                body.append(f"  {v.status.upper() if v.failed else v.status:<9} {v.render()}")
        if body:
            lines += [f"{result.nodeid} [{result.profile}]", *body]
    compared = sum(1 for r in results if not r.only_in)
    tally: Counter[str] = Counter(str(v.status) for r in results for v in r.verdicts)
    counts = ", ".join(f"{tally[s]} {s}" for s in STATUSES if tally[s])
    hidden = sum(tally[s] for s in QUIET_STATUSES)
    more = (
        f"; -v lists the {hidden} {' and '.join(s for s in QUIET_STATUSES if tally[s])} too"
        if hidden and not verbose
        else ""
    )
    lines.append(f"verdicts: {counts or 'none'}{more}")
    failed = [(r, v) for r in results for v in r.verdicts if v.failed]
    if failed:
        lines.append(f"{len(failed)} regression(s) in {len({r.nodeid for r, _ in failed})} test(s):")
        lines += [f"  {r.nodeid} [{r.profile}] {v.metric}" for r, v in failed]
    else:
        lines.append(f"no regression: {compared} test(s) compared")
    return lines


# Verdict kinds that come from a comparison with a baseline; budget verdicts are the
# test's own and stay when a report is re-based on another baseline.
COMPARISON_KINDS = ("baseline", "source", "fingerprint", "store")


def with_baseline(run: Run, baseline: Run, limits: Iterable[Limit] = (), mode: str = "fail") -> Run:
    """A copy of `run` whose records carry verdicts against `baseline` (budget verdicts kept).

    Tests with no counterpart in `baseline` get a "new" verdict, as the plugin gives them.
    """
    limits = tuple(limits)
    pairs, _ = pair(baseline, run)
    records = []
    for base, current in pairs:
        assert current is not None
        copy = Record.from_dict(current.to_dict())
        kept = [v for v in copy.verdicts if v.get("kind", "budget") not in COMPARISON_KINDS]
        found = (
            compare_record(base, current, record_limits(current, limits), mode)
            if base is not None
            else [Verdict("*", "new", "no baseline for this test in the given baseline file", "baseline")]
        )
        copy.verdicts = kept + [v.to_dict() for v in found]
        records.append(copy)
    return Run(records=records, runs=list(run.runs))

"""What a comparison (`ab.command.Comparison`) leaves behind: the terminal summary, `ab.md` for a
pull request and `ab.json` with every verdict."""

from __future__ import annotations

import json
from pathlib import Path

from pytest_efficientllm.ab.command import Comparison, TestVerdict
from pytest_efficientllm.core.record import json_safe_verdict
from pytest_efficientllm.core.units import format_change
from pytest_efficientllm.judging.paired import INTERVAL
from pytest_efficientllm.judging.verdicts import Verdict


def _shown(v: Verdict) -> str:
    return f"{v.metric}: {v.message}"


def _change(v: Verdict) -> str:
    return f"{v.metric} {format_change(v.change or 0.0)}"


def _status(v: Verdict) -> str:
    return "pass, not resolved" if v.status == "pass" and v.unresolved is not None else v.status


def _vs_base(t: TestVerdict, with_status: bool, most: int | None = None) -> list[str]:
    """A test's comparisons worth showing (not passing, or moved at all: every timing does), at most
    `most` of them, then how many passed unchanged: a PR's table listed "allocated_bytes +0.0%
    (pass)" sixteen times a test."""
    compared = [v for v in t.verdicts if v.change is not None]
    moved = [v for v in compared if v.status != "pass" or v.change != 0]
    parts = [_change(v) + (f" ({_status(v)})" if with_status else "") for v in moved[:most]]
    if most is not None and len(moved) > most:
        parts.append(f"{len(moved) - most} more")
    same = len(compared) - len(moved)
    if same:
        parts.append(f"{same} metric{'s' if same != 1 else ''} unchanged")
    return parts


def unresolved_line(c: Comparison) -> str:
    """How many timings passed without ruling out a slowdown beyond their tolerance ("" if none):
    on a noisy machine a pass of a few pairs says little, and only this says so."""
    timed = [v for t in c.tests for v in t.verdicts if v.kind == "baseline" and v.interval is not None]
    unresolved = [v for v in timed if v.status == "pass" and v.unresolved is not None]
    if not unresolved:
        return ""
    return (
        f"not resolved: {len(unresolved)} of {len(timed)} timing comparisons passed, but their "
        f"{INTERVAL} reaches beyond their tolerance, so they do not rule out a slowdown that "
        f"large (ab.json has each interval); more pairs narrow the intervals (--pairs, now {c.pairs})"
    )


def _listed(c: Comparison) -> list[TestVerdict]:
    """The tests a summary shows one by one: not those that measure nothing. A selection of plain
    tests beside the measured ones gave a row each, 'not measured', to the terminal and the PR table."""
    return [t for t in c.tests if t.status != "not measured"]


def unmeasured_line(c: Comparison) -> str:
    """How many tests measured nothing on either side ("" if none), said once instead of a row each."""
    n = sum(t.status == "not measured" for t in c.tests)
    return (
        f"{n} test(s) measured nothing on either side, so nothing of theirs was compared (ab.json names them)"
        if n
        else ""
    )


def render_lines(c: Comparison) -> list[str]:
    """The terminal summary: one line per test that measured something, then the findings behind the failures."""
    b = f"{c.base.spec} ({c.base.commit[:10]})" if c.base.commit else c.base.spec
    h = f"{c.head.spec} ({c.head.commit[:10]})" if c.head.commit else c.head.spec
    # "HEAD HEAD (833fe85abb)" read as a typo where HEAD's spec is the word HEAD itself.
    head = h if c.head.spec == "HEAD" else f"HEAD {h}"
    lines = [f"efficiency ab: {head} vs base {b}, {c.pairs} ABBA pairs of fresh processes, {c.seconds:.0f} s"]
    for t in _listed(c):
        change = ", ".join(_vs_base(t, with_status=False, most=3))
        worst = "fail" if t.failed else ("improved" if any(v.status == "improved" for v in t.verdicts) else "ok")
        shown = t.status if t.status != "compared" else worst
        lines.append(
            f"  {shown:<15} {t.nodeid}"
            + (f"  vs base: {change}" if change else "")
            + (f"  ({t.note})" if t.note else "")
        )
        for v in t.verdicts:
            if v.failed or v.status in ("warn", "improved"):
                lines.append(f"      {v.status}: {_shown(v)}")
    unmeasured = unmeasured_line(c)
    if unmeasured:
        lines.append(f"  {'not measured':<15} {unmeasured}")
    for problem in c.problems:
        lines.append(f"  incomplete: {problem}")
    if c.confirmed:
        beside = f", beside {len(c.controls)} other test(s) as their control" if c.controls else ""
        lines.append(
            f"  measured again in {c.pairs} more pairs (failing on timings alone): {len(c.confirmed)} test(s){beside}"
        )
    unresolved = unresolved_line(c)
    if unresolved:
        lines.append(f"  {unresolved}")
    failed = sum(t.failed for t in c.tests)
    lines.append(f"efficiency ab: {failed} of {len(c.tests)} tests failed" + ("; incomplete" if c.problems else ""))
    return lines


def render_markdown(c: Comparison) -> str:
    """The comparison for a pull request (e.g. `$GITHUB_STEP_SUMMARY`)."""
    b = c.base.commit[:10] or c.base.spec
    h = c.head.commit[:10] or c.head.spec
    out = [
        f"### Efficiency: `{h}` vs base `{b}`",
        "",
        f"{c.pairs} ABBA pairs of fresh processes on one machine"
        + (f", {c.pairs} more for {len(c.confirmed)} test(s) failing on timings alone" if c.confirmed else "")
        + f"; {c.seconds:.0f} s.",
        "",
        "| test | verdict | vs base |",
        "|---|---|---|",
    ]
    for t in _listed(c):
        change = "<br>".join(_vs_base(t, with_status=True)) or t.note or "-"
        verdict = "**fail**" if t.failed else t.status if t.status != "compared" else "ok"
        out.append(f"| `{t.nodeid}` | {verdict} | {change} |")
    for line in (unmeasured_line(c), unresolved_line(c)):
        if line:
            out += ["", line[0].upper() + line[1:] + "."]
    if c.problems:
        out += ["", "**Incomplete:**", *[f"- {p}" for p in c.problems]]
    return "\n".join(out) + "\n"


def write_outputs(c: Comparison, out_dir: Path) -> None:
    """ab.md (for a pull request) and ab.json (every verdict) beside the sides' run files."""
    (out_dir / "ab.md").write_text(render_markdown(c), encoding="utf-8")
    data = {
        "base": {"spec": c.base.spec, "commit": c.base.commit},
        "head": {"spec": c.head.spec, "commit": c.head.commit},
        "pairs": c.pairs,
        "confirmed": c.confirmed,
        "controls": c.controls,
        "seconds": round(c.seconds, 1),
        "failed": c.failed,
        "problems": c.problems,
        "tests": [
            {
                "nodeid": t.nodeid,
                "status": t.status,
                "note": t.note,
                "verdicts": [json_safe_verdict(v.to_dict()) for v in t.verdicts],
                "confirming_verdicts": [json_safe_verdict(v.to_dict()) for v in t.again],
            }
            for t in c.tests
        ],
    }
    (out_dir / "ab.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")

"""The end-of-run terminal summary: one table, then what broke with its numbers.

Fits a 100-column CI log: the table's columns are fixed widths summing to `WIDTH`, and
detail lines are wrapped to it. Built only from plain data (records, verdicts, store
updates), in the process that holds all of them (the xdist controller, or the only one).
"""

from __future__ import annotations

import textwrap
from collections import Counter
from pathlib import Path

from pytest_efficientllm.core.record import Record
from pytest_efficientllm.core.units import format_bytes, format_seconds
from pytest_efficientllm.glue.state import RunState, TestResult
from pytest_efficientllm.judging.verdicts import Verdict
from pytest_efficientllm.measuring.process_layout import describe as describe_layout
from pytest_efficientllm.measuring.process_layout import is_fixed as is_fixed_layout
from pytest_efficientllm.measuring.session import EfficiencySession

WIDTH = 100
# (header, width) after the test column; the test column takes what is left.
COLUMNS = (("AL", 8), ("tok/s", 7), ("peak mem", 10), ("J/tok", 9), ("vs baseline", 17), ("verdict", 8))
KEY_METRICS = ("AL", "tokens_per_s", "peak_memory", "energy_per_token")
CHANGE_WIDTH = dict(COLUMNS)["vs baseline"]
SHORT_NAMES = {
    "peak_memory": "peak",
    "peak_memory_delta": "peak+",
    "tokens_per_s": "tok/s",
    "samples_per_s": "samples/s",
    "cpu_time_per_round": "cpu/round",
    "energy_per_token": "J/tok",
    "energy_per_sample": "J/sample",
    "energy_per_round": "J/round",
}
# Which finding the "verdict" column shows when a test has several: the worst.
SEVERITY = ("error", "fail", "warn", "improved", "new", "pass", "skipped")
MAX_LISTED = 20


def _compact(value: float) -> str:
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    if value and abs(value) < 0.01:
        return f"{value:.2e}"
    return f"{value:.3g}"


def _cell(record: Record, name: str) -> str:
    m = record.metrics.get(name)
    if m is None or m.value is None:
        return "-"
    if m.unit == "s":
        text = format_seconds(m.value)
    elif m.unit == "B":
        text = format_bytes(m.value)
    else:
        text = _compact(m.value)
    return text + ("~" if m.source == "estimated" else "")


def short_id(nodeid: str, width: int) -> str:
    """The test's file name (no folders) and the rest of its id; without the file, then cut in
    the middle, when too long (the function name and both ends of the parameters stay)."""
    path, sep, rest = nodeid.partition("::")
    text = path.rsplit("/", 1)[-1] + sep + rest
    if len(text) <= width:
        return text
    text = rest or text
    if len(text) <= width:
        return text
    head = max(4, width * 2 // 3)
    return text[:head] + "…" + text[-(width - head - 1) :]


def _change(verdicts: list[Verdict]) -> str:
    compared = [v for v in verdicts if v.change is not None]
    if not compared:
        return "-"
    # The worst finding's change, else the latency's, else the first one.
    compared.sort(key=lambda v: (SEVERITY.index(v.status), v.metric != "AL"))
    v = compared[0]
    assert v.change is not None  # compared holds only verdicts with a change
    change = f"{v.change * 100:+.1f}%"
    # The change must survive the column's width; the metric's name gives way first.
    name = SHORT_NAMES.get(v.metric, v.metric)[: CHANGE_WIDTH - len(change) - 1]
    return f"{name} {change}"


def _overall(result: TestResult) -> str:
    if result.functional != "passed":
        return result.functional
    if not result.verdicts:
        return "-"
    worst = min(result.verdicts, key=lambda v: SEVERITY.index(v.status)).status
    return worst.upper() if worst == "fail" else worst


def table(results: list[TestResult], width: int = WIDTH) -> list[str]:
    name_w = width - sum(w for _, w in COLUMNS) - len(COLUMNS)

    def row(cells: list[str]) -> str:
        out = f"{cells[0]:<{name_w}}"
        for (_, w), cell in zip(COLUMNS, cells[1:]):
            out += " " + f"{cell[:w]:>{w}}"
        return out.rstrip()

    lines = [row(["test"] + [h for h, _ in COLUMNS])]
    for r in sorted(results, key=lambda r: r.record.nodeid):
        cells = [short_id(r.record.nodeid, name_w)] + [_cell(r.record, m) for m in KEY_METRICS]
        lines.append(row(cells + [_change(r.verdicts), _overall(r)]))
    return lines


def _shown_path(path: Path) -> str:
    """Relative to the working directory when below it: shorter in a CI log."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _wrap(text: str, indent: str, width: int) -> list[str]:
    return textwrap.wrap(
        text, width=width, initial_indent=indent, subsequent_indent=indent + "  ", break_on_hyphens=False
    ) or [indent]


def details(results: list[TestResult], width: int = WIDTH) -> list[str]:
    """Failing tests with each broken budget or tolerance and its numbers; warnings counted once."""
    lines: list[str] = []
    for r in sorted(results, key=lambda r: r.record.nodeid):
        failed = [v for v in r.verdicts if v.failed]
        if failed:
            lines += _wrap(f"FAILED {r.record.nodeid}", "", width)
            for v in failed:
                lines += _wrap(v.render(), "    ", width)
    warnings = Counter(v.render() for r in results for v in r.verdicts if v.status == "warn")
    for text, count in sorted(warnings.items()):
        lines += _wrap(f"warning ({count} test{'s' if count > 1 else ''}): {text}", "", width)
    improved = [(r.record.nodeid, v) for r in results for v in r.verdicts if v.status == "improved"]
    for nodeid, v in improved:
        lines += _wrap(f"improved {short_id(nodeid, 60)}: {v.render()}", "", width)
    return lines


def _threads_line(session: EfficiencySession, state: RunState) -> str:
    if state.workers:
        threads = sorted({int(w.get("threads", 0)) for w in state.workers.values()})
        cores = max(int(w.get("cores", 0)) for w in state.workers.values())
        n = len(state.workers)
        shown = "/".join(str(t) for t in threads)
        line = (
            f"{n} xdist worker{'s' if n > 1 else ''} x {shown} torch thread(s) each "
            f"({cores} usable cores / {n} workers)"
        )
        devices = sorted({str(w["device"]) for w in state.workers.values() if w.get("device") is not None})
        if devices:
            line += f"; GPUs pinned per worker: {', '.join(devices)}"
        locked = sorted({str(w["locked_device"]) for w in state.workers.values() if w.get("locked_device") is not None})
        if locked:
            line += f"; GPU {', '.join(locked)} shared by workers: one measured test at a time (device lock)"
        return line
    recorded = {int(t) for r in state.results if (t := r.record.settings.get("threads")) is not None}
    shown = "/".join(str(t) for t in sorted(recorded)) if recorded else str(session.threads)
    return f"{shown} torch thread(s)"


def _layout_line(session: EfficiencySession) -> str:
    current = session.fingerprint.get("process_layout") or {}
    line = f"process layout: {describe_layout(current)}"
    if session.layout_problem:
        return line + f" (--efficiency-fixed-layout: {session.layout_problem})"
    if not is_fixed_layout(current):
        line += " (--efficiency-fixed-layout: steadier CPU times between runs)"
    return line


def _calibration_line(state: RunState) -> str:
    cals = list(state.calibrator.history) if state.calibrator else []
    dicts = [c.to_dict() for c in cals] + [c for w in state.workers.values() for c in w.get("calibrations", [])]
    if not dicts:
        return ""
    first = dicts[0]
    line = (
        f"calibration: {format_seconds(first['matmul_s'])} matmul, {format_seconds(first['copy_s'])} copy "
        f"({len(dicts)} measurement(s))"
    )
    return line


def _confirmation_line(results: list[TestResult]) -> str:
    """What confirming suspects in fresh processes cost this run (`confirm`), if anything."""
    confirmed = [r for r in results if "confirmation_s" in r.record.settings]
    if not confirmed:
        return ""
    processes = sum(len(r.record.confirmations) for r in confirmed)
    seconds = sum(float(r.record.settings["confirmation_s"]) for r in confirmed)
    failing = sum(r.gate_failed for r in confirmed)
    spacing = float(confirmed[0].record.settings.get("confirmation_spacing_s", 0.0))
    return (
        f"re-measured in fresh processes (--efficiency-confirm): {len(confirmed)} test(s), {processes} "
        f"process(es) started {spacing:g} s or more after the test's previous one, {seconds:.1f} s; "
        f"{failing} of them failing (a regression fails only where every process found it)"
    )


def _store_lines(state: RunState, width: int) -> list[str]:
    lines: list[str] = []
    for u in state.updates:
        if u.error:
            lines += _wrap(f"baselines NOT written: {u.error}", "", width)
            continue
        lines.append(
            f"baselines {_shown_path(u.path)}: {len(u.added)} added, {len(u.updated)} updated, "
            f"{len(u.unchanged)} unchanged, {u.kept} kept"
        )
        listed = [("+", n) for n in u.added] + [("~", n) for n in u.updated] + [("=", n) for n in u.unchanged]
        for mark, nodeid in listed[:MAX_LISTED]:
            lines.append(f"  {mark} {short_id(nodeid, width - 4)}")
        if len(listed) > MAX_LISTED:
            lines.append(f"  ... and {len(listed) - MAX_LISTED} more")
        for note in u.history_notes[:MAX_LISTED]:
            lines += _wrap(note, "  ! ", width)
        if len(u.history_notes) > MAX_LISTED:
            lines.append(f"  ... and {len(u.history_notes) - MAX_LISTED} more beyond their runs' bound")
    if state.options.update and not state.updates and not any("baselines" in p for p in state.problems):
        lines.append("baselines: nothing to write (no measured test passed its own assertions)")
    return lines


def summary_lines(session: EfficiencySession, state: RunState | None = None, width: int = WIDTH) -> list[str]:
    head = f"profile {session.profile}"
    if state is not None:
        head += f"; {_threads_line(session, state)}; gate {state.options.mode}"
        if state.options.strict:
            head += " (strict)"
    lines = _wrap(head, "", width)
    lines += _wrap("sources: " + "; ".join(f"{k}: {v}" for k, v in session.backend.sources.items()), "", width)
    for notice in session.notices:
        lines += _wrap(f"unavailable: {notice}", "", width)
    lines += _wrap(_layout_line(session), "", width)
    if state is None:
        return lines
    cal = _calibration_line(state)
    if cal:
        lines.append(cal)
    if state.results:
        lines += _wrap(f"baselines: {_shown_path(state.store.folder)}", "", width)
        lines += table(state.results, width)
        if any(m.source == "estimated" for r in state.results for m in r.record.metrics.values()):
            lines.append("~ = estimate (never gated)")
        lines += details(state.results, width)
        confirmation = _confirmation_line(state.results)
        if confirmation:
            lines += _wrap(confirmation, "", width)
    lines += _store_lines(state, width)
    for lost in state.lost_workers:
        lines += _wrap(
            f"worker {lost} went down: the test it was running has no record; the other workers' "
            "results are kept and written",
            "",
            width,
        )
    if state.lost_workers and state.unreported:
        lines += _wrap(
            f"no result for {len(state.unreported)} test(s) that started on a worker that went down "
            "(held for confirmation in fresh processes): " + ", ".join(state.unreported),
            "",
            width,
        )
    for problem in state.problems:
        lines += _wrap(problem, "", width)
    if state.json_written:
        lines.append(state.json_written)
    return lines

"""The end-of-run terminal summary: the run's setup, the table, what broke, what was written.

Fits a 100-column CI log (`summary_text`): the table (`summary_table`), then the failures and
the findings counted by kind (`summary_findings`), around the lines of this module about the
run itself: threads, process layout, calibration, fresh-process votes, the plugin's own CPU,
the baselines written. Built only from plain data (records, verdicts, store updates), in the
process that holds all of them (the xdist controller, or the only one).
"""

from __future__ import annotations

from pytest_efficientllm.core.units import format_seconds
from pytest_efficientllm.glue.state import RunState, TestResult
from pytest_efficientllm.glue.summary_findings import (
    details,
    fingerprint_lines,
    is_shared_fingerprint,
)
from pytest_efficientllm.glue.summary_table import memory_legend, table
from pytest_efficientllm.glue.summary_text import WIDTH, count_tests, short_ids, shown_path, wrap
from pytest_efficientllm.judging.fingerprint import CPU_KEYS
from pytest_efficientllm.judging.run_noise import MIN_RUNS
from pytest_efficientllm.measuring.process_layout import describe as describe_layout
from pytest_efficientllm.measuring.process_layout import is_fixed as is_fixed_layout
from pytest_efficientllm.measuring.session import EfficiencySession

MAX_LISTED = 20


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
    # What the vote found, read from the verdicts it settled: a re-measured test can fail on a count
    # whatever the vote found, so whether the test failed does not say it.
    found_in = [any(v.confirmed == "fresh_processes" for v in r.verdicts) for r in confirmed]
    found = sum(found_in)
    cleared = sum(
        not was_found and any(v.softened == "vote_cleared" for v in r.verdicts)
        for r, was_found in zip(confirmed, found_in)
    )
    # Confirmed by every process, then warned: the run's own drift explained them (`gross.apart_from_run`).
    with_run = sum(any(v.softened == "run_moved" for v in r.verdicts) for r in confirmed)
    spacing = float(confirmed[0].record.settings.get("confirmation_spacing_s", 0.0))
    line = (
        f"re-measured in fresh processes (--efficiency-confirm): {len(confirmed)} test(s), {processes} "
        f"process(es) started {spacing:g} s or more after the test's previous one, {seconds:.1f} s; "
        f"found by every process in {found} test(s), cleared by a process that did not find it in {cleared} "
        "(a measured regression fails only where every process found it)"
    )
    if with_run:
        line += (
            f"; {with_run} found by every process but warning only: the run as a whole slowed down "
            "enough to explain each reading"
        )
    return line


def telemetry_cost_line(results: list[TestResult]) -> str:
    """What the plugin's sampler threads cost the measured windows in CPU (`sampler_cpu_time`),
    against the workloads' own CPU (`cpu_time`, from which it was kept out); "" where unread."""
    own = work = 0.0
    for r in results:
        sampler, cpu = r.record.metrics.get("sampler_cpu_time"), r.record.metrics.get("cpu_time")
        if sampler is not None and sampler.value is not None and cpu is not None and cpu.value is not None:
            own, work = own + sampler.value, work + cpu.value
    if not work:
        return ""
    return (
        f"the plugin's sampler threads used {format_seconds(own)} of CPU in the measured windows, "
        f"{own / (own + work):.1%} of their CPU time (sampler_cpu_time; kept out of cpu_time)"
    )


def _few_runs_hint(runs: list[dict[str, int]]) -> str:
    """What to do when some tests' baselines hold fewer timed runs than the gate learns their
    run-to-run noise from ("" when none): the first recording had said nothing of it, and a
    test's one run cannot tell the machine's drift from a slowdown."""
    few = sorted(n for per_file in runs for n in per_file.values() if n < MIN_RUNS)
    if not few:
        return ""
    more = MIN_RUNS - few[0]
    return (
        f"{count_tests(len(few))} with {few[0] if few[0] == few[-1] else f'{few[0]} to {few[-1]}'} timed "
        f"run{'s' if few[-1] > 1 else ''} in the baselines: run --update-baselines {more} more "
        f"time{'s' if more > 1 else ''}; from {MIN_RUNS} runs of a test the gate tells a slowdown from this "
        "machine's run-to-run noise"
    )


def _baselines_line(state: RunState) -> str:
    own = state.store.own_folder()
    main = shown_path(state.store.folder)
    return f"baselines: {shown_path(own)} (this CPU's own), else {main}" if own else f"baselines: {main}"


def _own_baselines_hint(state: RunState) -> str:
    """Where a CPU with no baselines of its own was compared with another CPU's: how to record its own."""
    own = state.store.own
    if own is None or state.store.own_folder() is not None or state.options.update:
        return ""
    other_cpu = any(
        field.startswith(tuple(f"{key}:" for key in CPU_KEYS))
        for r in state.results
        for v in r.verdicts
        if is_shared_fingerprint(v)
        for field in (v.fingerprint.differs if v.fingerprint else ())
    )
    if not other_cpu:
        return ""
    return (
        "this CPU has no baselines of its own, so its tests were compared with another CPU's: "
        f"--update-baselines (3 runs or more) records them in {shown_path(own.folder)}, beside the others"
    )


def _store_lines(state: RunState, width: int) -> list[str]:
    lines: list[str] = []
    for u in state.updates:
        if u.error:
            lines += wrap(f"baselines NOT written: {u.error}", "", width)
            continue
        lines.append(
            f"baselines {shown_path(u.path)}: {len(u.added)} added, {len(u.updated)} updated, "
            f"{len(u.unchanged)} unchanged, {u.kept} kept"
        )
        listed = [("+", n) for n in u.added] + [("~", n) for n in u.updated] + [("=", n) for n in u.unchanged]
        names = short_ids([n for _, n in listed[:MAX_LISTED]], width - 4)
        for mark, nodeid in listed[:MAX_LISTED]:
            lines.append(f"  {mark} {names[nodeid]}")
        if len(listed) > MAX_LISTED:
            lines.append(f"  ... and {len(listed) - MAX_LISTED} more")
        for change, nodeids in sorted(u.restarted.items()):
            lines += wrap(
                f"{change} since their earlier runs: run history restarted for {count_tests(len(nodeids))}",
                "  ! ",
                width,
            )
        for note in u.history_notes[:MAX_LISTED]:
            lines += wrap(note, "  ! ", width)
        if len(u.history_notes) > MAX_LISTED:
            lines.append(f"  ... and {len(u.history_notes) - MAX_LISTED} more beyond their runs' bound")
    hint = _few_runs_hint([u.runs for u in state.updates if not u.error])
    if hint:
        lines += wrap(hint, "", width)
    if state.options.update and not state.updates and not any("baselines" in p for p in state.problems):
        lines.append("baselines: nothing to write (no measured test passed its own assertions)")
    return lines


def _run_measured(state: RunState) -> bool:
    """Whether the run measured, or meant to: its session opened, or a test's record came (or was lost)."""
    return state.session_opened or bool(state.results or state.lost_workers or state.unreported)


def has_something_to_say(state: RunState) -> bool:
    """Whether the run gives the efficiency section anything: one that measured nothing and asked
    nothing of the plugin (a project's other tests, the plugin installed beside them) gets none,
    and so does one that runs no test (`--collect-only`)."""
    return not state.settings.no_tests and (
        _run_measured(state) or bool(state.problems) or state.options.update or state.settings.json_path is not None
    )


def summary_lines(
    session: EfficiencySession, state: RunState | None = None, width: int = WIDTH, verbose: int = 0
) -> list[str]:
    """The efficiency section: the run's setup, the table, what broke; `verbose` is pytest's
    verbosity (`-v` lists each test under its kind of warning)."""
    head = f"profile {session.profile}"
    if state is not None:
        head += f"; {_threads_line(session, state)}; gate {state.options.mode}"
        if state.options.strict:
            head += " (strict)"
    lines = wrap(head, "", width)
    lines += wrap("sources: " + "; ".join(f"{k}: {v}" for k, v in session.backend.sources.items()), "", width)
    for notice in session.notices:
        lines += wrap(f"unavailable: {notice}", "", width)
    lines += wrap(_layout_line(session), "", width)
    if state is None:
        return lines
    cal = _calibration_line(state)
    if cal:
        lines.append(cal)
    if state.results:
        lines += wrap(_baselines_line(state), "", width)
        lines += fingerprint_lines(state.results, width, verbose)
        hint = _own_baselines_hint(state)
        if hint:
            lines += wrap(hint, "  ", width)
        lines += table(state.results, width)
        if any(m.source == "estimated" for r in state.results for m in r.record.metrics.values()):
            lines.append("~ = estimate (never gated)")
        legend = memory_legend(state.results)
        if legend:
            lines += wrap(legend, "", width)
        lines += details(state.results, width, verbose)
        for extra in (_confirmation_line(state.results), telemetry_cost_line(state.results)):
            if extra:
                lines += wrap(extra, "", width)
    lines += _store_lines(state, width)
    for lost in state.lost_workers:
        lines += wrap(
            f"worker {lost} went down: the test it was running has no record; the other workers' "
            "results are kept and written",
            "",
            width,
        )
    if state.lost_workers and state.unreported:
        lines += wrap(
            f"no result for {len(state.unreported)} test(s) that started on a worker that went down "
            "(held for confirmation in fresh processes): " + ", ".join(state.unreported),
            "",
            width,
        )
    return lines + _written_lines(state, width)


def _written_lines(state: RunState, width: int) -> list[str]:
    """What the run could not do, and what became of its run file."""
    lines: list[str] = []
    for problem in state.problems:
        lines += wrap(problem, "", width)
    if state.json_written:
        lines.append(state.json_written)
    return lines


def section_lines(state: RunState, width: int = WIDTH, verbose: int = 0) -> list[str]:
    """The efficiency section: in full (`summary_lines`) where the run measured, else only what
    became of the files it asked for. A run that measured nothing (`--efficiency-json` in a
    project's addopts, its plain tests run) opens no session (torch, NVML) to head a section."""
    if _run_measured(state):
        return summary_lines(state.session, state, width, verbose)
    return _store_lines(state, width) + _written_lines(state, width)

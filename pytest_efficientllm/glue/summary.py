"""The end-of-run terminal summary: one table, then what broke with its numbers.

Fits a 100-column CI log: the table's columns are fixed widths summing to `WIDTH`, and
detail lines are wrapped to it. Built only from plain data (records, verdicts, store
updates), in the process that holds all of them (the xdist controller, or the only one).

What is said of many tests is said once: a fingerprint that differs from the baselines' in
fields other than the hardware's (`is_shared_fingerprint`) above the table, not as each row's
`warn`; warnings and improvements counted by kind (`finding_kind`), with each test's numbers
under `-v`. The verdicts themselves are unchanged: every one is in the run file.
"""

from __future__ import annotations

import re
import statistics
import textwrap
from collections import Counter
from pathlib import Path

from pytest_efficientllm.core.record import Metric, Record
from pytest_efficientllm.core.units import format_change, format_seconds
from pytest_efficientllm.glue.state import RunState, TestResult
from pytest_efficientllm.judging.compare import default_measured
from pytest_efficientllm.judging.fingerprint import CPU_KEYS
from pytest_efficientllm.judging.gross import RUN_MOVED
from pytest_efficientllm.judging.run_noise import MIN_RUNS
from pytest_efficientllm.judging.verdicts import Verdict
from pytest_efficientllm.measuring.process_layout import describe as describe_layout
from pytest_efficientllm.measuring.process_layout import is_fixed as is_fixed_layout
from pytest_efficientllm.measuring.session import EfficiencySession

WIDTH = 100
# (header, width) after the test column; the test column takes what is left. The memory
# column is the workload's own (see `_memory`); the process RSS stays in the record.
COLUMNS = (("AL", 7), ("tok/s", 6), ("peak mem", 8), ("J/tok", 8), ("vs baseline", 16), ("verdict", 8))
# Beside them where any row has one, the first of these (one unit per column): how much a
# round reads and writes per byte of compute, else the bytes alone.
TRAFFIC_COLUMNS = (("arithmetic_intensity", "FLOP/B", 6), ("bytes_accessed", "B/round", 8))
CHANGE_WIDTH = dict(COLUMNS)["vs baseline"]
SHORT_NAMES = {
    "peak_memory": "peak",
    "peak_memory_delta": "peak+",
    "tensor_peak_bytes": "tensors",
    "bytes_accessed": "bytes",
    "arithmetic_intensity": "FLOP/B",
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
# How compare words a fingerprint that differs in fields other than the hardware's
# (`judging.compare`): shared by every test of a run, so said once above the table.
FINGERPRINT_DIFFERS = "fingerprint differs from the baseline's ("
_FIELD_SEP = re.compile(r"; (?=[\w.\-]+: )")
_FACTOR = re.compile(r"this machine x(\d+(?:\.\d+)?) the baseline's")
VERBOSE_HINT = "-v shows each test's numbers; the run file (--efficiency-json) keeps every verdict"


def _compact(value: float) -> str:
    """At most 7 characters: 3 significant digits with k/M/G, or a short exponent."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    if value and abs(value) < 0.01:
        mantissa, exponent = f"{value:.2e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return f"{value:.3g}"


def _short_bytes(value: float) -> str:
    """At most 8 characters: 3 significant digits and a binary prefix (1.46 GiB, 479 MiB)."""
    sign = "-" if value < 0 else ""
    value = abs(value)
    unit, factor = next(
        ((u, f) for u, f in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)) if value >= f),
        ("B", 1),
    )
    x = value / factor
    digits = 0 if x >= 100 or factor == 1 else 1 if x >= 10 else 2
    return f"{sign}{x:.{digits}f} {unit}"


def _format(m: Metric | None) -> str:
    if m is None or m.value is None:
        return "-"
    if m.unit == "s":
        text = format_seconds(m.value)
    elif m.unit == "B":
        text = _short_bytes(m.value)
    elif m.unit == "FLOP/B" and 0 < abs(m.value) < 0.01:
        text = "<0.01"
    else:
        text = _compact(m.value)
    return text + ("~" if m.source == "estimated" else "")


def _cell(record: Record, name: str) -> str:
    return _format(record.metrics.get(name))


# What the memory column can show, by where its number came from (`_memory`), for the legend.
MEMORY_SOURCES = {
    "tensors": "the workload's live tensors at their peak (tensor_peak_bytes)",
    "counted": "peak_memory as the test counted it",
    "allocator": "the GPU allocator's peak (peak_memory)",
}


def _memory(record: Record) -> tuple[Metric, str] | None:
    """What the memory column shows, and which of `MEMORY_SOURCES` it is: the workload's own
    high-water mark of live tensors (`tensor_peak_bytes`), else a `peak_memory` the test counted
    itself, else on a GPU the caching allocator's peak (`peak_memory` there is
    `max_memory_allocated`), else nothing: on the CPU the measured `peak_memory` is the whole
    process's resident set, about the same for every test of an interpreter."""
    tensors = record.metrics.get("tensor_peak_bytes")
    if tensors is not None and tensors.value is not None:
        return tensors, "tensors"
    peak = record.metrics.get("peak_memory")
    if peak is None or peak.value is None:
        return None
    if peak.source == "counted":
        return peak, "counted"
    if record.profile != "cpu" and "allocator" in peak.method:
        return peak, "allocator"
    return None


def _memory_legend(results: list[TestResult]) -> str:
    """What the memory column holds in this table, and that a resident set is never in it."""
    shown = [_memory(r.record) for r in results]
    used = {found[1] for found in shown if found is not None}
    text = ", else ".join(said for key, said in MEMORY_SOURCES.items() if key in used)
    text = f"peak mem = {text}" if text else ""
    hidden = any(
        found is None and (p := r.record.metrics.get("peak_memory")) is not None and p.value is not None
        for r, found in zip(results, shown)
    )
    if hidden:
        rss = (
            "'-' where only the process's resident set was recorded (peak_memory: the whole "
            "interpreter, about the same for every test; kept in the record)"
        )
        text = f"{text}; {rss}" if text else f"peak mem {rss}"
    return text


def _traffic(results: list[TestResult]) -> tuple[str, str, int] | None:
    """The traffic column this table has (metric, header, width): the first any row holds."""
    for name, header, width in TRAFFIC_COLUMNS:
        if any((m := r.record.metrics.get(name)) is not None and m.value is not None for r in results):
            return name, header, width
    return None


def _cut(text: str, width: int) -> str:
    """Cut in the middle: the function's start and the end of the parameters stay."""
    if len(text) <= width:
        return text
    head = max(4, width * 2 // 3)
    return text[:head] + "…" + text[-(width - head - 1) :]


def short_ids(nodeids: list[str], width: int) -> dict[str, str]:
    """Each test's id within `width`, named alike for all the tests of a file: with the file name
    (no folders) where every one of them fits so, else with the short file name (`attention::`, no
    `test_` or `.py`) and the rest cut in the middle where even that is too long. One row had read
    `test_moe.py::test_decode[dense]`, the next `moe::test_train_step[dense]`, and a long one had
    lost its file. Files of one name in different folders keep as many folders as tell them apart
    (`a/test_x.py`, `b/test_x.py`): the bare name had read the same for both."""
    by_file: dict[str, list[str]] = {}
    for nodeid in nodeids:
        by_file.setdefault(nodeid.partition("::")[0], []).append(nodeid)
    files = _distinct_names(list(by_file))
    out = {}
    for path, group in by_file.items():
        file = files[path]
        folders, _, base = file.rpartition("/")
        stem = (folders + "/" if folders else "") + (base.removesuffix(".py").removeprefix("test_") or base)
        rests = {n: n.partition("::")[2] for n in group}
        if all(len(f"{file}::{rest}") <= width for rest in rests.values()):
            out.update({n: f"{file}::{rest}" for n, rest in rests.items()})
            continue
        # The file's short name stays while the rest keeps room to be read.
        prefix = f"{stem}::" if width - len(stem) - 2 >= 16 else ""
        out.update({n: prefix + _cut(rest, width - len(prefix)) for n, rest in rests.items()})
    return out


def _distinct_names(paths: list[str]) -> dict[str, str]:
    """Each path by its fewest trailing parts that no other path ends with."""
    parts = {p: p.split("/") for p in paths}
    out = {}
    for path, mine in parts.items():
        n = 1
        while n < len(mine) and any(o != path and theirs[-n:] == mine[-n:] for o, theirs in parts.items()):
            n += 1
        out[path] = "/".join(mine[-n:])
    return out


def is_shared_fingerprint(v: Verdict) -> bool:
    """A fingerprint that differs from the baseline's in fields that do not make it other
    hardware (a kernel build, a package's patch version): a fact about the machine, shared by
    the run's tests, not a finding of one test. Other hardware (status error) stays the test's."""
    return v.kind == "fingerprint" and v.status == "warn" and v.message.startswith(FINGERPRINT_DIFFERS)


def own_verdicts(result: TestResult) -> list[Verdict]:
    """The test's own findings: its verdicts less the shared fingerprint difference."""
    return [v for v in result.verdicts if not is_shared_fingerprint(v)]


def _change(verdicts: list[Verdict], profile: str) -> str:
    compared = [v for v in verdicts if v.change is not None]
    if not compared:
        return "-"
    # The worst finding's change; among equals, the profile's default measured check (AL on a
    # GPU, cpu_time_per_round on the CPU), then one that moved: a passing row's counted metrics
    # read +0.0% by definition, while its time says how far this run sat from the baseline.
    measured = default_measured(profile)
    compared.sort(key=lambda v: (SEVERITY.index(v.status), v.metric not in measured, v.change == 0))
    v = compared[0]
    assert v.change is not None  # compared holds only verdicts with a change
    change = format_change(v.change)
    # The change must survive the column's width; the metric's name gives way first.
    name = SHORT_NAMES.get(v.metric, v.metric)[: CHANGE_WIDTH - len(change) - 1]
    return f"{name} {change}"


def _overall(result: TestResult) -> str:
    if result.functional != "passed":
        return result.functional
    own = own_verdicts(result)
    if not own:
        return "-"
    worst = min(own, key=lambda v: SEVERITY.index(v.status)).status
    return worst.upper() if worst == "fail" else worst


def table(results: list[TestResult], width: int = WIDTH) -> list[str]:
    traffic = _traffic(results)
    columns = list(COLUMNS)
    if traffic is not None:
        columns.insert(3, traffic[1:])  # after the memory it goes with
    name_w = width - sum(w for _, w in columns) - len(columns)

    def row(cells: list[str]) -> str:
        out = f"{cells[0]:<{name_w}}"
        for (_, w), cell in zip(columns, cells[1:]):
            out += " " + f"{cell[:w]:>{w}}"
        return out.rstrip()

    lines = [row(["test"] + [h for h, _ in columns])]
    names = short_ids([r.record.nodeid for r in results], name_w)
    for r in sorted(results, key=lambda r: r.record.nodeid):
        rec = r.record
        cells = [names[rec.nodeid], _cell(rec, "AL"), _cell(rec, "tokens_per_s")]
        memory = _memory(rec)
        cells.append(_format(memory[0] if memory is not None else None))
        if traffic is not None:
            cells.append(_cell(rec, traffic[0]))
        cells.append(_cell(rec, "energy_per_token"))
        lines.append(row(cells + [_change(r.verdicts, rec.profile), _overall(r)]))
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


def _tests(n: int) -> str:
    return f"{n} test{'s' if n != 1 else ''}"


def _fingerprint_parts(message: str) -> tuple[list[str], str]:
    """(the fields that differ, how times were compared) from a shared fingerprint verdict."""
    body = message[len(FINGERPRINT_DIFFERS) :]
    fields, sep, how = body.rpartition("); ")
    if not sep:
        return [body], ""
    return _FIELD_SEP.split(fields), how


def _how_lines(hows: Counter[str], verbose: int) -> list[str]:
    """How each test's times were compared: the calibration factors as one range unless -v."""
    factors = {how: float(m.group(1)) for how in hows if (m := _FACTOR.search(how))}
    if verbose > 0 or len(factors) < 2:
        return [f"{how}: {_tests(n)}" for how, n in sorted(hows.items(), key=lambda kv: (-kv[1], kv[0]))]
    lo, hi = min(factors.values()), max(factors.values())
    calibrated = sum(hows[h] for h in factors)
    some = next(iter(factors))
    ranged = _FACTOR.sub(f"this machine x{lo:.3f} .. x{hi:.3f} the baselines'", some)
    rest = [(how, n) for how, n in hows.items() if how not in factors]
    lines = [f"{ranged}: {_tests(calibrated)}"]
    return lines + [f"{how}: {_tests(n)}" for how, n in sorted(rest, key=lambda kv: (-kv[1], kv[0]))]


def fingerprint_lines(results: list[TestResult], width: int = WIDTH, verbose: int = 0) -> list[str]:
    """The fingerprint differences shared by the run's tests, said once: which fields, how many
    tests, how their times were compared (each factor under -v; each test's in the run file)."""
    differing = [(r, v) for r in results for v in r.verdicts if is_shared_fingerprint(v)]
    if not differing:
        return []
    tests = len({r.record.nodeid for r, _ in differing})
    fields: Counter[str] = Counter()
    hows: Counter[str] = Counter()
    for _, v in differing:
        changed, how = _fingerprint_parts(v.message)
        fields.update(set(changed))
        if how:
            hows[how] += 1
    of = f"all {tests}" if tests == len(results) else f"{tests} of {len(results)}"
    lines = _wrap(
        f"fingerprint differs from the baselines' in {of} tests (said here once, not in each row):", "", width
    )
    for text, n in sorted(fields.items(), key=lambda kv: (-kv[1], kv[0])):
        lines += _wrap(text + (f" ({_tests(n)})" if n != tests else ""), "  ", width)
    for line in _how_lines(hows, verbose):
        lines += _wrap(line, "  ", width)
    return lines


# Words appended to a failure that was let through (first match names the group's qualifier).
_QUALIFIERS = (
    ("[gate=warn: not failing]", "gate=warn: not failing"),
    ("[baseline being replaced]", "baseline being replaced"),
    ("a process passes, not failing", "not confirmed in fresh processes"),
    (RUN_MOVED, "moved with the run as a whole: below the gross floor beyond it, warns only"),
    ("(estimated: never fails)", "an estimate never fails"),
    ("an estimate never fails", "an estimate never fails"),
    ("(default check on the", "below the gross floor of the default check: warns only"),
)
# What the finding is (first match).
_REASONS = (
    ("cannot separate change from noise", "beyond tolerance but within noise (too few rounds to tell)"),
    ("over budget", "over budget"),
    ("beyond tolerance and noise", "beyond tolerance and noise"),
    ("beyond tolerance (one value per run", "beyond tolerance (one value per run)"),
    ("computed on another CPU", "moved, computed on another CPU: not gated exactly"),
    ("; counted, ", "regression (counted)"),
    ("not compared: baseline is", "not compared: the baseline's source differs"),
    ("a leak across rounds", "grew across rounds: a leak"),
    ("too short to tell a leak", "grew across rounds: window too short to tell a leak"),
    ("baseline taken at world_size", "baseline at another world size: not compared"),
    ("not confirmed: a fresh process", "not confirmed: a fresh process could not vote"),
    ("not confirmed: the run stopped", "not confirmed: the run stopped before fresh processes voted"),
    ("baseline was measured on other hardware", "baseline measured on other hardware"),
    ("the GPU limited its clocks during the window", "in a window where the GPU throttled (its clocks limited)"),
)


def finding_kind(v: Verdict) -> str:
    """What a warning or an improvement is, without its numbers: the line it is counted under.

    Findings this does not know are grouped by their whole text (only identical ones together)."""
    if v.status == "improved":
        word = "faster" if "faster by" in v.message else "better"
        return f"{v.metric} {word} than the baseline" + (" (counted)" if "; counted, " in v.message else "")
    reason = next((said for marker, said in _REASONS if marker in v.message), None)
    if reason is None:
        return v.render()
    qualifier = next((said for marker, said in _QUALIFIERS if marker in v.message), None)
    text = reason if v.metric == "*" else f"{v.metric} {reason}"
    return f"{text} ({qualifier})" if qualifier else text


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
        kinds.setdefault(finding_kind(v), []).append((r, v))
    tests = len({r.record.nodeid for r, _ in found})
    lines = _wrap(f"{title} ({_tests(tests)}):", "", width)
    for kind, items in sorted(kinds.items(), key=lambda kv: (-len({r.record.nodeid for r, _ in kv[1]}), kv[0])):
        lines += _wrap(f"{kind}: {_tests(len({r.record.nodeid for r, _ in items}))}{_spread(items)}", "  ", width)
        if verbose > 0:
            names = short_ids([r.record.nodeid for r, _ in items], 60)
            for r, v in sorted(items, key=lambda rv: rv[0].record.nodeid):
                lines += _wrap(f"{names[r.record.nodeid]}: {v.message}", "    ", width)
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
            lines += _wrap(
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
            lines += _wrap(f"FAILED {r.record.nodeid}", "", width)
            for v in failed:
                lines += _wrap(v.render(), "    ", width)
    ordered = sorted(results, key=lambda r: r.record.nodeid)
    warned = [(r, v) for r in ordered for v in own_verdicts(r) if v.status == "warn"]
    improved = [(r, v) for r in ordered for v in r.verdicts if v.status == "improved"]
    lines += _grouped("warnings", warned, width, verbose)
    lines += _grouped("improved, refresh with --update-baselines", improved, width, verbose)
    lines += _run_wide(results, warned + improved, width)
    if (warned or improved) and verbose <= 0:
        lines += _wrap(f"({VERBOSE_HINT})", "", width)
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
    # Confirmed by every process, then warned: the run's own drift explained them (`gross.apart_from_run`).
    with_run = sum(any(v.status == "warn" and RUN_MOVED in v.message for v in r.verdicts) for r in confirmed)
    spacing = float(confirmed[0].record.settings.get("confirmation_spacing_s", 0.0))
    line = (
        f"re-measured in fresh processes (--efficiency-confirm): {len(confirmed)} test(s), {processes} "
        f"process(es) started {spacing:g} s or more after the test's previous one, {seconds:.1f} s; "
        f"{failing} of them failing (a regression fails only where every process found it)"
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
        f"{_tests(len(few))} with {few[0] if few[0] == few[-1] else f'{few[0]} to {few[-1]}'} timed "
        f"run{'s' if few[-1] > 1 else ''} in the baselines: run --update-baselines {more} more "
        f"time{'s' if more > 1 else ''}; from {MIN_RUNS} runs of a test the gate tells a slowdown from this "
        "machine's run-to-run noise"
    )


def _baselines_line(state: RunState) -> str:
    own = state.store.own_folder()
    main = _shown_path(state.store.folder)
    return f"baselines: {_shown_path(own)} (this CPU's own), else {main}" if own else f"baselines: {main}"


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
        for field in _fingerprint_parts(v.message)[0]
    )
    if not other_cpu:
        return ""
    return (
        "this CPU model has no baselines of its own, so its tests were compared with another CPU's: "
        f"--update-baselines (3 runs or more) records them in {_shown_path(own.folder)}, beside the others"
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
        names = short_ids([n for _, n in listed[:MAX_LISTED]], width - 4)
        for mark, nodeid in listed[:MAX_LISTED]:
            lines.append(f"  {mark} {names[nodeid]}")
        if len(listed) > MAX_LISTED:
            lines.append(f"  ... and {len(listed) - MAX_LISTED} more")
        for change, nodeids in sorted(u.restarted.items()):
            lines += _wrap(
                f"{change} since their earlier runs: run history restarted for {_tests(len(nodeids))}", "  ! ", width
            )
        for note in u.history_notes[:MAX_LISTED]:
            lines += _wrap(note, "  ! ", width)
        if len(u.history_notes) > MAX_LISTED:
            lines.append(f"  ... and {len(u.history_notes) - MAX_LISTED} more beyond their runs' bound")
    hint = _few_runs_hint([u.runs for u in state.updates if not u.error])
    if hint:
        lines += _wrap(hint, "", width)
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
        lines += _wrap(_baselines_line(state), "", width)
        lines += fingerprint_lines(state.results, width, verbose)
        hint = _own_baselines_hint(state)
        if hint:
            lines += _wrap(hint, "  ", width)
        lines += table(state.results, width)
        if any(m.source == "estimated" for r in state.results for m in r.record.metrics.values()):
            lines.append("~ = estimate (never gated)")
        legend = _memory_legend(state.results)
        if legend:
            lines += _wrap(legend, "", width)
        lines += details(state.results, width, verbose)
        for extra in (_confirmation_line(state.results), telemetry_cost_line(state.results)):
            if extra:
                lines += _wrap(extra, "", width)
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
    return lines + _written_lines(state, width)


def _written_lines(state: RunState, width: int) -> list[str]:
    """What the run could not do, and what became of its run file."""
    lines: list[str] = []
    for problem in state.problems:
        lines += _wrap(problem, "", width)
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

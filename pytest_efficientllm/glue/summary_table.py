"""The terminal summary's table: one row per test, fixed-width columns summing to `WIDTH`.

AL, tokens/s, the workload's own peak memory (`memory_legend` says which peak), the traffic
column where any test has one, J/token, the change that matters most against the baseline, and
the test's worst finding. Built from plain data (`TestResult`s).
"""

from __future__ import annotations

from pytest_efficientllm.core.record import Metric, Record
from pytest_efficientllm.core.units import format_change, format_seconds
from pytest_efficientllm.glue.state import TestResult
from pytest_efficientllm.glue.summary_findings import own_verdicts
from pytest_efficientllm.glue.summary_text import WIDTH, short_ids
from pytest_efficientllm.judging.compare import default_measured
from pytest_efficientllm.judging.verdicts import Verdict

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


def memory_legend(results: list[TestResult]) -> str:
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

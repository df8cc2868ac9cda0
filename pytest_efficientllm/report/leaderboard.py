"""Leaderboard tables in the spirit of the EfficientLLM study: raw values with ranks per column.

Pure functions over records: `leaderboards(records)` groups them into one table per
hardware, axis and workload (ranks only mean something among rows doing the same work on
the same machine; workloads of one test share an unranked table), and `pareto_front(...)` is
the trade-off frontier used by the plots.
Renderers (Markdown, HTML) only lay out what these tables hold.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from pytest_efficientllm.core.metrics import lookup
from pytest_efficientllm.core.record import Metric, Record
from pytest_efficientllm.core.units import format_value
from pytest_efficientllm.report.axes import (
    AXIS_ORDER,
    axis_of,
    function_of,
    hardware_label,
    module_name,
    setting,
    technique_of,
)

# The study's leaderboard columns (docs/suites.md, "What the study reported"), and the
# better-founded measures we show beside them when any row has them. Quality columns
# (`quality:<name>`) come first, added per table from what its records hold.
PAPER_METRICS: tuple[str, ...] = ("AMU", "PCU", "AL", "AT", "AEC", "MCR")
BESIDE: dict[str, str] = {"AMU": "peak_memory", "PCU": "MFU", "AEC": "energy_per_token", "MCR": "size_ratio"}
# Beside AL where any row generated tokens (`efficiency.generate`): a decode's latency split as
# users of a serving stack read it, time to the first token and per token after it.
GENERATION: tuple[str, ...] = ("TTFT", "TPOT")
# Beside the measured AL: its roofline estimates (`measuring.roofline`), the run's GPU first,
# then each profile `--efficiency-roofline` named, when any row has them.
ROOFLINE = "roofline_time"
TEXT_COLUMNS: tuple[str, ...] = ("technique", "model", "scale")

# The workload of the table that holds, per hardware and axis, the tests alone in their workload (a
# test that is not parametrized, or one technique of a run narrowed by -k): a rank among one says
# nothing, so they share one table, unranked, one row per test.
ALONE = "tests alone in their workload, not ranked"

# Worst first: the gate column shows the worst verdict a record got.
STATUS_ORDER: tuple[str, ...] = ("error", "fail", "warn", "new", "improved", "pass", "skipped")


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    direction: str | None = None  # "lower"/"higher" for ranked metric columns
    description: str = ""


@dataclass(frozen=True)
class Cell:
    """One shown value. `note` is what a reader needs on hover: why n/a, or how it was estimated."""

    text: str
    value: float | None = None
    rank: int | None = None
    source: str = ""
    note: str = ""

    @property
    def estimated(self) -> bool:
        return self.source == "estimated"

    @property
    def available(self) -> bool:
        return self.text != "n/a"


@dataclass
class Row:
    record: Record
    cells: dict[str, Cell] = field(default_factory=dict)


@dataclass
class Leaderboard:
    hardware: str
    axis: str
    workload: str
    columns: list[Column]
    rows: list[Row]
    ranked: bool = True  # False for the table of tests alone in their workload (`ALONE`)
    model: str = ""  # the model its rows name, where the workload has tables of several models

    @property
    def title(self) -> str:
        model = f" · {self.model}" if self.model else ""
        return f"{self.axis} · {self.workload}{model} ({self.hardware})"


def display_value(value: float, unit: str) -> str:
    """`units.format_value`, except that a small non-zero fraction keeps its digits.

    format_value shows fractions to 0.1%; a CPU's MFU of 0.004% would read "0.0%" and
    rank as a tie with values ten times larger.
    """
    if unit == "fraction" and value != 0 and abs(value) < 1e-3:
        return f"{value * 100:.2g}%"
    return format_value(value, unit).strip()  # unitless values end in a space


def metric_cell(metric: Metric | None) -> Cell:
    if metric is None:
        return Cell("n/a", note="not recorded by this test")
    if metric.value is None:
        return Cell("n/a", source=metric.source, note=metric.note or "unavailable")
    text = display_value(metric.value, metric.unit)
    note = (
        metric.method
        if metric.source == "estimated"
        else f"{metric.source}: {metric.method}" + (f" ({metric.note})" if metric.note else "")
    )
    return Cell(text, value=metric.value, source=metric.source, note=note)


def row_names(records: Sequence[Record], ranked: bool = True) -> list[str]:
    """What the first column calls each row: the technique (the parametrize id), or in the unranked
    table the test (function and parameters); prefixed with the test module where two rows would
    read alike (the same workload in two modules)."""
    names = [technique_of(r.nodeid) if ranked else r.nodeid.split("::", 1)[-1] for r in records]
    if len(set(names)) == len(names):
        return names
    return [f"{module_name(r.nodeid)}: {name}" for r, name in zip(records, names)]


def text_cell(record: Record, key: str) -> Cell:
    value = setting(record, key)
    if value is None:
        return Cell("n/a", note=f"the record's settings do not name its {key}")
    return Cell(value)


def gate_cell(record: Record) -> Cell:
    statuses = [str(v.get("status", "")) for v in record.verdicts]
    if not statuses:
        return Cell("n/a", note="no verdicts recorded (no budgets or baseline for this test)")
    worst = min(statuses, key=lambda s: STATUS_ORDER.index(s) if s in STATUS_ORDER else len(STATUS_ORDER))
    note = "; ".join(f"{v.get('metric')}: {v.get('status')} {v.get('message', '')}".strip() for v in record.verdicts)
    return Cell(worst, note=note)


def competition_ranks(values: Sequence[float | None], direction: str) -> list[int | None]:
    """Rank 1 = best in `direction`; ties share a rank ("1224"); missing values get no rank."""
    sign = 1.0 if direction == "lower" else -1.0
    present = sorted(sign * v for v in values if v is not None)
    return [None if v is None else 1 + present.index(sign * v) for v in values]


def pareto_front(points: Sequence[tuple[float, float]], x_direction: str, y_direction: str) -> list[int]:
    """Indices of the non-dominated points, ordered by x.

    A point is dominated when another is at least as good on both axes and strictly
    better on one; equal points do not dominate each other, so both stay on the front.
    """
    sx = 1.0 if x_direction == "lower" else -1.0
    sy = 1.0 if y_direction == "lower" else -1.0
    norm = [(sx * x, sy * y) for x, y in points]
    front = []
    for i, (xi, yi) in enumerate(norm):
        dominated = any(xj <= xi and yj <= yi and (xj < xi or yj < yi) for j, (xj, yj) in enumerate(norm) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _metric_column(name: str, records: Sequence[Record]) -> Column:
    spec = lookup(name)
    direction = (
        spec.direction if spec else next((r.metrics[name].direction for r in records if name in r.metrics), "info")
    )
    description = spec.description if spec else next((r.metrics[name].method for r in records if name in r.metrics), "")
    arrow = {"lower": " ↓", "higher": " ↑"}.get(direction, "")
    if name.startswith("quality:"):
        title = name.split(":", 1)[1]
    elif name == ROOFLINE or name.startswith(ROOFLINE + ":"):
        title = "roofline" + (f" ({name.split(':', 1)[1]})" if ":" in name else "")
    else:
        title = name
    return Column(name, title + arrow, direction if direction in ("lower", "higher") else None, description)


def columns_for(records: Sequence[Record]) -> list[Column]:
    """Text columns (the technique, and the model and scale where a row names them), quality columns
    present, the study's six (always), and the extras some row has (beside AL its roofline estimates,
    and TTFT and TPOT where a row generated tokens)."""
    cols = [Column(k, k) for k in TEXT_COLUMNS if k == "technique" or any(setting(r, k) for r in records)]
    qualities = sorted({n for r in records for n in r.metrics if n.startswith("quality:")})
    cols += [_metric_column(n, records) for n in qualities]
    for name in PAPER_METRICS:
        cols.append(_metric_column(name, records))
        extra = BESIDE.get(name)
        if extra and any(extra in r.metrics for r in records):
            cols.append(_metric_column(extra, records))
        if name == "AL":
            cols += [_metric_column(n, records) for n in roofline_names(records)]
            cols += [_metric_column(n, records) for n in GENERATION if any(n in r.metrics for r in records)]
    cols.append(Column("gate", "gate", None, "worst verdict of the budget/baseline gate for this test"))
    return cols


def roofline_names(records: Sequence[Record]) -> list[str]:
    """The roofline estimates to show: `roofline_time:<profile>` (asked for by `--efficiency-roofline`)
    wherever a row has one, n/a with the reason included; `roofline_time` (the run's own GPU,
    recorded without being asked) only where a row has a value. The run's GPU first, then by name."""
    names = {n for r in records for n in r.metrics if n.startswith(ROOFLINE + ":")}
    if any(r.metrics[ROOFLINE].available for r in records if ROOFLINE in r.metrics):
        names.add(ROOFLINE)
    return sorted(names, key=lambda n: (n != ROOFLINE, n))


def build_table(
    hardware: str, axis: str, workload: str, records: Sequence[Record], ranked: bool = True, model: str = ""
) -> Leaderboard:
    columns = columns_for(records)
    if not ranked:
        columns = [
            Column(c.key, "test", None, "the test, by function and parameters") if c.key == "technique" else c
            for c in columns
        ]
    rows = []
    for record, name in zip(records, row_names(records, ranked)):
        cells: dict[str, Cell] = {}
        for col in columns:
            if col.key == "technique":
                cells[col.key] = Cell(name, note=record.nodeid)
            elif col.key in TEXT_COLUMNS:
                cells[col.key] = text_cell(record, col.key)
            elif col.key == "gate":
                cells[col.key] = gate_cell(record)
            else:
                cells[col.key] = metric_cell(record.metrics.get(col.key))
        rows.append(Row(record, cells))
    for col in columns:
        if col.direction is None or not ranked:
            continue
        ranks = competition_ranks([row.cells[col.key].value for row in rows], col.direction)
        for row, rank in zip(rows, ranks):
            cell = row.cells[col.key]
            row.cells[col.key] = Cell(cell.text, cell.value, rank, cell.source, cell.note)
    return Leaderboard(hardware, axis, workload, columns, rows, ranked, model)


def leaderboards(records: Sequence[Record]) -> list[Leaderboard]:
    """One table per (hardware, axis, workload, model where the rows name one), axes in the study's
    order, rows by node id; the workloads with one test each share one unranked table per hardware
    and axis (`ALONE`), last. Rows of one workload that name different models (the vision axis: a
    ViT, a DiT and a VLM each have a `test_train_step`) are not ranked together."""
    groups: dict[tuple[str, str, str, str], list[Record]] = {}
    for record in records:
        model = setting(record, "model") or ""
        key = (hardware_label(record), axis_of(record.nodeid), function_of(record.nodeid), model)
        groups.setdefault(key, []).append(record)
    for key in [k for k, rows in groups.items() if len(rows) == 1]:
        groups.setdefault((key[0], key[1], ALONE, ""), []).extend(groups.pop(key))
    # Rows by node id: records arrive in completion order under xdist, which differs run to run.
    for rows in groups.values():
        rows.sort(key=lambda r: r.nodeid)

    def order(key: tuple[str, str, str, str]) -> tuple[str, int, bool, str, str]:
        return (key[0], AXIS_ORDER.index(key[1]), key[2] == ALONE, key[2], key[3])

    # A title names the model only where the workload has tables of several models.
    models = Counter(key[:3] for key in groups)
    return [
        build_table(
            hw,
            axis,
            workload,
            groups[(hw, axis, workload, model)],
            workload != ALONE,
            model if models[(hw, axis, workload)] > 1 else "",
        )
        for hw, axis, workload, model in sorted(groups, key=order)
    ]


def primary_quality(records: Sequence[Record]) -> str | None:
    """The quality metric most records of a table carry (ties by name); None when none has one."""
    counts = Counter(n for r in records for n, m in r.metrics.items() if n.startswith("quality:") and m.available)
    if not counts:
        return None
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]

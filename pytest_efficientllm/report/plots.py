"""Trade-off plots (matplotlib, Agg, PNG bytes): memory vs latency, energy per token vs
quality, compression vs quality, each with its Pareto frontier marked.

Only records that hold both values are plotted; a plot that cannot be drawn says why
instead of drawing something empty. Estimates are hollow markers, named in the legend.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from pytest_efficientllm.core.record import Metric, Record
from pytest_efficientllm.report.axes import technique_of
from pytest_efficientllm.report.leaderboard import (
    Leaderboard,
    pareto_front,
    primary_quality,
)

# (canonical unit, display unit, factor to divide by) so axes read in familiar units.
_DISPLAY = {"B": ("MiB", 2**20), "s": ("ms", 1e-3), "fraction": ("%", 0.01)}


@dataclass(frozen=True)
class Plot:
    title: str
    png: bytes | None  # None when not drawn; `note` says why
    note: str = ""
    points: int = 0


def _axis_name(records: Sequence[Record], names: Sequence[str]) -> str | None:
    """The first of `names` that some record holds a value for (e.g. AMU, else peak_memory)."""
    for name in names:
        if any(name in r.metrics and r.metrics[name].value is not None for r in records):
            return name
    return None


def _label(metric: Metric) -> tuple[str, float]:
    unit, factor = _DISPLAY.get(metric.unit, (metric.unit, 1.0))
    arrow = {"lower": "lower is better", "higher": "higher is better"}.get(metric.direction, "")
    name = metric.name.split(":", 1)[-1]
    return f"{name} [{unit}] ({arrow})" if unit else f"{name} ({arrow})", factor


def scatter(title: str, records: Sequence[Record], x_name: str, y_name: str) -> Plot:
    pts = [
        (r, r.metrics[x_name], r.metrics[y_name])
        for r in records
        if x_name in r.metrics
        and y_name in r.metrics
        and r.metrics[x_name].value is not None
        and r.metrics[y_name].value is not None
    ]
    if not pts:
        return Plot(title, None, f"not drawn: no record holds both {x_name} and {y_name}")
    from matplotlib.figure import Figure  # imported here: only reports need matplotlib

    x_label, x_div = _label(pts[0][1])
    y_label, y_div = _label(pts[0][2])
    xs = [x.value / x_div for _, x, _ in pts]  # type: ignore[operator]
    ys = [y.value / y_div for _, _, y in pts]  # type: ignore[operator]
    front = pareto_front(list(zip(xs, ys)), pts[0][1].direction, pts[0][2].direction)

    fig = Figure(figsize=(5.6, 3.8), dpi=100, layout="constrained")
    ax = fig.subplots()
    estimated = [x.source == "estimated" or y.source == "estimated" for _, x, y in pts]
    for hollow, label in ((False, "measured/counted"), (True, "involves an estimate")):
        idx = [i for i, e in enumerate(estimated) if e == hollow]
        if idx:
            ax.scatter(
                [xs[i] for i in idx],
                [ys[i] for i in idx],
                s=36,
                label=label,
                facecolors="none" if hollow else "tab:blue",
                edgecolors="tab:blue",
            )
    ax.plot(
        [xs[i] for i in front],
        [ys[i] for i in front],
        "-",
        color="tab:red",
        lw=1.2,
        marker="o",
        mfc="none",
        ms=10,
        label="Pareto frontier",
    )
    for (record, _, _), x, y in zip(pts, xs, ys):
        ax.annotate(technique_of(record.nodeid), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(x_label, fontsize=8)
    ax.set_ylabel(y_label, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return Plot(title, buf.getvalue(), f"{len(pts)} of {len(records)} test(s) plotted", len(pts))


def tradeoff_plots(board: Leaderboard) -> list[Plot]:
    if not board.ranked:
        return []  # its rows do different work: no trade-off between them to draw
    records = [row.record for row in board.rows]
    quality = primary_quality(records)
    plots = []
    memory = _axis_name(records, ("AMU", "peak_memory")) or "AMU"
    plots.append(scatter(f"memory vs latency · {board.title}", records, "AL", memory))
    for title, x_names in (
        ("energy per token vs quality", ("energy_per_token", "energy_per_sample")),
        ("compression vs quality", ("size_ratio", "MCR")),
    ):
        x_name = _axis_name(records, x_names) or x_names[0]
        if quality is None:
            plots.append(Plot(f"{title} · {board.title}", None, "not drawn: no quality metric recorded"))
        else:
            plots.append(scatter(f"{title} · {board.title}", records, x_name, quality))
    return plots

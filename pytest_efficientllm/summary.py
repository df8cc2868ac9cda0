"""The end-of-run terminal summary: one table of key metrics, and missing sources said once."""

from __future__ import annotations

from .record import Record
from .session import EfficiencySession
from .units import format_value

KEY_METRICS = ("AL", "AT", "peak_memory", "AEC", "energy_per_token")


def _cell(record: Record, name: str) -> str:
    m = record.metrics.get(name)
    if m is None or m.value is None:
        return "-"
    text = format_value(m.value, m.unit)
    return text + ("~" if m.source == "estimated" else "")


def summary_lines(session: EfficiencySession, width: int = 100) -> list[str]:
    lines = [f"profile {session.profile}, {session.threads} torch thread(s); sources: "
             + "; ".join(f"{k}: {v}" for k, v in session.backend.sources.items())]
    lines += [f"unavailable: {n}" for n in session.notices]
    if session.records:
        header = ["test"] + list(KEY_METRICS)
        rows = [[r.nodeid.split("::", 1)[-1]] + [_cell(r, m) for m in KEY_METRICS] for r in session.records]
        name_w = max(12, width - 14 * len(KEY_METRICS))
        fmt = lambda cells: f"{cells[0][:name_w]:<{name_w}}" + "".join(f"{c:>14}" for c in cells[1:])  # noqa: E731
        lines.append(fmt(header))
        lines += [fmt(row) for row in rows]
        lines.append("~ = estimate (never gated)")
    return lines

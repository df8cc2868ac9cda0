"""Export for `github-action-benchmark`: its `customSmallerIsBetter` / `customBiggerIsBetter` JSON.

That action reads one tool per file: a JSON array of `{"name", "unit", "value", "range"?,
"extra"?}`, all better in the same direction. So a run exports as two arrays, lower-is-better
metrics and higher-is-better ones. Values stay in the catalog's canonical units (s, B, W,
tok/s) so a chart's history is comparable across runs. Unavailable values are left out (a
dashboard cannot chart "n/a"; `export_entries` returns them as `skipped` with the reason),
and estimates are named as such in both the name and `extra`.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_efficientllm.core.record import Metric, Record
from pytest_efficientllm.report.leaderboard import BESIDE, PAPER_METRICS

DEFAULT_METRICS: tuple[str, ...] = PAPER_METRICS + tuple(BESIDE.values()) + ("latency_p50", "TTFT", "TPOT")

TOOLS = {"lower": "customSmallerIsBetter", "higher": "customBiggerIsBetter"}


# A value an export leaves out: (test node id, metric, why it is unavailable).
LeftOut = tuple[str, str, str]


@dataclass
class Export:
    smaller: list[dict[str, Any]] = field(default_factory=list)  # customSmallerIsBetter
    bigger: list[dict[str, Any]] = field(default_factory=list)  # customBiggerIsBetter
    skipped: list[LeftOut] = field(default_factory=list)  # the values left out, and why


def left_out_lines(skipped: Sequence[LeftOut]) -> list[str]:
    """The values an export left out, one line per metric and reason: on a CPU every test lacks PCU
    for the same reason, which read as one line per test (61 for the suites)."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for nodeid, metric, why in skipped:
        grouped.setdefault((metric, why), []).append(nodeid)
    return [
        f"{metric} of {tests[0]}: {why}" if len(tests) == 1 else f"{metric} in {len(tests)} tests: {why}"
        for (metric, why), tests in grouped.items()
    ]


def wanted(name: str, metrics: Sequence[str] | None) -> bool:
    if metrics is None:
        return name in DEFAULT_METRICS or name.startswith("quality:")
    return name in metrics


def entry(record: Record, metric: Metric) -> dict[str, Any]:
    estimated = metric.source == "estimated"
    name = f"{record.nodeid} {metric.name} [{record.profile}]" + (" (estimated)" if estimated else "")
    out: dict[str, Any] = {"name": name, "unit": metric.unit, "value": metric.value}
    if len(metric.samples) >= 2:
        out["range"] = f"± {statistics.stdev(metric.samples):.4g}"
    extra = [f"source: {metric.source}", f"method: {metric.method}"]
    if len(metric.samples) >= 2:
        extra.append(f"rounds: {len(metric.samples)} (range = sample standard deviation)")
    if metric.note:
        extra.append(f"note: {metric.note}")
    out["extra"] = "\n".join(extra)
    return out


def export_entries(records: Sequence[Record], metrics: Sequence[str] | None = None) -> Export:
    result = Export()
    for record in sorted(records, key=lambda r: (r.nodeid, r.profile)):
        for name, metric in sorted(record.metrics.items()):
            if not wanted(name, metrics) or metric.direction not in TOOLS:
                continue
            if metric.value is None:
                result.skipped.append((record.nodeid, name, metric.note or "unavailable"))
                continue
            (result.smaller if metric.direction == "lower" else result.bigger).append(entry(record, metric))
    return result

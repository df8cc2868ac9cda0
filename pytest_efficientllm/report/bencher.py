"""Export for Bencher: its Bencher Metric Format (BMF) JSON, for teams that run a Bencher server.

BMF is one object: benchmark name -> measure -> {"value", "lower_value"?, "upper_value"?}
(`bencher run --adapter json --file bmf.json`). Here a benchmark is a test on one hardware
profile ("<node id> [<profile>]") and a measure is a metric, named as in the catalog (a
Measure's name may be 64 characters at most; an estimate's name says so). The value is in
the catalog's canonical unit; where the metric kept its rounds, lower and upper are their
minimum and maximum. Unavailable values are left out, as for github-action-benchmark.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pytest_efficientllm.core.record import Record
from pytest_efficientllm.report.export import LeftOut, wanted

MAX_MEASURE_NAME = 64


def measure_name(name: str, source: str) -> str:
    shown = f"{name} (estimated)" if source == "estimated" else name
    return shown[:MAX_MEASURE_NAME]


def bmf(records: Sequence[Record], metrics: Sequence[str] | None = None) -> tuple[dict[str, Any], list[LeftOut]]:
    """The BMF object of a run's records, and the values left out (test, metric, why)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    skipped: list[LeftOut] = []
    for record in sorted(records, key=lambda r: (r.nodeid, r.profile)):
        benchmark = f"{record.nodeid} [{record.profile}]"
        for name, metric in sorted(record.metrics.items()):
            if not wanted(name, metrics) or metric.direction == "info":
                continue
            if metric.value is None:
                skipped.append((record.nodeid, name, metric.note or "unavailable"))
                continue
            measure: dict[str, float] = {"value": float(metric.value)}
            if len(metric.samples) >= 2:
                measure["lower_value"] = float(min(metric.samples))
                measure["upper_value"] = float(max(metric.samples))
            out.setdefault(benchmark, {})[measure_name(name, metric.source)] = measure
    return out, skipped

"""Builders of `Record`s with chosen numbers, for tests of the comparison and storage layers.

Not a test double of any component: real `Record`/`Metric` objects, filled with values a
test picks so the expected verdict is known.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pytest_efficientllm.core.record import Metric, Record

FINGERPRINT: dict[str, Any] = {
    "profile": "cpu",
    "cpu_model": "Test CPU",
    "torch_threads": 1,
    "packages": {"torch": "2.13.0"},
    "calibration": {"index_s": 0.002},
}


def latency(median_s: float, n: int = 7, spread: float = 0.01, seed: int = 0, name: str = "AL") -> Metric:
    """A measured latency with `n` rounds scattered +-`spread` (relative) around `median_s`."""
    rng = np.random.default_rng(seed)
    samples = tuple(float(median_s * (1 + spread * x)) for x in rng.uniform(-1, 1, n))
    return Metric(
        name, float(np.mean(samples)), "s", "lower", "measured", "perf_counter_ns; test builder", samples=samples
    )


def counted(name: str, value: float, unit: str = "B", direction: str = "lower") -> Metric:
    return Metric(name, float(value), unit, direction, "counted", "counted by the test builder")  # type: ignore[arg-type]


def record(
    nodeid: str = "tests/test_x.py::test_a",
    *metrics: Metric,
    profile: str = "cpu",
    fingerprint: dict[str, Any] | None = None,
) -> Record:
    fp = {**FINGERPRINT, "packages": dict(FINGERPRINT["packages"]), "calibration": dict(FINGERPRINT["calibration"])}
    fp.update(fingerprint or {})
    return Record(
        nodeid=nodeid,
        profile=profile,
        metrics={m.name: m for m in metrics},
        fingerprint=fp,
        settings={"rounds": 7},
        created="2026-11-26T00:00:00+00:00",
    )

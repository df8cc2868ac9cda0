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


H100 = {**FINGERPRINT, "profile": "h100", "gpu_name": "NVIDIA H100 80GB HBM3"}


def energy_record(j_per_token: float, bound: float | None, net_j: float | None = None) -> Record:
    """An H100 record of energy per token (and net of idle), from a window whose NVML counter
    quantisation was `bound` (1/updates spanned; None: no window recorded)."""
    metrics = {"energy_per_token": Metric("energy_per_token", j_per_token, "J/tok", "lower", "measured", "NVML")}
    if net_j is not None:
        metrics["energy_per_token_net"] = Metric("energy_per_token_net", net_j, "J/tok", "lower", "measured", "NVML")
    settings = {"energy_window": {"quantisation_bound": bound, "updates_spanned": 1 / bound}} if bound else {}
    return Record("suites/test_x.py::test_decode", "h100", metrics, settings, dict(H100))

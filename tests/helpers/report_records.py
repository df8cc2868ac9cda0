"""Builders of the records the report and CLI tests share, as the plugin makes them on a CPU.

Not a test double of any component: real `Record`/`Metric`/`Run` objects, hand-made so that
every number is known and a rendered table can be checked cell by cell against them.
"""

from __future__ import annotations

from pytest_efficientllm.core.metrics import unavailable
from pytest_efficientllm.core.record import Metric, Record
from pytest_efficientllm.storage.runfile import Run

CPU_FP = {
    "cpu_model": "Test CPU 9000",
    "machine": "x86_64",
    "cpu_count": 2,
    "packages": {"torch": "2.13.0"},
    "python": "3.11.7",
    "torch_threads": 1,
}


def measured(name: str, value: float, unit: str, direction: str = "lower", samples: tuple[float, ...] = ()) -> Metric:
    return Metric(name, value, unit, direction, "measured", "test double: fixed value", samples=samples)  # type: ignore[arg-type]


def make_record(
    nodeid: str,
    *,
    al: float = 0.010,
    amu: float = 100 * 2**20,
    quality: float | None = 8.0,
    size_ratio: float | None = None,
    profile: str = "cpu",
    fingerprint: dict | None = None,
    verdicts: list[dict] | None = None,
    settings: dict | None = None,
) -> Record:
    """A CPU record as the plugin makes one: latency with rounds, AMU, estimated energy, no PCU."""
    record = Record(
        nodeid=nodeid,
        profile=profile,
        fingerprint=dict(fingerprint or CPU_FP),
        settings=dict(settings or {"model": "tiny-llama", "scale": "tiny"}),
        verdicts=list(verdicts or []),
    )
    record.add(measured("AL", al, "s", samples=(al * 0.99, al, al * 1.01)))
    record.add(measured("latency_p50", al, "s"))
    record.add(measured("AMU", amu, "B"))
    record.add(measured("peak_memory", amu * 1.5, "B"))
    record.add(measured("AT", 1000.0 / al, "tok/s", "higher"))
    record.add(unavailable("PCU", "measured", "NVML utilization.gpu", "no GPU: NVML not available"))
    record.add(Metric("AEC", 35.0, "W", "lower", "estimated", "estimate: CPU-seconds x 17.5 W per core"))
    record.add(
        Metric(
            "energy_per_token",
            35.0 * al / 1000,
            "J/tok",
            "lower",
            "estimated",
            "estimate: CPU-seconds x 17.5 W per core / tokens",
        )
    )
    if quality is not None:
        record.add(Metric("quality:ppl", quality, "", "lower", "counted", "perplexity on pydoc topics"))
    if size_ratio is not None:
        record.add(Metric("size_ratio", size_ratio, "x", "higher", "counted", "reference_bytes / storage_bytes"))
        record.add(Metric("MCR", size_ratio * 0.95, "x", "higher", "counted", "size_ratio x retention of ppl"))
    return record


def sample_run() -> Run:
    """Two axes, two workloads on one of them, a regression verdict, an estimate and n/a cells."""
    fail = [{"metric": "AL", "status": "fail", "message": "12 ms vs baseline 10 ms (+20%): slower", "kind": "baseline"}]
    records = [
        make_record("suites/test_attention.py::test_prefill[mha]", al=0.020, amu=300 * 2**20, quality=8.3),
        make_record(
            "suites/test_attention.py::test_prefill[gqa]", al=0.012, amu=200 * 2**20, quality=8.1, verdicts=fail
        ),
        make_record("suites/test_attention.py::test_prefill[mqa]", al=0.010, amu=150 * 2**20, quality=8.4),
        make_record("suites/test_attention.py::test_decode[gqa]", al=0.004, amu=200 * 2**20, quality=None),
        make_record(
            "suites/test_quantization.py::test_decode[int8]", al=0.008, amu=120 * 2**20, quality=9.0, size_ratio=2.0
        ),
        make_record(
            "suites/test_quantization.py::test_decode[int4]", al=0.007, amu=90 * 2**20, quality=9.6, size_ratio=3.8
        ),
    ]
    return Run(
        records=records,
        runs=[{"profile": "cpu", "fingerprint": CPU_FP, "started": "2026-01-01T00:00:00+00:00", "label": "sample"}],
    )

"""Leaderboard tables: rows per axis and workload, ranks per column, the Pareto frontier.

The record builders here are the test doubles the other report and CLI tests share:
hand-made records whose every number is known, so a rendered table can be checked cell
by cell against them.
"""

from __future__ import annotations

import pytest

from pytest_efficientllm.core.record import Metric, Record, unavailable
from pytest_efficientllm.report.axes import (
    axis_of,
    function_of,
    hardware_label,
    technique_of,
)
from pytest_efficientllm.report.leaderboard import (
    competition_ranks,
    leaderboards,
    pareto_front,
    primary_quality,
)
from pytest_efficientllm.storage.runfile import Run

CPU_FP = {"cpu_model": "Test CPU 9000", "machine": "x86_64", "cpu_count": 2,
          "packages": {"torch": "2.13.0"}, "python": "3.11.7", "torch_threads": 1}


def measured(name: str, value: float, unit: str, direction: str = "lower", samples: tuple[float, ...] = ()) -> Metric:
    return Metric(name, value, unit, direction, "measured", "test double: fixed value", samples=samples)  # type: ignore[arg-type]


def make_record(nodeid: str, *, al: float = 0.010, amu: float = 100 * 2**20, quality: float | None = 8.0,
                size_ratio: float | None = None, profile: str = "cpu", fingerprint: dict | None = None,
                verdicts: list[dict] | None = None, settings: dict | None = None) -> Record:
    """A CPU record as the plugin makes one: latency with rounds, AMU, estimated energy, no PCU."""
    record = Record(nodeid=nodeid, profile=profile, fingerprint=dict(fingerprint or CPU_FP),
                    settings=dict(settings or {"model": "tiny-llama", "scale": "tiny"}),
                    verdicts=list(verdicts or []))
    record.add(measured("AL", al, "s", samples=(al * 0.99, al, al * 1.01)))
    record.add(measured("latency_p50", al, "s"))
    record.add(measured("AMU", amu, "B"))
    record.add(measured("peak_memory", amu * 1.5, "B"))
    record.add(measured("AT", 1000.0 / al, "tok/s", "higher"))
    record.add(unavailable("PCU", "fraction", "higher", "measured", "NVML utilization.gpu", "no GPU: NVML not available"))
    record.add(Metric("AEC", 35.0, "W", "lower", "estimated", "estimate: CPU-seconds x 17.5 W per core"))
    record.add(Metric("energy_per_token", 35.0 * al / 1000, "J/tok", "lower", "estimated",
                      "estimate: CPU-seconds x 17.5 W per core / tokens"))
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
        make_record("suites/test_attention.py::test_prefill[gqa]", al=0.012, amu=200 * 2**20, quality=8.1, verdicts=fail),
        make_record("suites/test_attention.py::test_prefill[mqa]", al=0.010, amu=150 * 2**20, quality=8.4),
        make_record("suites/test_attention.py::test_decode[gqa]", al=0.004, amu=200 * 2**20, quality=None),
        make_record("suites/test_quantization.py::test_decode[int8]", al=0.008, amu=120 * 2**20, quality=9.0, size_ratio=2.0),
        make_record("suites/test_quantization.py::test_decode[int4]", al=0.007, amu=90 * 2**20, quality=9.6, size_ratio=3.8),
    ]
    return Run(records=records, runs=[{"profile": "cpu", "fingerprint": CPU_FP, "started": "2026-01-01T00:00:00+00:00",
                                       "label": "sample"}])


@pytest.mark.parametrize("nodeid, axis", [
    ("suites/test_attention.py::test_prefill[gqa]", "attention / MoE"),
    ("suites/test_moe.py::test_step[moe]", "attention / MoE"),
    ("suites/test_finetune.py::test_step[lora]", "PEFT"),
    ("suites/test_quantization.py::test_decode[int4]", "quantization"),
    ("suites/test_vision_dit.py::test_step[gqa]", "vision"),
    ("suites/test_vlm.py::test_step[lora]", "vision"),
    ("tests/test_plugin.py::test_something", "other"),
])
def test_axis_comes_from_the_module_name(nodeid: str, axis: str) -> None:
    assert axis_of(nodeid) == axis


def test_technique_is_the_parametrize_id_and_workload_the_function() -> None:
    assert technique_of("suites/test_attention.py::test_prefill[gqa-tiny]") == "gqa-tiny"
    assert function_of("suites/test_attention.py::TestX::test_prefill[gqa-tiny]") == "TestX::test_prefill"
    assert technique_of("suites/test_attention.py::test_prefill") == "test_prefill"


def test_ranks_follow_the_direction_ties_share_and_missing_get_none() -> None:
    assert competition_ranks([3.0, 1.0, None, 1.0, 2.0], "lower") == [4, 1, None, 1, 3]
    assert competition_ranks([3.0, 1.0, None, 2.0], "higher") == [1, 3, None, 2]


def test_pareto_front_keeps_exactly_the_non_dominated_points() -> None:
    # (latency, memory), both lower-is-better: (3,3) is dominated by (2,2); (4,1) and (1,4) trade off.
    points = [(1.0, 4.0), (2.0, 2.0), (3.0, 3.0), (4.0, 1.0), (2.0, 2.0)]
    assert pareto_front(points, "lower", "lower") == [0, 1, 4, 3]
    # Higher-is-better on y flips which points are dominated.
    assert pareto_front([(1.0, 1.0), (2.0, 5.0), (3.0, 4.0)], "lower", "higher") == [0, 1]


def test_one_table_per_axis_and_workload_ranked_within_it() -> None:
    boards = leaderboards(sample_run().records)
    assert [(b.axis, b.workload) for b in boards] == [
        ("attention / MoE", "test_decode"), ("attention / MoE", "test_prefill"), ("quantization", "test_decode")]
    prefill = boards[1]
    al = {row.cells["technique"].text: row.cells["AL"].rank for row in prefill.rows}
    assert al == {"mha": 3, "gqa": 2, "mqa": 1}
    ppl = {row.cells["technique"].text: row.cells["quality:ppl"].rank for row in prefill.rows}
    assert ppl == {"gqa": 1, "mha": 2, "mqa": 3}
    row = prefill.rows[0]
    assert row.cells["PCU"].text == "n/a" and "NVML" in row.cells["PCU"].note and row.cells["PCU"].rank is None
    assert row.cells["AEC"].estimated and "estimate" in row.cells["AEC"].note
    assert {r.cells["technique"].text: r.cells["gate"].text for r in prefill.rows}["gqa"] == "fail"
    # Columns the quantization table has and the attention tables do not.
    keys = [c.key for c in boards[2].columns]
    assert "size_ratio" in keys and "MCR" in keys and "size_ratio" not in [c.key for c in prefill.columns]


def test_different_hardware_is_never_ranked_in_one_table() -> None:
    other = dict(CPU_FP, cpu_model="Other CPU")
    records = [make_record("suites/test_attention.py::test_prefill[gqa]"),
               make_record("suites/test_attention.py::test_prefill[mqa]", fingerprint=other)]
    boards = leaderboards(records)
    assert len(boards) == 2 and {b.hardware for b in boards} == {hardware_label(r) for r in records}


def test_primary_quality_is_the_one_most_records_carry() -> None:
    run = sample_run()
    assert primary_quality(run.records) == "quality:ppl"
    assert primary_quality([make_record("x.py::t", quality=None)]) is None


def test_small_fractions_keep_their_digits_and_rows_are_in_node_id_order() -> None:
    from pytest_efficientllm.report.leaderboard import display_value

    assert display_value(0.00004, "fraction") == "0.004%" and display_value(0.25, "fraction") == "25.0%"
    assert display_value(8.0, "") == "8"
    shuffled = list(reversed(sample_run().records))
    prefill = leaderboards(shuffled)[1]
    assert [row.cells["technique"].text for row in prefill.rows] == ["gqa", "mha", "mqa"]

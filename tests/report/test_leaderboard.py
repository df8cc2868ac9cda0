"""Leaderboard tables: rows per axis and workload, ranks per column, the Pareto frontier.

The records are built by `tests/helpers/report_records.py`, shared with the other report
and CLI tests: hand-made, every number known, so a table can be checked cell by cell.
"""

from __future__ import annotations

import pytest

from pytest_efficientllm.core.record import Record
from pytest_efficientllm.report.axes import (
    axis_of,
    function_of,
    hardware_label,
    technique_of,
)
from pytest_efficientllm.report.leaderboard import (
    ALONE,
    competition_ranks,
    leaderboards,
    pareto_front,
    primary_quality,
)
from pytest_efficientllm.report.plots import tradeoff_plots
from tests.helpers.report_records import CPU_FP, make_record, measured, sample_run


@pytest.mark.parametrize(
    "nodeid, axis",
    [
        ("suites/test_attention.py::test_prefill[gqa]", "attention / MoE"),
        ("suites/test_moe.py::test_step[moe]", "attention / MoE"),
        ("suites/test_finetune.py::test_step[lora]", "PEFT"),
        ("suites/test_quantization.py::test_decode[int4]", "quantization"),
        ("suites/test_vision_dit.py::test_step[gqa]", "vision"),
        ("suites/test_vlm.py::test_step[lora]", "vision"),
        ("tests/test_plugin.py::test_something", "other"),
    ],
)
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
    # A tie on one axis is decided by the other; equal points both stay.
    assert pareto_front([(1.0, 2.0), (1.0, 3.0), (2.0, 2.0), (1.0, 2.0)], "lower", "lower") == [0, 3]


def test_one_table_per_axis_and_workload_ranked_within_it() -> None:
    boards = leaderboards(sample_run().records)
    assert [(b.axis, b.workload) for b in boards] == [
        ("attention / MoE", "test_prefill"),
        ("attention / MoE", ALONE),  # test_decode ran one technique: nothing to rank it against
        ("quantization", "test_decode"),
    ]
    prefill = boards[0]
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
    records = [
        make_record("suites/test_attention.py::test_prefill[gqa]"),
        make_record("suites/test_attention.py::test_prefill[mqa]", fingerprint=other),
    ]
    boards = leaderboards(records)
    assert len(boards) == 2 and {b.hardware for b in boards} == {hardware_label(r) for r in records}


def test_one_cpu_model_with_and_without_avx512_is_two_machines() -> None:
    # "AMD EPYC" names both; the gate keeps their baselines apart (cpu@amd-epyc-avx2), and a
    # leaderboard ranking one against the other would compare the machines.
    fast = dict(CPU_FP, cpu_model="AMD EPYC", cpu_isa="avx2 fma avx512f avx512_bf16")
    slow = dict(CPU_FP, cpu_model="AMD EPYC", cpu_isa="avx2 fma")
    records = [
        make_record(f"suites/test_attention.py::test_prefill[{t}]", fingerprint=fp)
        for t, fp in (("mha", fast), ("gqa", fast), ("mha", slow), ("gqa", slow))
    ]
    boards = leaderboards(records)
    assert sorted(b.hardware for b in boards) == ["cpu · AMD EPYC (avx2)", "cpu · AMD EPYC (avx512)"]
    assert all(len(b.rows) == 2 for b in boards)
    # A GPU is named by itself; a CPU whose extensions were not recorded by its model alone.
    assert hardware_label(make_record("t.py::a", profile="h100", fingerprint=dict(fast, gpu_name="H100"))) == (
        "h100 · H100"
    )
    assert hardware_label(make_record("t.py::a", fingerprint=CPU_FP)) == "cpu · Test CPU 9000"


def test_tests_alone_in_their_workload_share_one_unranked_table_without_plots() -> None:
    # A project's own tests, not parametrized: one-row tables each, ranked #1 of 1, with a plot of
    # one point, said nothing. They share one table per hardware and axis, a row per test.
    own = {"seq_len": 64}  # a project's settings: no model or scale named
    records = [
        make_record("tests/test_model.py::test_decode", al=0.020, settings=own),
        make_record("tests/test_model.py::test_prefill", al=0.002, settings=own),
        make_record("tests/test_model.py::test_sweep[32]", al=0.004),
        make_record("tests/test_model.py::test_sweep[64]", al=0.008),
    ]
    sweep, alone = leaderboards(records)
    assert (sweep.workload, sweep.ranked) == ("test_sweep", True)
    assert {r.cells["technique"].text: r.cells["AL"].rank for r in sweep.rows} == {"32": 1, "64": 2}
    assert (alone.axis, alone.workload, alone.ranked) == ("other", ALONE, False)
    assert [r.cells["technique"].text for r in alone.rows] == ["test_decode", "test_prefill"]
    titles = [c.title for c in alone.columns]
    assert titles[0] == "test" and "model" not in titles and "scale" not in titles  # no row names them
    assert [c.title for c in sweep.columns[:3]] == ["technique", "model", "scale"]
    assert all(cell.rank is None for r in alone.rows for cell in r.cells.values())
    assert tradeoff_plots(alone) == [] and len(tradeoff_plots(sweep)) == 3


def test_one_workload_of_several_models_is_ranked_per_model() -> None:
    # The vision axis: a ViT, a DiT and a VLM each have a test_train_step; ranking a DiT's GQA
    # against a ViT's (both read "gqa") would compare models, not techniques.
    def train(module: str, technique: str, model: str) -> Record:
        return make_record(f"suites/{module}.py::test_train_step[{technique}]", settings={"model": model})

    records = [train(m, t, m.upper()) for m in ("test_vision_vit", "test_vision_dit") for t in ("gqa", "mqa")]
    boards = leaderboards(records)
    assert [(b.workload, b.model, [r.cells["technique"].text for r in b.rows]) for b in boards] == [
        ("test_train_step", "TEST_VISION_DIT", ["gqa", "mqa"]),
        ("test_train_step", "TEST_VISION_VIT", ["gqa", "mqa"]),
    ]
    assert "· TEST_VISION_DIT (" in boards[0].title


def test_rows_that_would_read_alike_are_named_with_their_module() -> None:
    records = [make_record(f"suites/{m}.py::test_kv_bytes") for m in ("test_vision_dit", "test_vision_vit")]
    (board,) = leaderboards(records)
    assert [r.cells["technique"].text for r in board.rows] == [
        "test_vision_dit: test_kv_bytes",
        "test_vision_vit: test_kv_bytes",
    ]


def test_primary_quality_is_the_one_most_records_carry() -> None:
    run = sample_run()
    assert primary_quality(run.records) == "quality:ppl"
    assert primary_quality([make_record("x.py::t", quality=None)]) is None


def test_small_fractions_keep_their_digits_and_rows_are_in_node_id_order() -> None:
    from pytest_efficientllm.report.leaderboard import display_value

    assert display_value(0.00004, "fraction") == "0.004%" and display_value(0.25, "fraction") == "25.0%"
    assert display_value(8.0, "") == "8"
    shuffled = list(reversed(sample_run().records))
    prefill = leaderboards(shuffled)[0]
    assert [row.cells["technique"].text for row in prefill.rows] == ["gqa", "mha", "mqa"]


def test_a_decode_table_shows_ttft_and_tpot_beside_al_ranked_and_a_prefill_table_does_not() -> None:
    decode = []
    for technique, ttft, tpot in (("mha", 0.030, 0.004), ("gqa", 0.020, 0.003), ("mqa", 0.025, 0.002)):
        r = make_record(f"suites/test_attention.py::test_decode[{technique}]", al=ttft + 7 * tpot)
        r.add(measured("TTFT", ttft, "s"))
        r.add(measured("TPOT", tpot, "s"))
        decode.append(r)
    prefill = [make_record(f"suites/test_attention.py::test_prefill[{t}]") for t in ("mha", "gqa")]
    boards = {b.workload: b for b in leaderboards([*decode, *prefill])}
    keys = [c.key for c in boards["test_decode"].columns]
    assert keys[keys.index("AL") : keys.index("AL") + 3] == ["AL", "TTFT", "TPOT"]
    titles = {c.key: c.title for c in boards["test_decode"].columns}
    assert titles["TTFT"] == "TTFT ↓" and titles["TPOT"] == "TPOT ↓"
    rows = {row.cells["technique"].text: row.cells for row in boards["test_decode"].rows}
    assert {t: cells["TTFT"].rank for t, cells in rows.items()} == {"gqa": 1, "mqa": 2, "mha": 3}
    assert {t: cells["TPOT"].rank for t, cells in rows.items()} == {"mqa": 1, "gqa": 2, "mha": 3}
    assert rows["gqa"]["TTFT"].value == 0.020
    assert not {"TTFT", "TPOT"} & {c.key for c in boards["test_prefill"].columns}

"""The roofline estimates beside the measured AL in the leaderboards, Markdown and HTML.

CPU records of decode attention whose counted bytes of KV read differ as MHA > GQA > MQA
(the counting branch's `bytes_accessed`, built here directly), with the roofline of
`--efficiency-roofline=h100,a100` computed by `measuring.roofline` as the fixture does.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_efficientllm.core.record import Metric, Record
from pytest_efficientllm.measuring.roofline import roofline_metrics
from pytest_efficientllm.report.html import render_html
from pytest_efficientllm.report.leaderboard import leaderboards
from pytest_efficientllm.report.markdown import render_markdown
from pytest_efficientllm.storage.runfile import Run
from tests.helpers.report_records import CPU_FP, make_record

# Decode, one token: the same FLOPs, bytes of K/V read by the number of KV heads (32, 8, 1).
KV_HEADS = {"mha": 32, "gqa": 8, "mqa": 1}
FLOPS = 2e9
WEIGHT_BYTES = 1e9
KV_BYTES_PER_HEAD = 64e6


def decode_record(technique: str, al: float) -> Record:
    record = make_record(f"suites/test_attention.py::test_decode[{technique}]", al=al, quality=None)
    moved = WEIGHT_BYTES + KV_HEADS[technique] * KV_BYTES_PER_HEAD
    record.add(Metric("flops", FLOPS, "FLOP", "lower", "counted", "given by the test"))
    record.add(Metric("bytes_accessed", moved, "B", "lower", "counted", "counted"))
    record.add(Metric("flops_share:bf16", 1.0, "fraction", "info", "counted", "FLOPs by dtype"))
    for metric in roofline_metrics(record.metrics, "cpu", ("h100", "a100")).values():
        record.add(metric)
    return record


def sample() -> Run:
    # On this CPU the measured AL ranks them otherwise (GQA fastest): the CPU is not the GPU.
    records = [decode_record("mha", 0.030), decode_record("gqa", 0.010), decode_record("mqa", 0.020)]
    return Run(records=records, runs=[{"profile": "cpu", "fingerprint": CPU_FP, "label": "sample"}])


def test_the_roofline_columns_follow_al_and_rank_as_on_the_gpu() -> None:
    (board,) = leaderboards(sample().records)
    keys = [c.key for c in board.columns]
    at = keys.index("AL")
    assert keys[at + 1 : at + 3] == ["roofline_time:a100", "roofline_time:h100"]
    titles = {c.key: c.title for c in board.columns}
    assert titles["roofline_time:h100"] == "roofline (h100) ↓"
    ranks = {row.cells["technique"].text: row.cells["roofline_time:h100"].rank for row in board.rows}
    assert ranks == {"mqa": 1, "gqa": 2, "mha": 3}  # by bytes of KV read: MQA < GQA < MHA
    measured = {row.cells["technique"].text: row.cells["AL"].rank for row in board.rows}
    assert measured == {"gqa": 1, "mqa": 2, "mha": 3}
    cell = next(row.cells["roofline_time:h100"] for row in board.rows if row.cells["technique"].text == "mqa")
    assert cell.estimated
    assert cell.value == pytest.approx((WEIGHT_BYTES + KV_BYTES_PER_HEAD) / 3.35e12)
    assert cell.note.startswith("estimate: roofline max(FLOPs / 989 TFLOP/s bf16 peak of H100 SXM 80GB")
    assert "memory-bound" in cell.note


def test_the_run_gpus_roofline_shows_only_with_a_value() -> None:
    with_value = decode_record("mha", 0.03)
    with_value.add(roofline_metrics(with_value.metrics, "h100")["roofline_time"])
    without = make_record("suites/test_attention.py::test_decode[gqa]")
    without.add(Metric("flops", FLOPS, "FLOP", "lower", "counted", "given by the test"))
    without.add(roofline_metrics(without.metrics, "h100")["roofline_time"])  # no bytes: n/a
    assert without.metrics["roofline_time"].value is None
    (board,) = leaderboards([without])
    assert "roofline_time" not in [c.key for c in board.columns]  # an n/a column of every GPU run: not shown
    (board,) = leaderboards([with_value, without])
    titles = {c.key: c.title for c in board.columns}
    assert titles["roofline_time"] == "roofline ↓"
    assert [c.key for c in board.columns].index("roofline_time") == [c.key for c in board.columns].index("AL") + 1


def test_markdown_marks_the_roofline_an_estimate_with_its_model(tmp_path: Path) -> None:
    md = render_markdown(sample())
    header = next(line for line in md.splitlines() if line.startswith("| technique"))
    assert "| AL ↓ | roofline (a100) ↓ | roofline (h100) ↓ |" in header
    mqa = next(line for line in md.splitlines() if line.startswith("| mqa"))
    assert "~ #1" in mqa
    assert "~ estimated roofline_time:h100 (gqa, mha, mqa): estimate: roofline max(FLOPs / 989 TFLOP/s" in md


def test_html_shades_the_roofline_and_names_its_model_on_hover() -> None:
    html = render_html(sample())
    assert ">roofline (h100) ↓</th>" in html
    assert 'class="est' in html and 'title="estimate: roofline max(FLOPs / 312 TFLOP/s bf16 peak of A100' in html

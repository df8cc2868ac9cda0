"""The Markdown report shows exactly the numbers the JSON report holds, with ranks, estimates and reasons."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pytest_efficientllm.core.record import Record
from pytest_efficientllm.core.units import format_value
from pytest_efficientllm.report.axes import technique_of
from pytest_efficientllm.report.inputs import ReportError
from pytest_efficientllm.report.write import write_report
from tests.helpers.report_records import sample_run

CELL = re.compile(r"^(?P<value>.*?)(?P<est>~)?(?: #(?P<rank>\d+))?$")


def parse_tables(markdown: str) -> dict[str, list[dict[str, str]]]:
    """'### title' -> rows as {column title: cell text}, from GitHub-flavoured tables."""
    tables: dict[str, list[dict[str, str]]] = {}
    title = None
    header: list[str] | None = None
    for line in markdown.splitlines():
        if line.startswith("### "):
            title, header = line[4:], None
            tables[title] = []
        elif title and line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if header is None:
                header = cells
            else:
                tables[title].append(dict(zip(header, cells)))
        elif not line.strip() and header is not None:
            title, header = None, None
    return tables


def test_markdown_cells_are_the_json_values(tmp_path: Path) -> None:
    run = sample_run()
    md = write_report(run, tmp_path / "r.md").read_text()
    data = json.loads(write_report(run, tmp_path / "r.json").read_text())
    records = {r["nodeid"]: Record.from_dict(r) for r in data["records"]}
    tables = parse_tables(md)
    assert len(tables) == 3
    checked = 0
    for title, rows in tables.items():
        workload = title.split(" · ")[1].split(" (")[0]
        ranked = "technique" in rows[0]  # the table of tests alone in their workload names each test, unranked
        for row in rows:
            name = f"::{workload}[{row['technique']}]" if ranked else f"::{row['test']}"
            [record] = [r for r in records.values() if r.nodeid.endswith(name)]
            for column, text in row.items():
                name = column.rstrip(" ↓↑")
                name = {"ppl": "quality:ppl"}.get(name, name)
                if name not in record.metrics:
                    continue
                metric = record.metrics[name]
                cell = CELL.match(text)
                assert cell is not None
                assert cell.group("value") == format_value(metric.value, metric.unit).strip(), (title, column)
                assert bool(cell.group("est")) == (metric.source == "estimated" and metric.value is not None)
                assert (cell.group("rank") is None) == (metric.value is None or not ranked)
                checked += 1
    assert checked >= 40  # every metric cell of every row was compared, not a sample


def test_markdown_says_why_a_value_is_missing_and_marks_the_failing_test(tmp_path: Path) -> None:
    md = write_report(sample_run(), tmp_path / "r.md").read_text()
    assert "n/a PCU (gqa, mha, mqa): no GPU: NVML not available" in md
    assert "~ estimated AEC" in md and "estimate: CPU-seconds x 17.5 W per core" in md
    prefill = parse_tables(md)["attention / MoE · test_prefill (cpu · Test CPU 9000)"]
    assert {r["technique"]: r["gate"] for r in prefill}["gqa"] == "**fail**"
    assert "| suites/test_attention.py::test_prefill[gqa] | AL | **fail** |" in md
    assert "cpu_model | Test CPU 9000" in md  # the fingerprint


def test_markdown_lists_the_verdicts_that_did_not_pass_and_counts_the_rest(tmp_path: Path) -> None:
    # For a pull request's summary: the suites' run listed 748 verdict rows, 700 of them passing or skipped.
    run = sample_run()
    run.records[0].verdicts += [
        {"metric": "flops", "status": "pass", "message": "1 FLOP vs baseline 1 FLOP (+0.0%; counted, exact)"},
        {"metric": "PCU", "status": "skipped", "message": "not compared: unavailable in the baseline"},
    ]
    md = write_report(run, tmp_path / "r.md").read_text()
    assert "1 failing verdict(s) of 3; 1 pass and 1 skipped not listed (the HTML report lists them)." in md
    assert "| suites/test_attention.py::test_prefill[gqa] | AL | **fail** |" in md
    assert "1 FLOP vs baseline" not in md and "unavailable in the baseline" not in md


def test_pipes_in_names_do_not_break_the_table(tmp_path: Path) -> None:
    run = sample_run()
    for record in run.records[:3]:  # the prefill rows: one model, so still one table
        record.settings["model"] = "a|b"
    md = write_report(run, tmp_path / "r.md").read_text()
    rows = parse_tables(md)["attention / MoE · test_prefill (cpu · Test CPU 9000)"]
    assert {r["technique"]: r["model"] for r in rows} == {"gqa": "a\\|b", "mha": "a\\|b", "mqa": "a\\|b"}


def test_report_paths_that_cannot_be_written_say_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="does not exist"):
        write_report(sample_run(), tmp_path / "missing" / "r.md")
    with pytest.raises(ReportError, match=r"unknown report format '\.txt'"):
        write_report(sample_run(), tmp_path / "r.txt")
    run = sample_run()
    run.records.clear()
    with pytest.raises(ReportError, match="no records"):
        write_report(run, tmp_path / "r.md")


def test_technique_column_is_the_parametrize_id() -> None:
    assert [technique_of(r.nodeid) for r in sample_run().records][:3] == ["mha", "gqa", "mqa"]

"""What `ab` leaves behind (`ab.outputs`): the terminal lines, the PR table `ab.md` and `ab.json`,
rendered from comparisons built by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_efficientllm.ab.command import Comparison, TestVerdict
from pytest_efficientllm.ab.outputs import render_lines, render_markdown, write_outputs
from pytest_efficientllm.ab.revisions import Side
from pytest_efficientllm.judging.paired import paired_verdicts
from pytest_efficientllm.judging.verdicts import Verdict
from tests.helpers.record_builders import latency, record


def test_the_pr_table_shows_what_moved_and_counts_what_did_not(tmp_path: Path) -> None:

    same = [Verdict(f"count_{i}", "pass", "1 vs base 1 (+0.0%; counted, exact)", "baseline", 0.0) for i in range(16)]
    slower = Verdict("cpu_time_per_round", "pass", "10.1 ms vs base 10 ms (+1.0%)", "baseline", 0.01)
    grew = Verdict("flops", "fail", "2 FLOP vs base 1 FLOP (+100.0%; counted, exact): regression", "baseline", 1.0)
    side = Side("base", "HEAD~1", "", tmp_path)
    test = TestVerdict("t.py::t", "compared", [*same, slower, grew])
    md = render_markdown(Comparison(side, side, 5, [test], [], 1.0))
    assert (
        "| `t.py::t` | **fail** | cpu_time_per_round +1.0% (pass)<br>flops +100.0% (fail)<br>16 metrics unchanged |"
        in md
    )
    assert "count_0" not in md
    (line,) = [ln for ln in render_lines(Comparison(side, side, 5, [test], [], 1.0)) if "t.py::t" in ln]
    assert line.endswith("vs base: cpu_time_per_round +1.0%, flops +100.0%, 16 metrics unchanged")


def test_ab_json_stays_valid_json_when_a_count_grows_from_zero(tmp_path: Path) -> None:

    message = "128.00 KiB vs baseline 0 B (from 0; counted, exact): regression"
    leak = Verdict("retained_tensor_bytes", "fail", message, "baseline", float("inf"))  # a change from 0
    side = Side("base", "HEAD~1", "", tmp_path)
    comparison = Comparison(side, side, 5, [TestVerdict("t.py::leak", "compared", [leak])], [], 1.0)
    write_outputs(comparison, tmp_path)
    text = (tmp_path / "ab.json").read_text()
    (verdict,) = json.loads(text, parse_constant=lambda c: pytest.fail(f"ab.json holds {c}"))["tests"][0]["verdicts"]
    assert verdict["change"] is None and "from 0" in verdict["message"]
    assert "from 0" in (tmp_path / "ab.md").read_text()


def test_timings_that_passed_without_ruling_out_a_slowdown_are_counted_and_marked(tmp_path: Path) -> None:

    def judged(nodeid: str, head_s: list[float]) -> TestVerdict:
        cpu = "cpu_time_per_round"
        base = [record(nodeid, latency(0.1, spread=0.0, seed=i, name=cpu)) for i in range(6)]
        head = [record(nodeid, latency(s, spread=0.0, seed=i, name=cpu)) for i, s in enumerate(head_s)]
        return TestVerdict(nodeid, "compared", paired_verdicts(base, head))

    noisy = judged("t.py::noisy", [0.080, 0.121, 0.098, 0.117, 0.090, 0.104])  # pairs -20% .. +21%
    steady = judged("t.py::steady", [0.101, 0.100, 0.102, 0.099, 0.101, 0.100])
    side = Side("base", "HEAD~1", "", tmp_path)
    comparison = Comparison(side, side, 6, [noisy, steady], [], 1.0)
    md = render_markdown(comparison)
    assert "| `t.py::noisy` | ok | cpu_time_per_round " in md and "(pass, not resolved)" in md
    assert "| `t.py::steady` | ok | cpu_time_per_round +" in md and md.count("not resolved)") == 1
    footer = "1 of 2 timing comparisons passed, but their 90% interval reaches beyond their tolerance"
    assert f"Not resolved: {footer}" in md
    assert any(footer in line and "--pairs, now 6" in line for line in render_lines(comparison))
    steady_only = Comparison(side, side, 6, [steady], [], 1.0)
    assert "not resolved" not in render_markdown(steady_only) + "\n".join(render_lines(steady_only))


def test_tests_that_measure_nothing_are_counted_once_not_listed(tmp_path: Path) -> None:
    # A selection of plain tests beside the measured one gave each a row, "not measured".
    grew = Verdict("flops", "fail", "2 FLOP vs base 1 FLOP (+100.0%; counted, exact): regression", "baseline", 1.0)
    plain = [TestVerdict(f"t.py::plain_{i}", "not measured") for i in range(40)]
    side = Side("base", "HEAD~1", "", tmp_path)
    c = Comparison(side, side, 6, [TestVerdict("t.py::t", "compared", [grew]), *plain], [], 1.0)
    md, lines = render_markdown(c), render_lines(c)
    assert "plain_" not in md and not any("plain_" in line for line in lines)
    said = "40 test(s) measured nothing on either side, so nothing of theirs was compared (ab.json names them)"
    assert f"\n{said[0].upper()}{said[1:]}.\n" in md and f"  not measured    {said}" in lines
    assert "| `t.py::t` | **fail** |" in md and lines[-1] == "efficiency ab: 1 of 41 tests failed"
    write_outputs(c, tmp_path)
    saved = json.loads((tmp_path / "ab.json").read_text())["tests"]
    assert sum(t["status"] == "not measured" for t in saved) == 40
    # None of them, nothing said.
    alone = Comparison(side, side, 6, [TestVerdict("t.py::t", "compared", [grew])], [], 1.0)
    assert "measured nothing" not in render_markdown(alone) + "\n".join(render_lines(alone))


def test_the_first_line_names_head_once_when_its_spec_is_head(tmp_path: Path) -> None:
    def first(head_spec: str) -> str:
        head = Side("head", head_spec, "833fe85abb0123", tmp_path)
        base = Side("base", "HEAD~1", "8a79084f200123", tmp_path)
        return render_lines(Comparison(base, head, 6, [], [], 118.0))[0]

    assert first("HEAD").startswith("efficiency ab: HEAD (833fe85abb) vs base HEAD~1 (8a79084f20), 6 ABBA pairs")
    assert first("feature").startswith("efficiency ab: HEAD feature (833fe85abb) vs base HEAD~1 (8a79084f20)")

"""The report and progress options inside a real pytest run (pytester)."""

from __future__ import annotations

import pytest

from pytest_efficientllm.report.progress import Progress

SUITE = """
import pytest

@pytest.mark.efficiency(rounds=2, warmup=0)
@pytest.mark.parametrize("technique", ["slow", "fast"])
def test_prefill(efficiency, technique):
    n = {"slow": 20000, "fast": 2000}[technique]
    efficiency.settings(model="toy", scale="tiny")
    efficiency.measure(lambda: sum(range(n)), tokens=8)
    efficiency.quality("ppl", 8.0, direction="lower", method="fixed number for the test")
"""


def test_report_option_writes_the_leaderboard_of_the_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_attention=SUITE)
    # In a subprocess: a measured run in this process leaves freed-but-resident heap behind,
    # which later memory ground-truth tests in the same worker would see.
    # Repeated, as CI wants a Markdown table for the step summary and HTML to keep: the second
    # had silently replaced the first.
    result = pytester.runpytest_subprocess(
        "--efficiency-report=report.md", "--efficiency-report=report.html", "-p", "no:cacheprovider", timeout=120
    )
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        ["*efficiency report: report.md (2 record(s))*", "*efficiency report: report.html (2 record(s))*"]
    )
    assert "<html" in (pytester.path / "report.html").read_text()
    md = (pytester.path / "report.md").read_text()
    assert "### attention / MoE · test_prefill (cpu · " in md
    rows = [line for line in md.splitlines() if line.startswith("| slow ") or line.startswith("| fast ")]
    assert len(rows) == 2 and all("| toy | tiny | 8 #1 |" in row for row in rows)


def test_a_report_path_in_a_missing_directory_is_a_usage_error_before_anything_runs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_attention=SUITE)
    result = pytester.runpytest("--efficiency-report=nowhere/report.html", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--efficiency-report: nowhere/report.html: directory nowhere does not exist*"])
    result = pytester.runpytest("--efficiency-report=report.txt", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result = pytester.runpytest(
        "--efficiency-report=r.md", "--efficiency-report=nowhere/r.html", "-p", "no:cacheprovider"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # each one is checked, not the first alone


PLAIN = """
import pytest

@pytest.mark.parametrize("technique", ["slow", "fast"])
def test_prefill(technique):
    pass
"""


# pytester's in-process runs write to a capture, not a terminal: this conftest makes pytest's
# terminal reporter say it writes to one (its `isatty`, which the progress option reads).
AS_IF_ON_A_TERMINAL = """
import pytest

@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    config.pluginmanager.get_plugin("terminalreporter").isatty = lambda: True
"""


def test_progress_names_the_technique_and_the_count_without_breaking_pytest_lines(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_attention=PLAIN)
    pytester.makeconftest(AS_IF_ON_A_TERMINAL)
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "efficiency [[]1/2] measuring attention / MoE - test_prefill - slow*",
            "test_attention.py .",
            "efficiency [[]2/2] measuring attention / MoE - test_prefill - fast*",
            "test_attention.py .*[[]100%]",
        ]
    )
    verbose = pytester.runpytest("-v", "-p", "no:cacheprovider")
    verbose.stdout.fnmatch_lines(
        [
            "efficiency [[]1/2] measuring attention / MoE - test_prefill - slow",
            "test_attention.py::test_prefill[[]slow] PASSED*",
            "efficiency [[]2/2] measuring attention / MoE - test_prefill - fast",
            "test_attention.py::test_prefill[[]fast] PASSED*",
        ]
    )
    assert "measuring" not in pytester.runpytest("-q", "-p", "no:cacheprovider").stdout.str()


def test_progress_stays_out_of_a_redirected_log_unless_asked_for(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_attention=PLAIN)
    # Not a terminal (pytester captures the output, as a CI log redirects it): pytest's lines only.
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == 0
    assert "measuring" not in result.stdout.str()
    result.stdout.fnmatch_lines(["test_attention.py ..*[[]100%]"])
    verbose = pytester.runpytest("-v", "-p", "no:cacheprovider")
    assert "measuring" not in verbose.stdout.str()
    # `on` writes the lines into the log anyway.
    forced = pytester.runpytest("--efficiency-progress=on", "-p", "no:cacheprovider")
    forced.stdout.fnmatch_lines(
        [
            "efficiency [[]1/2] measuring attention / MoE - test_prefill - slow*",
            "test_attention.py .",
            "efficiency [[]2/2] measuring attention / MoE - test_prefill - fast*",
        ]
    )
    assert sum("measuring" in line for line in forced.stdout.lines) == 2


def test_progress_modes_choose_which_tests_show() -> None:
    suite, other = "suites/test_quantization.py::test_decode[int4]", "tests/test_x.py::test_a"
    auto, on, off = Progress("auto"), Progress("on"), Progress("off")
    for p in (auto, on, off):
        p.collected([suite, other])
    assert (auto.total, on.total, off.total) == (1, 2, 0)
    assert auto.start(suite) == "efficiency [1/1] measuring quantization - test_decode - int4"
    assert auto.start(other) is None and auto.start(suite) is None  # not a suite test; already started
    assert on.start(other) == "efficiency [1/2] measuring other - test_a - test_a"
    assert off.start(suite) is None


def test_progress_under_xdist_comes_from_the_controller_on_whole_lines(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_attention=PLAIN)
    # Only the report hooks (not the measuring plugin, whose workers import torch): this checks
    # the terminal output, and keeps the two worker start-ups cheap.
    result = pytester.runpytest_subprocess(
        "-n",
        "2",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:efficiency",
        "-p",
        "pytest_efficientllm.report.hooks",
        "--efficiency-progress=on",  # the output is a pipe, not a terminal
        timeout=120,
    )
    assert result.ret == 0
    lines = [line for line in result.stdout.lines if "measuring" in line]
    assert len(lines) == 2 and {line.rsplit(" - ", 1)[1] for line in lines} == {"slow", "fast"}
    # Whole lines: never glued to a row of result letters, which stay on their own lines.
    assert all(line.startswith("efficiency [") and line[-4:] in ("slow", "fast") for line in lines)
    assert "".join(line for line in result.stdout.lines if set(line.split("[")[0].strip()) == {"."}).count(".") == 2

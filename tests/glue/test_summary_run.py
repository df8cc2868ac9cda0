"""The summary of a real run (pytester) against baselines recorded under another kernel build:
the fingerprint difference said once above the table, each row with its own verdict, warnings
counted by kind with each test's numbers under -v."""

from __future__ import annotations

import json
import os
from pathlib import Path

import hypothesis  # noqa: F401 - loaded here once: pytester's in-process runs would re-import it every run
import pytest

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestAssertRewriteWarning")

# Counted facts: `test_steady` never changes; `test_grows` doubles with EFF_SCALE=2.
SUITE = """
import os, pytest

SCALE = float(os.environ.get("EFF_SCALE", "1"))

@pytest.mark.parametrize("n", [1, 2, 3])
def test_steady(efficiency, n):
    efficiency.count("flops", n * 10, unit="FLOP", direction="lower")

@pytest.mark.parametrize("which", ["a", "b"])
def test_grows(efficiency, which):
    efficiency.count("flops", int(100 * SCALE), unit="FLOP", direction="lower")
"""
LATER = """
def test_later(efficiency):
    efficiency.count("flops", 5, unit="FLOP", direction="lower")
"""
INI = "[pytest]\nefficiency_calibrate_every = off\n"
OLD_KERNEL = "Linux 0.0.1-an-older-build"


def _run(pytester: pytest.Pytester, *args: str, scale: float = 1.0) -> pytest.RunResult:
    os.environ["EFF_SCALE"] = str(scale)
    try:
        return pytester.runpytest("-p", "no:cacheprovider", *args)
    finally:
        del os.environ["EFF_SCALE"]


def _recorded_under_another_kernel(pytester: pytest.Pytester) -> str:
    """Record the suite's baselines, then make them say another kernel build; the current one."""
    pytester.makepyfile(test_suite=SUITE)
    pytester.makeini(INI)
    _run(pytester, "--update-baselines").assert_outcomes(passed=5)
    path = pytester.path / "baselines/cpu/test_suite.py.json"
    doc = json.loads(path.read_text())
    current = {t["fingerprint"]["os"] for t in doc["tests"].values()}
    assert len(current) == 1
    for test in doc["tests"].values():
        test["fingerprint"]["os"] = OLD_KERNEL
    path.write_text(json.dumps(doc))
    pytester.makepyfile(test_later=LATER)  # no baseline: "new"
    return current.pop()


def _section(result: pytest.RunResult) -> list[str]:
    lines = result.stdout.lines
    start = next(i for i, line in enumerate(lines) if "efficiency" in line and line.startswith("="))
    return lines[start + 1 :]


def _verdicts(section: list[str]) -> dict[str, str]:
    """Each table row's test and verdict."""
    return {
        line.split()[0]: line.split()[-1] for line in section if line.startswith(("test_suite.py::", "test_later.py::"))
    }


def test_a_kernel_build_difference_is_said_once_and_the_rows_keep_their_own_verdicts(
    pytester: pytest.Pytester,
) -> None:
    kernel = _recorded_under_another_kernel(pytester)
    result = _run(pytester)
    result.assert_outcomes(passed=6)
    section = _section(result)
    text = "\n".join(section)
    # Once, above the table: which field, how many tests (the five with a baseline, of six).
    assert text.count("fingerprint differs") == 1
    said = next(i for i, line in enumerate(section) if line.startswith("fingerprint differs"))
    header = next(i for i, line in enumerate(section) if line.startswith("test ") and "verdict" in line)
    assert said < header
    assert section[said].startswith("fingerprint differs from the baselines' in 5 of 6 tests")
    assert f"  os: '{OLD_KERNEL}' -> '{kernel}'" in section[said + 1 : header]
    # Each row its own verdict: nothing of the test's own warns.
    assert _verdicts(section) == {
        **{f"test_suite.py::test_steady[{n}]": "pass" for n in (1, 2, 3)},
        **{f"test_suite.py::test_grows[{w}]": "pass" for w in "ab"},
        "test_later.py::test_later": "new",
    }
    assert "warnings" not in text
    assert max(len(line) for line in section) <= 100


def test_a_tests_own_warning_still_says_warn_and_warnings_are_counted_by_kind(pytester: pytest.Pytester) -> None:
    _recorded_under_another_kernel(pytester)
    # Both test_grows double their count: a regression, which gate=warn reports without failing.
    result = _run(pytester, "--efficiency-gate=warn", scale=2.0)
    result.assert_outcomes(passed=6)
    section = _section(result)
    assert "\n".join(section).count("fingerprint differs") == 1
    verdicts = _verdicts(section)
    assert verdicts["test_suite.py::test_grows[a]"] == verdicts["test_suite.py::test_grows[b]"] == "warn"
    assert {verdicts[f"test_suite.py::test_steady[{n}]"] for n in (1, 2, 3)} == {"pass"}
    assert "warnings (2 tests):" in section
    assert "  flops regression (counted) (gate=warn: not failing): 2 tests (+100.0% each)" in section
    assert not any("200 FLOP vs baseline 100 FLOP" in line for line in section)  # numbers under -v

    verbose = _section(_run(pytester, "-v", "--efficiency-gate=warn", scale=2.0))
    listed = [line for line in verbose if line.startswith("    test_suite.py::test_grows[")]
    assert len(listed) == 2 and all("200 FLOP vs baseline 100 FLOP (+100.0%" in line for line in listed)


def test_the_run_file_keeps_every_fingerprint_verdict(pytester: pytest.Pytester) -> None:
    _recorded_under_another_kernel(pytester)
    _run(pytester, "--efficiency-json=run.json").assert_outcomes(passed=6)
    records = json.loads(Path(pytester.path / "run.json").read_text())["records"]
    fingerprint = [v for r in records for v in r["verdicts"] if v["kind"] == "fingerprint"]
    assert len(fingerprint) == 5 and {v["status"] for v in fingerprint} == {"warn"}

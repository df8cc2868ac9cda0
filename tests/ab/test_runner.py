"""What `ab.runner` reads from a process's JUnit XML file: each test's outcome and time."""

from __future__ import annotations

from pathlib import Path

from pytest_efficientllm.ab.runner import read_junit

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="3">
<testcase classname="t" file="t.py" name="test_a" time="1.500" />
<testcase classname="t.TestB" file="t.py" name="test_b[x]" time="0.250"><skipped message="no GPU" /></testcase>
<testcase classname="t" file="t.py" name="test_c"><failure message="boom" /></testcase>
</testsuite></testsuites>
"""


def test_each_tests_outcome_and_time_by_node_id(tmp_path: Path) -> None:
    xml = tmp_path / "run.xml"
    xml.write_text(JUNIT)
    outcomes, durations = read_junit(xml)
    assert outcomes == {
        "t.py::test_a": "passed",
        "t.py::TestB::test_b[x]": "skipped",
        "t.py::test_c": "failed",
    }
    # A test without a time is left out, not timed at zero: it would pass for the quickest.
    assert durations == {"t.py::test_a": 1.5, "t.py::TestB::test_b[x]": 0.25}

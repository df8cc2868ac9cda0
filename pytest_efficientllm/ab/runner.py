"""One fresh pytest process of one side: its records, and what became of its tests.

The process runs the user's pytest arguments in the side's folder, with that folder first
on the import path, and writes a run file (`--efficiency-json`) and a JUnit XML file
(pass/fail/skip of every test, measured or not). Inside it nothing is judged
(`--efficiency-gate=off`, no confirmation, one calibration): the pairs are judged afterwards,
side against side.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from pytest_efficientllm.ab.revisions import Side
from pytest_efficientllm.core.record import Record
from pytest_efficientllm.storage.runfile import RunFileError, read_run

# What the measuring process must not do: judge, confirm in more processes, calibrate again
# (once, before its first test, is the control where a comparison has too few other tests to be
# its own: `judging.paired.calibration_moved`; ~0.1 s of each process). And one
# process layout for every process (ASLR off, PYTHONHASHSEED=0): a pair compares two processes,
# and the layout alone moves a transformer workload by several percent between processes
# (docs/process-layout.md), noise that pairing cannot cancel.
MEASURE_ONLY = (
    "--efficiency-gate=off",
    "--efficiency-confirm=0",
    "--efficiency-calibrate-every=24 h",
    "--efficiency-fixed-layout",
)


@dataclass
class ProcessResult:
    """What one process of one side left: records by test id, outcomes by test id, and any problem."""

    side: str
    pair: int
    returncode: int
    records: dict[str, Record] = field(default_factory=dict)
    outcomes: dict[str, str] = field(default_factory=dict)  # "passed" / "failed" / "skipped"
    durations: dict[str, float] = field(default_factory=dict)  # seconds by test id, as JUnit timed them
    problem: str = ""  # why this process's results are missing ("" when they are there)
    seconds: float = 0.0


def environment(side: Side, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The side's folder first on PYTHONPATH, so its own modules are the ones imported."""
    env = dict(os.environ if environ is None else environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(side.path), env.get("PYTHONPATH", "")) if p)
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def _nodeid(case: ET.Element) -> str:
    """A JUnit testcase's pytest node id. With `junit_family=xunit1` pytest writes the test's
    `file` (relative to the rootdir) and a dotted `classname`: the module path, then any classes."""
    file, classname, name = case.get("file", ""), case.get("classname", ""), case.get("name", "")
    module = file[:-3].replace("/", ".") if file.endswith(".py") else ""
    classes = classname[len(module) + 1 :].split(".") if module and classname.startswith(module + ".") else []
    return "::".join([file or classname, *[c for c in classes if c], name])


def read_junit(xml_path: Path) -> tuple[dict[str, str], dict[str, float]]:
    """Outcome of every test in a JUnit XML file (pytest's own, `--junitxml`), and the seconds each
    took (setup, call and teardown) where the file says."""
    outcomes: dict[str, str] = {}
    durations: dict[str, float] = {}
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        nodeid = _nodeid(case)
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped" and outcome == "passed":
                outcome = "skipped"
        outcomes[nodeid] = outcome
        try:
            durations[nodeid] = float(case.get("time", ""))
        except ValueError:
            pass
    return outcomes, durations


def recorded_nothing(returncode: int, outcomes: dict[str, str]) -> bool:
    """Whether a process that left no run file recorded no measurement, from its exit status
    alone: its terminal output is the user's to shape (`--no-summary` under pytest 8, a plugin
    that replaces the terminal) and may not say. A run that records nothing writes no run file
    (`glue.controller.write_json`), and one that could not write its file turns an exit of 0 into
    1. So without the file, 0 and 5 (nothing collected) mean nothing recorded, and so does 1 where
    a test failed; 1 where none failed is the file that could not be written. (A write that failed
    beside a failing test reads as nothing recorded: the file is written into the folder the JUnit
    file was just written to.)"""
    if returncode in (0, 5):
        return True
    return returncode == 1 and "failed" in outcomes.values()


def run_process(
    side: Side, pair: int, pytest_args: list[str], out_dir: Path, timeout_s: float = 3600.0
) -> ProcessResult:
    """Run one fresh pytest process of `side` and read what it left."""
    stem = out_dir / f"{side.name}-{pair}"
    json_path, xml_path = stem.with_suffix(".json"), stem.with_suffix(".xml")
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        *pytest_args,
        *MEASURE_ONLY,
        f"--efficiency-json={json_path}",
        f"--junitxml={xml_path}",
        "-o",
        "junit_family=xunit1",
        "-p",
        "no:cacheprovider",
        "-q",
    ]
    started = time.monotonic()
    result = ProcessResult(side.name, pair, -1)
    try:
        done = subprocess.run(
            cmd, cwd=side.path, env=environment(side), capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        result.problem = f"{side.name} process {pair} did not finish in {timeout_s:.0f} s"
        return result
    result.returncode = done.returncode
    result.seconds = time.monotonic() - started
    tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-5:])
    if done.returncode not in (0, 1, 5):  # 1: some test failed; 5: nothing collected
        result.problem = f"{side.name} process {pair} exited with {done.returncode}: {tail}"
    try:
        result.outcomes, result.durations = read_junit(xml_path)
    except (OSError, ET.ParseError) as exc:
        result.problem = result.problem or f"{side.name} process {pair} left no test outcomes ({exc}): {tail}"
        return result
    if not json_path.exists() and recorded_nothing(done.returncode, result.outcomes):
        return result
    try:
        run = read_run(json_path)
    except (OSError, RunFileError) as exc:
        result.problem = result.problem or f"{side.name} process {pair} left no run file ({exc}): {tail}"
        return result
    result.records = {r.nodeid: r for r in run.records}
    return result

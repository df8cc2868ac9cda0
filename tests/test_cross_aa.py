"""`benchmarks/cross_aa.py`: each run held out and judged against the baselines the others make.

Ground truth: four runs of four tests whose latencies only jitter, with one test made 3x slower in
one run. The leave-one-out A/A must find exactly that one, in the run where it was slow, and nothing
else: not in the runs whose baselines hold the slow run (the faster runs outvote it).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from pytest_efficientllm.storage.runfile import Run, write_run
from tests.helpers import REPO_ROOT
from tests.helpers.record_builders import latency, record

SPEC = importlib.util.spec_from_file_location("cross_aa", REPO_ROOT / "benchmarks" / "cross_aa.py")
assert SPEC is not None and SPEC.loader is not None
cross_aa = importlib.util.module_from_spec(SPEC)
sys.modules["cross_aa"] = cross_aa  # its dataclasses look their module up there
SPEC.loader.exec_module(cross_aa)

TESTS = ("test_a", "test_b", "test_c", "test_d")
SLOW_TEST = "test_c"
H100 = {"profile": "h100", "gpu_name": "NVIDIA H100 80GB HBM3"}


def _runs(tmp_path: Path, slowdown: float, slow_run: int = 2) -> list[Path]:
    files = []
    for i in range(4):
        records = []
        for j, name in enumerate(TESTS):
            median = 0.010 * (1 + 0.004 * ((i * 3 + j) % 5 - 2))  # runs differ by up to +-0.8%
            if i == slow_run and name == SLOW_TEST:
                median *= slowdown
            al = latency(median, n=9, spread=0.01, seed=10 * i + j)
            records.append(record(f"suites/test_x.py::{name}", al, profile="h100", fingerprint=H100))
        path = tmp_path / f"suites-run-{i + 1}.json"
        write_run(path, Run(records=records))
        files.append(path)
    return files


@pytest.mark.parametrize("slow_run", [2, 3], ids=["a-middle-run", "the-last-run"])
def test_the_one_slowed_test_fails_in_its_own_run_and_nowhere_else(tmp_path: Path, slow_run: int) -> None:
    # The last run is where the real A/A sits: judged against baselines that held it, it would pass.
    per_run, total = cross_aa.cross_aa(_runs(tmp_path, slowdown=3.0, slow_run=slow_run), [])
    assert total.checks["AL"] == 16  # every test of every run had a baseline to be judged against
    assert total.alone["AL"] == 1
    failed = {name: tally.alone["AL"] for name, tally in per_run}
    assert failed == {f"suites-run-{i + 1}": int(i == slow_run) for i in range(4)}
    assert total.examples and total.examples[0].startswith(f"suites/test_x.py::{SLOW_TEST} ")
    # The vote's first process, at its looser bound, suspects at least what fails alone.
    assert dict(per_run)[f"suites-run-{slow_run + 1}"].suspect["AL"] >= 1


def test_unchanged_runs_raise_no_alarm(tmp_path: Path) -> None:
    per_run, total = cross_aa.cross_aa(_runs(tmp_path, slowdown=1.0), [])
    assert total.checks["AL"] == 16
    assert total.alone["AL"] == 0 and total.suspect["AL"] == 0


def test_a_run_wide_limit_is_applied(tmp_path: Path) -> None:
    # A 3x slowdown is inside a +400% tolerance: the limit replaces the default 5%.
    files = _runs(tmp_path, slowdown=3.0)
    _, total = cross_aa.cross_aa(files, cross_aa.parse_limit_assignments(["AL=+400%"], "--limit"))
    assert total.checks["AL"] == 16 and total.alone["AL"] == 0


def test_the_folder_of_a_gpu_check_is_read_in_the_order_its_phases_ran(tmp_path: Path) -> None:
    for name in ("suites-aa", "suites-update-1", "suites-update-2"):
        (tmp_path / f"{name}.json").write_text("{}")
    (tmp_path / "phases.json").write_text(
        '{"phases": [{"phase": "tests"}, {"phase": "suites-update-1"}, {"phase": "suites-update-2"},'
        ' {"phase": "suites-aa"}]}'
    )
    assert [p.stem for p in cross_aa.run_files([tmp_path])] == ["suites-update-1", "suites-update-2", "suites-aa"]


def test_runs_of_two_profiles_are_refused(tmp_path: Path) -> None:
    files = _runs(tmp_path, slowdown=1.0)
    other = tmp_path / "cpu.json"
    write_run(other, Run(records=[record("suites/test_x.py::test_a", latency(0.01))]))
    with pytest.raises(SystemExit, match="one profile"):
        cross_aa.cross_aa([*files, other], [])


def test_a_run_is_never_judged_against_baselines_that_hold_it(tmp_path: Path) -> None:
    # The last run twice as fast: held out, it reads as improved. Judged against baselines that held
    # it, it would pass, since a faster run restarts the history as a deliberate speed-up does.
    per_run, _ = cross_aa.cross_aa(_runs(tmp_path, slowdown=0.5, slow_run=3), [])
    improved = {name: tally.improved["AL"] for name, tally in per_run}
    assert improved["suites-run-4"] == 1


def test_a_fingerprint_difference_can_be_posed_and_only_another_cpu_calibrates(tmp_path: Path) -> None:
    # Unchanged runs whose calibration indexes disagree by up to 30%, as one machine's do.
    files = []
    for i in range(4):
        records = []
        for j, name in enumerate(TESTS):
            index = {"index_s": 0.002 * (1 + 0.1 * i), "cpu_index_s": 0.002 * (1 + 0.1 * i)}
            fingerprint = {**H100, "cpu_model": "Test CPU", "python": "3.11.7", "calibration": index}
            cpu_time = latency(0.010, n=9, spread=0.01, seed=10 * i + j, name="cpu_time_per_round")
            records.append(record(f"suites/test_x.py::{name}", cpu_time, profile="h100", fingerprint=fingerprint))
        path = tmp_path / f"suites-run-{i + 1}.json"
        write_run(path, Run(records=records))
        files.append(path)
    limits = cross_aa.parse_limit_assignments(["cpu_time_per_round=+5%"], "--limit")
    _, same = cross_aa.cross_aa(files, limits)
    _, python = cross_aa.cross_aa(files, limits, differ="python")
    _, cpu = cross_aa.cross_aa(files, limits, differ="cpu_model")
    metric = "cpu_time_per_round"
    assert same.checks[metric] == python.checks[metric] == cpu.checks[metric] == 16
    # Another Python on the same CPU compares raw: the unchanged runs stay unchanged.
    assert (python.alone[metric], python.warned[metric], python.improved[metric]) == (0, 0, 0)
    # Another CPU is divided by the indexes, which put the same times up to 30% apart.
    assert cpu.alone[metric] + cpu.improved[metric] + cpu.warned[metric] > 0
    assert "made to differ from its baselines' in `cpu_model`" in cross_aa.table(files, limits, [], cpu, "cpu_model")

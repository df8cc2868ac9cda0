"""`benchmarks/gpu_check.py`'s plan of suite runs in a short GPU slot (`fit_runs`), and the order of its tests phase.

A run of unchanged code takes about as long as the one before it, so the check drops update runs
it has no time for, keeping the A/A and at least one recorded run, instead of cutting runs short
(a run interrupted part-way records baselines for only the tests it reached).
"""

from __future__ import annotations

import importlib.util
import sys

from tests.helpers import REPO_ROOT

SPEC = importlib.util.spec_from_file_location("gpu_check", REPO_ROOT / "benchmarks" / "gpu_check.py")
assert SPEC is not None and SPEC.loader is not None
gpu_check = importlib.util.module_from_spec(SPEC)
sys.modules["gpu_check"] = gpu_check
SPEC.loader.exec_module(gpu_check)

PLAN = ["update-1", "update-2", "update-3", "aa"]


def test_the_first_run_gets_half_of_the_time_so_an_equal_a_a_still_fits() -> None:
    assert gpu_check.fit_runs(PLAN, recorded=0, last_wall_s=None, avail_s=300.0) == (PLAN, 150.0)


def test_with_time_for_all_runs_nothing_is_dropped_and_the_rest_share_evenly() -> None:
    runs, share = gpu_check.fit_runs(PLAN[1:], recorded=1, last_wall_s=60.0, avail_s=240.0)
    assert runs == PLAN[1:] and share == 80.0


def test_update_runs_are_dropped_from_the_end_until_the_rest_fit() -> None:
    assert gpu_check.fit_runs(PLAN[1:], recorded=1, last_wall_s=90.0, avail_s=200.0)[0] == ["update-2", "aa"]
    assert gpu_check.fit_runs(PLAN[1:], recorded=1, last_wall_s=90.0, avail_s=120.0)[0] == ["aa"]


def test_the_a_a_and_the_only_recorded_run_are_never_dropped() -> None:
    assert gpu_check.fit_runs(["aa"], recorded=1, last_wall_s=500.0, avail_s=10.0)[0] == ["aa"]
    # Nothing recorded yet: the one update run left stays, or there would be no baselines at all.
    assert gpu_check.fit_runs(["update-1", "aa"], recorded=0, last_wall_s=500.0, avail_s=10.0)[0] == [
        "update-1",
        "aa",
    ]


def test_the_tests_phase_names_every_file_of_a_slow_test_first_and_only_for_the_whole_folder() -> None:
    marked = sorted(
        str(path.relative_to(REPO_ROOT))
        for path in (REPO_ROOT / "tests").rglob("test_*.py")
        if "@pytest.mark.slow\n" in path.read_text(encoding="utf-8")
    )
    assert sorted(gpu_check.SLOW_FIRST) == marked
    assert gpu_check.tests_phase_paths(["tests/"]) == [*gpu_check.SLOW_FIRST, "tests/"]
    assert gpu_check.tests_phase_paths(["tests/telemetry"]) == ["tests/telemetry"]

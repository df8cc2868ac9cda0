"""Under pytest-xdist: the same verdicts and baseline files as a serial run, and faults of workers.

Subprocess runs (`runpytest_subprocess`), because xdist starts real worker processes.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from pytest_efficientllm.judging.fingerprint import fingerprint_diff
from pytest_efficientllm.measuring.fingerprint import package_versions
from pytest_efficientllm.measuring.session import EfficiencySession, Options
from pytest_efficientllm.storage.baselines import BaselineStore
from tests.helpers.record_builders import counted, record

SUITE = """
import os, pytest

SCALE = float(os.environ.get("EFF_SCALE", "1"))

@pytest.mark.parametrize("case", ["grow", "shrink", "same", "a/b c-ü"])
def test_counted(efficiency, case):
    factor = {"grow": SCALE, "shrink": 1 / SCALE}.get(case, 1.0)
    efficiency.count("peak_memory", int(1_000_000 * factor))
    efficiency.count("flops", 4096, unit="FLOP", direction="lower")

@pytest.mark.efficiency(rounds=5, warmup=1)
def test_measured(efficiency):
    efficiency.measure(lambda: sum(range(2000)), tokens=8)

def test_new_one(efficiency):
    if SCALE == 1:
        pytest.skip("appears only in the second run")
    efficiency.count("flops", 1, unit="FLOP", direction="lower")

def test_functional_failure(efficiency):
    efficiency.count("flops", 1, unit="FLOP", direction="lower")
    assert SCALE == 1

def test_device_pinned_per_worker():
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == worker[2:]
"""
COMMON = (
    "-p",
    "no:cacheprovider",
    "--efficiency-threads=1",
    "--efficiency-devices=0,1",
    "--efficiency-calibrate-every=off",
    "--efficiency-limit=latency=+100000%",
)  # measured latency must not decide this comparison


@pytest.fixture(autouse=True)
def _not_inside_an_outer_xdist_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    # When this file itself runs under xdist, the runs below would inherit the outer
    # worker's identity and worker count through the environment.
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)


def _seed(root: Path) -> None:
    """The baselines both runs compare with: counted facts at scale 1, written by the store itself."""
    store = BaselineStore(root / "baselines", "cpu")
    cases = ["grow", "shrink", "same", "a/b c-\\xfc"]  # pytest escapes non-ASCII in node ids
    store.update(
        [
            record(
                f"test_suite.py::test_counted[{c}]",
                counted("peak_memory", 1_000_000),
                counted("flops", 4096, "FLOP"),
                fingerprint={"torch_threads": 1},
            )
            for c in cases
        ]
    )


def _normalise(doc: dict) -> dict:
    """A baseline file without what differs between any two runs: times (a measured metric's
    run history too), timestamps, calibration.

    A measured metric's note goes too: whether a sampled metric is available depends on how
    long its window ran (`retained_memory` needs two RSS samples, and a 0.1 ms window gets
    them only when the machine is slow), which no serial or xdist run controls.
    """
    for entry in doc["tests"].values():
        entry.pop("created")
        entry["fingerprint"].pop("calibration", None)
        for metric in entry["metrics"].values():
            if metric["source"] != "counted":
                for key in ("value", "samples", "stats", "note", "history"):
                    metric.pop(key, None)
    return doc


def _run(pytester: pytest.Pytester, *extra: str) -> tuple[pytest.RunResult, dict, dict]:
    # One run per mode: it compares with the seeded baselines (verdicts to the JSON) and
    # rewrites them (the files to compare).
    _seed(pytester.path)
    result = pytester.runpytest_subprocess(
        *COMMON, *extra, "--update-baselines", "--efficiency-json=run.json", timeout=240
    )
    run = json.loads((pytester.path / "run.json").read_text())
    verdicts = {r["nodeid"]: sorted((v["metric"], v["status"]) for v in r["verdicts"]) for r in run["records"]}
    baselines = _normalise(json.loads((pytester.path / "baselines/cpu/test_suite.py.json").read_text()))
    shutil.rmtree(pytester.path / "baselines")
    return result, verdicts, baselines


def test_xdist_gives_the_same_verdicts_and_baseline_files_as_a_serial_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    monkeypatch.setenv("EFF_SCALE", "1.02")
    serial, serial_verdicts, serial_files = _run(pytester)
    xdist, xdist_verdicts, xdist_files = _run(pytester, "-n", "2")
    for result in (serial, xdist):
        result.assert_outcomes(passed=7, failed=1)  # test_functional_failure; the gate only warns under update

    assert xdist_verdicts == serial_verdicts
    assert xdist_files == serial_files
    assert ("peak_memory", "warn") in serial_verdicts["test_suite.py::test_counted[grow]"]  # +2%: being replaced
    assert ("peak_memory", "improved") in serial_verdicts["test_suite.py::test_counted[shrink]"]
    assert serial_verdicts["test_suite.py::test_new_one"] == [("*", "new")]
    assert serial_verdicts["test_suite.py::test_functional_failure"] == []  # its own assertion failed first
    # Written: every test that passed its own assertions, none that failed them.
    assert sorted(serial_files["tests"]) == sorted(
        [
            "test_suite.py::test_counted[a/b c-\\xfc]",
            "test_suite.py::test_counted[grow]",
            "test_suite.py::test_counted[same]",
            "test_suite.py::test_counted[shrink]",
            "test_suite.py::test_measured",
            "test_suite.py::test_new_one",
        ]
    )
    assert (
        "2 xdist workers x 1 torch thread(s) each (2 usable cores / 2 workers); GPUs pinned per worker: 0, 1"
        in " ".join(xdist.stdout.str().split())
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fixed layout needs Linux")
def test_under_the_fixed_layout_xdist_gives_the_verdicts_and_files_of_a_serial_run(pytester: pytest.Pytester) -> None:
    # This project's own settings: one process layout (layout.py), padded stack included.
    pytester.makepyfile(test_suite=SUITE)
    flags = (*COMMON, "--efficiency-fixed-layout", "--efficiency-limit=cpu_time_per_round=+100000%")
    pytester.runpytest_subprocess(*flags, "--update-baselines", timeout=240).assert_outcomes(passed=7, skipped=1)
    path = pytester.path / "baselines/cpu/test_suite.py.json"
    recorded = path.read_text()

    result = pytester.runpytest_subprocess(
        *flags, "-n", "2", "--update-baselines", "--efficiency-json=run.json", timeout=240
    )
    result.assert_outcomes(passed=7, skipped=1)
    run = json.loads((pytester.path / "run.json").read_text())
    # What a serial run against its own recording finds: every metric passes, and no fingerprint
    # warning (the workers measured under the serial run's layout: stack padded too).
    assert {(v["metric"] == "*", v["status"]) for r in run["records"] for v in r["verdicts"]} == {(False, "pass")}
    assert {json.dumps(r["fingerprint"]["process_layout"], sort_keys=True) for r in run["records"]} == {
        '{"aslr": false, "hash_seed": "0", "stack_padded": true}'
    }
    rewritten = path.read_text()
    assert _normalise(json.loads(rewritten)) == _normalise(json.loads(recorded))
    # Counted facts to the byte; the measured test's new times are its only update.
    before, after = json.loads(recorded)["tests"], json.loads(rewritten)["tests"]
    assert [n for n in before if after[n] != before[n]] == ["test_suite.py::test_measured"]
    out = " ".join(result.stdout.str().split())
    assert "0 added, 1 updated, 5 unchanged" in out
    assert "process layout: ASLR off, str hash seed 0, stack padded" in out
    assert "xdist worker(s)" not in out  # no worker measured under another layout


def test_a_workers_share_of_the_cores_shows_in_the_fingerprint_once() -> None:
    # Two workers on two cores measure with one thread each where a serial run has two: that
    # changes times, so the comparison warns (and calibrates), but on the thread count alone,
    # not again through the compute source (which also carried the CPU clock of the moment).
    threads = torch.get_num_threads()
    try:
        serial = EfficiencySession(Options(gpu="cpu", threads=2)).fingerprint
        worker = EfficiencySession(Options(gpu="cpu", threads=1)).fingerprint
    finally:
        torch.set_num_threads(threads)
    assert fingerprint_diff(serial, worker).warnings == ["torch_threads: 2 -> 1"]


KILLER = """
import os, signal, pytest

@pytest.mark.parametrize("n", range(4))
def test_counted(efficiency, n):
    efficiency.count("flops", 100 + n, unit="FLOP", direction="lower")

def test_regressed(efficiency):
    efficiency.count("flops", 2000, unit="FLOP", direction="lower")

def test_dies(efficiency):
    efficiency.count("flops", 1, unit="FLOP", direction="lower")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_worker_costs_only_its_own_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=KILLER)
    # Recorded under this environment's package versions: a count that moved under others says so.
    BaselineStore(pytester.path / "baselines", "cpu").update(
        [
            record(
                "test_suite.py::test_regressed",
                counted("flops", 1000, "FLOP"),
                fingerprint={"packages": package_versions()},
            )
        ]
    )
    # The dead worker's test is missing; everything else is compared and written.
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "-n",
        "2",
        "--efficiency-calibrate-every=off",
        "--update-baselines",
        "--efficiency-json=run.json",
        "-v",  # each warning's numbers in the summary
        timeout=240,
    )
    result.assert_outcomes(passed=5, failed=1)
    out = " ".join(result.stdout.str().split())
    assert "flops regression (counted) (baseline being replaced): 1 test" in out
    assert (
        "test_suite.py::test_regressed: 2000 FLOP vs baseline 1000 FLOP (+100.0%; counted, exact): regression "
        "[baseline being replaced]" in out
    )
    assert "went down: the test it was running has no record" in out
    assert "2 xdist worker" in out and "torch thread(s) each" in out
    doc = json.loads((pytester.path / "baselines/cpu/test_suite.py.json").read_text())
    assert sorted(doc["tests"]) == [f"test_suite.py::test_counted[{n}]" for n in range(4)] + [
        "test_suite.py::test_regressed"
    ]
    run = json.loads((pytester.path / "run.json").read_text())
    assert len(run["records"]) == 5

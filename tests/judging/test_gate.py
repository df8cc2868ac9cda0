"""The per-test gate decision, the wire format, device pinning, calibration renewal, summary layout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from pytest_efficientllm.core.limits import parse_limit, parse_limit_assignments
from pytest_efficientllm.glue.state import TestResult
from pytest_efficientllm.glue.summary import WIDTH, _threads_line, details, table
from pytest_efficientllm.glue.worker import lock_device, parse_devices, pin_device
from pytest_efficientllm.judging.gate import GateOptions, effective_limits, judge
from pytest_efficientllm.judging.verdicts import Verdict
from pytest_efficientllm.measuring.calibration import Calibrator
from tests.helpers.record_builders import counted, latency, record
from tests.helpers.torch_cuda_double import FakeTorchCuda


def statuses(verdicts: list[Verdict]) -> dict[str, str]:
    return {v.metric: v.status for v in verdicts}


def test_judge_combines_budgets_and_the_baseline() -> None:
    cur = record("t.py::a", counted("peak_memory", 2000))
    limits = (parse_limit("peak_memory", "<= 1000 B"),)
    v = judge(cur, limits, record("t.py::a", counted("peak_memory", 1000)), "", GateOptions())
    assert [(x.kind, x.status) for x in v] == [("budget", "fail"), ("baseline", "fail")]


def test_missing_baseline_is_new_unless_strict() -> None:
    cur = record("t.py::a", counted("peak_memory", 1))
    assert statuses(judge(cur, (), None, "", GateOptions())) == {"*": "new"}
    assert statuses(judge(cur, (), None, "", GateOptions(strict=True))) == {"*": "fail"}
    assert statuses(judge(cur, (), None, "", GateOptions(strict=True, update=True))) == {"*": "new"}


def test_update_softens_regressions_but_not_an_unreadable_baseline() -> None:
    cur = record("t.py::a", counted("peak_memory", 2))
    v = judge(cur, (), record("t.py::a", counted("peak_memory", 1)), "", GateOptions(update=True))
    assert statuses(v) == {"peak_memory": "warn"} and "being replaced" in v[0].message
    assert statuses(judge(cur, (), None, "x.json: corrupt", GateOptions(update=True))) == {"*": "error"}


def test_modes() -> None:
    cur = record("t.py::a", counted("peak_memory", 2))
    base = record("t.py::a", counted("peak_memory", 1))
    assert statuses(judge(cur, (), base, "", GateOptions(mode="warn"))) == {"peak_memory": "warn"}
    assert judge(cur, (), base, "", GateOptions(mode="off")) == []
    with pytest.raises(ValueError, match="--efficiency-gate='loud'"):
        GateOptions(mode="loud")


def test_limit_precedence_ini_then_marker_then_cli_and_run_wide_limits_only_where_recorded() -> None:
    ini = parse_limit_assignments(["latency=+10%", "peak_memory=+3%"], "ini")
    cli = parse_limit_assignments(["peak_memory=+1%"], "cli")
    marker = (parse_limit("latency", "+20%"),)
    merged = {lim.metric: lim.text for lim in effective_limits(marker, GateOptions(ini_limits=ini, cli_limits=cli))}
    assert merged == {"AL": "+20%", "peak_memory": "+1%"}
    only = effective_limits((), GateOptions(ini_limits=ini, cli_limits=cli), recorded={"peak_memory"})
    assert [lim.metric for lim in only] == ["peak_memory"]
    with pytest.raises(ValueError, match="cli: 'latency': expected METRIC=LIMIT"):
        parse_limit_assignments(["latency"], "cli")


def test_results_cross_the_wire_unchanged() -> None:
    result = TestResult(record("t.py::a[ü/1]", latency(0.01)), [Verdict("AL", "fail", "slower", "baseline", 0.2)], "passed")
    back = TestResult.from_wire(result.to_wire())
    assert back.record == result.record and back.verdicts == result.verdicts and back.functional == "passed"
    with pytest.raises(ValueError, match="mixed plugin versions"):
        TestResult.from_wire({**result.to_wire(), "version": 99})


def test_devices_are_parsed_and_worker_i_gets_device_i() -> None:
    assert parse_devices("0, 1") == ("0", "1") and parse_devices("") == ()
    for bad in ("0,0", "0,x", " , "):
        with pytest.raises(ValueError, match="--efficiency-devices"):
            parse_devices(bad)
    env: dict[str, str] = {}
    assert pin_device(("0", "1"), "gw1", 2, env) == ("1", False) and env["CUDA_VISIBLE_DEVICES"] == "1"
    assert pin_device(("0", "1"), "gw2", 3, env) == ("0", True)  # shares device 0 with gw0: serialised
    assert pin_device(("3",), None, 1, env) == ("3", False)
    env.clear()
    assert pin_device((), "gw0", 2, env) == (None, False) and env == {}


def test_unpinned_workers_on_a_cuda_machine_lock_the_device_they_all_measure_on() -> None:
    cuda = FakeTorchCuda()  # current_device() is 0, as for every unpinned worker
    assert lock_device(None, False, 2, cuda, {}) == "0"
    # Named as --efficiency-devices names it: the physical device CUDA_VISIBLE_DEVICES maps to 0.
    assert lock_device(None, False, 2, cuda, {"CUDA_VISIBLE_DEVICES": "2,3"}) == "2"
    assert lock_device(None, False, 2, cuda, {"CUDA_VISIBLE_DEVICES": "GPU-aaaa1111"}) == "GPU-aaaa1111"
    assert lock_device(None, False, 1, cuda, {}) is None  # a serial run: no other worker
    assert lock_device(None, False, 2, FakeTorchCuda(available=False), {}) is None  # nothing to share
    # Pinned workers lock only a device they share.
    assert lock_device("1", True, 3, cuda, {}) == "1"
    assert lock_device("1", False, 2, cuda, {}) is None


# Takes the lock for argv[1]; touches argv[2] once it holds it; waits for the file argv[3]
# (if not "-") before trying, and holds the lock until the file argv[4] exists ("-": 0.3 s).
LOCK_HOLDER = """
import sys, time
from pathlib import Path
from pytest_efficientllm.glue.worker import device_lock

device, holding, wait_before, hold_until = sys.argv[1:5]

def wait_for(name):
    deadline = time.time() + 10
    while not Path(name).exists():
        if time.time() > deadline:
            sys.exit(f"waited 10 s for {name}")
        time.sleep(0.005)

if wait_before != "-":
    wait_for(wait_before)
tried = time.time()
with device_lock(device):
    taken = time.time()
    Path(holding).touch()
    if hold_until == "-":
        time.sleep(0.3)
    else:
        wait_for(hold_until)
    released = time.time()
print(tried, taken, released)
"""


def _lock_holders(tmp_path: Path, *args: tuple[str, str, str, str]) -> list[tuple[float, float, float]]:
    """Run one LOCK_HOLDER process per argument tuple at once; their (tried, taken, released) times."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # device_lock's folder, away from real runs' locks
    procs = [subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, *a], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for a in args]
    times = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        tried, taken, released = map(float, out.split())
        times.append((tried, taken, released))
    return times


def test_two_processes_never_hold_one_device_lock_at_once(tmp_path: Path) -> None:
    a, b = (str(tmp_path / name) for name in ("a", "b"))
    first, second = _lock_holders(tmp_path, ("0", a, "-", "-"), ("0", b, a, "-"))
    # The second tried while the first held the lock, and got it only after the first let go.
    assert second[0] < first[2] <= second[1]


def test_locks_of_different_devices_do_not_block_each_other(tmp_path: Path) -> None:
    a, b = (str(tmp_path / name) for name in ("a", "b"))
    # The first holds device 0 until the second holds device 1: they would wait for ever if
    # one lock blocked the other (the holder gives up after 10 s).
    first, second = _lock_holders(tmp_path, ("0", a, "-", b), ("1", b, a, "-"))
    assert max(first[1], second[1]) < min(first[2], second[2])


def test_calibration_is_renewed_when_older_than_the_interval() -> None:
    now = [0.0]
    cal = Calibrator(every_s=60.0, clock=lambda: now[0])
    first = cal.ensure()
    assert first.matmul_s > 0 and first.copy_s > 0 and cal.ensure() is first
    now[0] = 61.0
    assert cal.ensure() is not first and len(cal.history) == 2
    never = Calibrator(every_s=None, clock=lambda: now[0])
    once = never.ensure()
    now[0] = 1e9
    assert never.ensure() is once


def test_the_summary_fits_100_columns_and_shows_what_broke() -> None:
    long_id = "suites/test_architecture.py::test_pretrain_step[" + "MLA-latent-" * 8 + "]"
    results = [
        TestResult(record(long_id, latency(0.0123), counted("peak_memory", 3 * 2**30)),
                   [Verdict("AL", "fail", "12.3 ms n=7 vs baseline 10.1 ms n=7 (+21.8%, 95% interval +18.0% .. "
                            "+25.1%; tolerance +5%): slower beyond tolerance and noise", "baseline", 0.218)], "passed"),
        TestResult(record("t.py::ok", latency(0.001)), [Verdict("AL", "pass", "fine", "baseline", -0.01)], "passed"),
    ]
    lines = table(results) + details(results)
    assert max(len(line) for line in lines) <= WIDTH
    assert any("AL +21.8%" in line and line.rstrip().endswith("FAIL") for line in lines)
    assert any("test_pretrain_step[MLA" in line and "…" in line for line in lines)
    assert any("tolerance +5%" in line for line in lines)


def test_the_change_column_keeps_the_percentage_of_a_long_metric_name() -> None:
    v = Verdict("cpu_time_per_round", "warn", "+22.0% ...", "baseline", 0.2204)
    results = [TestResult(record("t.py::slow", latency(0.001)), [v], "passed")]
    row = table(results)[1]
    assert "cpu/round +22.0%" in row and row.endswith("warn")
    odd = Verdict("latency_p99_of_a_custom_window", "fail", "", "baseline", -12.5)
    row = table([TestResult(record("t.py::odd", latency(0.001)), [odd], "passed")])[1]
    assert "-1250.0%" in row  # the name gives way, not the number


def test_the_summary_says_when_workers_share_a_gpu_under_its_lock() -> None:
    workers = {f"gw{i}": {"threads": 4, "cores": 16, "device": None, "locked_device": "0"} for i in range(2)}
    line = _threads_line(None, SimpleNamespace(workers=workers))  # type: ignore[arg-type]
    assert "2 xdist workers" in line and "GPU 0 shared by workers: one measured test at a time" in line
    for w in workers.values():
        w["locked_device"] = None
    assert "shared" not in _threads_line(None, SimpleNamespace(workers=workers))  # type: ignore[arg-type]


def test_a_baseline_at_another_world_size_is_reported_not_compared() -> None:
    from pytest_efficientllm.core.record import Metric, Record
    from pytest_efficientllm.judging.gate import GateOptions, judge

    al = Metric("AL", 1.0, "s", "lower", "measured", "t", samples=(1.0,) * 5)
    baseline = Record("t.py::t", "cpu", metrics={"AL": al}, world_size=2)
    current = Record("t.py::t", "cpu", metrics={"AL": al}, world_size=4)
    verdicts = judge(current, (), baseline, "", GateOptions())
    assert [(v.metric, v.status) for v in verdicts] == [("*", "warn")]
    assert "world_size=2" in verdicts[0].message and "not compared" in verdicts[0].message

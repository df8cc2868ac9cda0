"""The xdist worker's side: results across the wire, device parsing and pinning, device locks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_efficientllm.glue.options import parse_devices
from pytest_efficientllm.glue.state import TestResult
from pytest_efficientllm.glue.worker import lock_device, pin_device
from pytest_efficientllm.judging.verdicts import Verdict
from tests.helpers.record_builders import latency, record
from tests.helpers.torch_cuda_double import FakeTorchCuda


def test_results_cross_the_wire_unchanged() -> None:
    result = TestResult(
        record("t.py::a[ü/1]", latency(0.01)), [Verdict("AL", "fail", "slower", "baseline", 0.2)], "passed"
    )
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
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", LOCK_HOLDER, *a], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for a in args
    ]
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

"""Interrupts and failures while baselines are written: every file is the old one or the new one.

`--update-baselines` writes through `BaselineStore.update` (lock, re-read, merge, write a
temporary file, rename). Faults are injected at each step of the write and, for real, by
sending SIGINT to a process that is rewriting a baseline file in a loop.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_efficientllm.storage import runfile
from pytest_efficientllm.storage.baselines import BaselineStore, read_entries
from tests.helpers import REPO_ROOT
from tests.helpers.fault_harness import RECORDS_CONFTEST, recorded
from tests.helpers.read_only_folders import make_read_only, undo_read_only
from tests.helpers.record_builders import counted, latency, record

NODE = "tests/test_x.py::test_0"
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestAssertRewriteWarning")


def _records(version: int, n_tests: int = 3):
    return [
        record(
            f"tests/test_x.py::test_{i}",
            latency(0.01 * version, n=50, seed=version),
            counted("peak_memory", 2**20 * version),
        )
        for i in range(n_tests)
    ]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.tmp"))


@pytest.mark.parametrize("step", ["write", "fsync", "replace"])
def test_keyboard_interrupt_at_each_step_of_the_write_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    store = BaselineStore(tmp_path, "cpu")
    store.update(_records(1))
    path = store.path_for(NODE)
    old = path.read_bytes()

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    if step == "write":
        real_fdopen = os.fdopen

        class InterruptingFile:
            """Wraps the temporary file; writes half its text, then the user presses Ctrl-C."""

            def __init__(self, fh) -> None:
                self.fh = fh

            def __enter__(self):
                return self

            def __exit__(self, *exc) -> None:
                self.fh.close()

            def write(self, text: str) -> None:
                self.fh.write(text[: len(text) // 2])
                self.fh.flush()
                raise KeyboardInterrupt

        monkeypatch.setattr(runfile.os, "fdopen", lambda fd, *a, **k: InterruptingFile(real_fdopen(fd, *a, **k)))
    else:
        monkeypatch.setattr(runfile.os, step, interrupt)

    with pytest.raises(KeyboardInterrupt):
        store.update(_records(2))
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert _leftovers(tmp_path) == []
    assert read_entries(path)[NODE].metrics["peak_memory"].value == 2**20


@pytest.fixture
def ctrl_c_raises() -> Iterator[None]:
    # An xdist worker, or a job a shell started in the background, may ignore SIGINT.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_just_after_the_temporary_file_is_made_waits_for_the_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ctrl_c_raises: None
) -> None:
    # The signal lands where no try/finally could clean up: after mkstemp made the file, before it
    # returned. Held back, it takes effect once the write is done: the new file, nothing left over.
    store = BaselineStore(tmp_path, "cpu")
    store.update(_records(1))
    real_mkstemp = runfile.tempfile.mkstemp

    def mkstemp_then_ctrl_c(*args, **kwargs):
        made = real_mkstemp(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        return made

    monkeypatch.setattr(runfile.tempfile, "mkstemp", mkstemp_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        store.update(_records(2))
    monkeypatch.undo()
    assert _leftovers(tmp_path) == []
    assert read_entries(store.path_for(NODE))[NODE].metrics["peak_memory"].value == 2 * 2**20
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back


# Ctrl-C with SIGINT at its default action (a process whose parent set it so): the write completes,
# then the signal ends the process as it would have; a write that no Ctrl-C met goes on.
_DEFAULT_ACTION = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
sys.path.insert(0, {repo_root!r})
from pytest_efficientllm.storage import runfile
runfile.write_atomic({path!r}, "first")
print("first written", flush=True)
real_mkstemp = runfile.tempfile.mkstemp
def mkstemp_then_ctrl_c(*args, **kwargs):
    made = real_mkstemp(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGINT)
    return made
runfile.tempfile.mkstemp = mkstemp_then_ctrl_c
runfile.write_atomic({path!r}, "second")
print("went on after Ctrl-C", flush=True)
"""


def test_ctrl_c_at_the_default_action_ends_the_process_once_the_write_is_done(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    script = _DEFAULT_ACTION.format(repo_root=str(REPO_ROOT), path=str(path))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines() == ["first written"], done.stderr
    assert done.returncode == -signal.SIGINT
    assert path.read_text() == "second" and _leftovers(tmp_path) == []


def test_a_write_from_another_thread_needs_no_signal_handler(tmp_path: Path) -> None:
    # Python lets only the main thread set a signal handler; a write from any other thread (a
    # sampler's, a user's executor) is written as it is.
    errors: list[BaseException] = []

    def write() -> None:
        try:
            runfile.write_atomic(tmp_path / "run.json", "from a thread")
        except BaseException as exc:  # whatever it was, the test reports it
            errors.append(exc)

    worker = threading.Thread(target=write)
    worker.start()
    worker.join(timeout=60)
    assert errors == [] and (tmp_path / "run.json").read_text() == "from a thread"


# A process that rewrites one baseline file with version 1, 2, 1, 2, ... until interrupted.
_REWRITER = """
import signal, sys
# A shell that starts a job in the background (CI runners can) makes it ignore SIGINT, and
# its children inherit that; Ctrl-C is what this test is about, so restore it.
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, {repo_root!r})
from tests.helpers.record_builders import counted, latency, record
from pytest_efficientllm.storage.baselines import BaselineStore
store = BaselineStore({root!r}, "cpu")
versions = [
    [
        record(f"tests/test_x.py::test_{{i}}", latency(0.01 * v, n=2000, seed=v), counted("peak_memory", 2**20 * v))
        for i in range(20)
    ]
    for v in (1, 2)
]
store.update(versions[0])
print("ready", flush=True)
while True:
    for v in versions:
        store.update(v)
"""


def _without_history(text: str) -> dict:
    data = json.loads(text)  # a half-written file fails here
    for entry in data["tests"].values():
        for metric in entry["metrics"].values():
            metric.pop("history", None)
    return data


def test_sigint_while_rewriting_a_baseline_file_never_leaves_it_half_written(tmp_path: Path) -> None:
    script = _REWRITER.format(repo_root=str(REPO_ROOT), root=str(tmp_path))
    # What the file holds after a complete write of each version, for comparison.
    expected = {}
    for v in (1, 2):
        ref = BaselineStore(tmp_path / f"ref{v}", "cpu")
        ref.update(
            [
                record(
                    f"tests/test_x.py::test_{i}", latency(0.01 * v, n=2000, seed=v), counted("peak_memory", 2**20 * v)
                )
                for i in range(20)
            ]
        )
        expected[v] = ref.path_for(NODE).read_text()
    assert expected[1] != expected[2] and len(expected[1]) > 500_000  # big enough to be caught mid-write

    rng = random.Random(6)
    outcomes = []
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            # A KeyboardInterrupt raised while CPython runs a destructor or weakref callback is
            # reported as "Exception ignored" and lost; a user would press Ctrl-C again.
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        assert proc.returncode != 0  # it was interrupted, not finished
        text = BaselineStore(tmp_path, "cpu").path_for(NODE).read_text()
        # Each rewrite also carries the earlier runs' medians (`history`), which grow with every
        # write; apart from them the file must be exactly one complete version.
        got = _without_history(text)
        assert got in (_without_history(expected[1]), _without_history(expected[2])), (
            "baseline file is neither the old nor the new version"
        )
        outcomes.append(1 if got == _without_history(expected[1]) else 2)
    assert _leftovers(tmp_path / "cpu") == [], "an interrupted write left its temporary file behind"


def test_a_test_that_runs_out_of_memory_under_update_baselines_keeps_its_old_entry(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(RECORDS_CONFTEST)
    body = """
        import pytest, torch

        @pytest.mark.efficiency(rounds=2, warmup=0)
        def test_model(efficiency):
            efficiency.measure(lambda: torch.empty({size}, dtype=torch.uint8).fill_(1), flops=0)

        @pytest.mark.efficiency(rounds=2, warmup=0)
        def test_other(efficiency):
            efficiency.measure(lambda: torch.ones(2**18), flops=0)
        """
    args = ("-p", "no:cacheprovider", "--update-baselines", "--baselines-dir=b", "--efficiency-calibrate-every=off")
    pytester.makepyfile(test_oom=body.format(size=2**20))
    pytester.runpytest(*args).assert_outcomes(passed=2)
    path = pytester.path / "b" / "cpu" / "test_oom.py.json"
    before = json.loads(path.read_text())["tests"]

    pytester.makepyfile(test_oom=body.format(size=2**61))  # now the allocation fails inside the window
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*can't allocate memory*"])
    assert set(recorded(pytester)) == {"test_other"}
    after = json.loads(path.read_text())["tests"]
    model = "test_oom.py::test_model"
    assert after[model] == before[model], "the failed test's baseline changed"
    assert after["test_oom.py::test_other"]["created"] >= before["test_oom.py::test_other"]["created"]


@pytest.mark.parametrize("read_only", ["baselines folder", "lock folder"])
def test_a_lock_that_cannot_be_made_is_an_error_naming_where_and_changes_nothing(
    tmp_path: Path, read_only: str
) -> None:
    root = tmp_path / "baselines"
    store = BaselineStore(root, "cpu")
    store.update(_records(1))
    path = store.path_for(NODE)
    before = path.read_bytes()
    if read_only == "baselines folder":
        # A fresh checkout of committed baselines: no lock folder yet (it is not committed).
        shutil.rmtree(root / ".locks", ignore_errors=True)
        folder = root
    else:  # the lock folder belongs to another user, who has not yet updated this file
        folder = root / ".locks"
        for lock in folder.glob("*.lock"):
            lock.unlink()
    if not make_read_only(folder):
        undo_read_only(folder)
        pytest.skip("cannot make a folder read-only here (root without chattr)")
    try:
        (upd,) = store.update(_records(2))
    finally:
        undo_read_only(folder)
    assert str(root / ".locks") in upd.error and "make it writable" in upd.error and "nothing was written" in upd.error
    assert path.read_bytes() == before


def _unspaced(text: str) -> str:
    """Text without whitespace: the summary wraps long lines at 100 columns, inside words too."""
    return re.sub(r"\s+", "", text)


# A pytester conftest: every baseline lock belongs to another user.
_FOREIGN_LOCK_CONFTEST = '''
import pytest_efficientllm.storage.baselines as baseline_store

class FakeFileLockOfAnotherUser:
    """Test double for filelock.FileLock: opening the lock file is not permitted."""

    def __init__(self, lock_file, **kwargs):
        self.lock_file = lock_file

    def acquire(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self.lock_file))

    def release(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        return None

def pytest_configure(config):
    # pytester runs in this process: put the real lock back when the run ends.
    config.add_cleanup(lambda real=baseline_store.FileLock: setattr(baseline_store, "FileLock", real))
    baseline_store.FileLock = FakeFileLockOfAnotherUser
'''


def test_a_baseline_lock_that_cannot_be_taken_is_reported_and_the_run_file_is_still_written(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(_FOREIGN_LOCK_CONFTEST)
    pytester.makepyfile(test_c="def test_mem(efficiency):\n    efficiency.count('peak_memory', 1000)\n")
    result = pytester.runpytest(
        "-p",
        "no:cacheprovider",
        "--update-baselines",
        "--baselines-dir=b",
        "--efficiency-calibrate-every=off",
        "--efficiency-json=run.json",
    )
    summary = _unspaced(result.stdout.str())
    assert "INTERNALERROR" not in summary
    assert re.search(
        _unspaced(
            r"baselines NOT written: \S+/b/\.locks/\w+\.lock: cannot take the baseline lock "
            r"\(Permission denied\)"
        ),
        summary,
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # asked-for baselines are missing
    run = runfile.read_run(pytester.path / "run.json")
    assert [r.nodeid for r in run.records] == ["test_c.py::test_mem"]
    assert not (pytester.path / "b" / "cpu" / "test_c.py.json").exists()


def test_a_hand_edited_wrong_type_is_reported_by_file_entry_and_metric_and_blocks_the_update(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_c="def test_mem(efficiency):\n    efficiency.count('peak_memory', 1000)\n")
    args = ("-p", "no:cacheprovider", "--baselines-dir=b", "--efficiency-calibrate-every=off")
    pytester.runpytest(*args, "--update-baselines").assert_outcomes(passed=1)
    path = pytester.path / "b" / "cpu" / "test_c.py.json"
    doc = json.loads(path.read_text())
    doc["tests"]["test_c.py::test_mem"]["metrics"]["peak_memory"]["value"] = "1 kB"
    path.write_text(json.dumps(doc, indent=1))
    edited = path.read_text()
    said = "test_c.py.json: entry 'test_c.py::test_mem': metric 'peak_memory': \"value\" must be a number or null"
    for extra in ((), ("--update-baselines",)):
        summary = _unspaced(pytester.runpytest(*args, *extra).stdout.str())
        assert "INTERNALERROR" not in summary and _unspaced(said) in summary
        assert path.read_text() == edited

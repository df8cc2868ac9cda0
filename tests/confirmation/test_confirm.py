"""Confirmation of measured regressions in fresh processes, apart in time (`confirmation/vote.py`,
`confirmation/queue.py`).

The unanimous vote and the suspect rule as pure functions over real records and the
gate's own rule; the queue's spacing on a clock the test moves; then end to end, in real
pytest processes, with a workload whose time is known (a sleep): slow only in the
process that first measures it (a host episode), or slow everywhere (a regression), a
run stopped early, and a worker killed while it holds a test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pytest_efficientllm.confirmation import vote as confirm
from pytest_efficientllm.confirmation.queue import ConfirmQueue
from pytest_efficientllm.core.limits import parse_limit
from pytest_efficientllm.core.record import Record
from pytest_efficientllm.glue.options import Settings
from pytest_efficientllm.judging.evaluate import suspects
from pytest_efficientllm.judging.gate import GateOptions, judge
from pytest_efficientllm.judging.verdicts import Verdict
from pytest_efficientllm.measuring import process_layout as layout
from tests.helpers.record_builders import counted, latency, record

TOL5 = (parse_limit("AL", "+5%"),)
BASE = record("t.py::test_a", latency(0.010, seed=1))


def _judge(rec: Record, limits=TOL5, baseline: Record | None = BASE) -> list:
    return judge(rec, limits, baseline, "", GateOptions())


def _at(change: float, seed: int = 2) -> Record:
    return record("t.py::test_a", latency(0.010 * (1 + change), seed=seed))


class FakeMeasureInChild:
    """Test double of `measure_in_child`: hands out prepared records (or failures) in order."""

    def __init__(self, *outcomes: Record | str) -> None:
        self.outcomes = list(outcomes)
        self.started = 0

    def __call__(self) -> Record | str:
        self.started += 1
        return self.outcomes.pop(0)


def _vote(first: Record, *fresh: Record | str, processes: int = 2):
    """Run the vote to the end as the queue would (without the waiting)."""
    verdicts = _judge(first)
    vote = confirm.Vote(verdicts, suspects(first, verdicts), processes)
    processes_ = FakeMeasureInChild(*fresh)
    while vote.metrics and not vote.done:
        vote.add(processes_(), _judge)
    final = vote.final_verdicts()
    al = [v for v in final if v.metric == "AL"]
    return vote, final, al, processes_.started


def test_a_regression_fails_only_when_every_process_finds_it() -> None:
    vote, _, al, started = _vote(_at(0.12), _at(0.11, seed=3), _at(0.10, seed=4))
    assert started == 2 and len(vote.records) == 2
    assert [v.status for v in al] == ["fail"]
    assert "confirmed in 3 processes" in al[0].message and "fresh 2 +1" in al[0].message
    assert al[0].confirmed == "fresh_processes" and al[0].softened == ""


def test_the_first_passing_process_clears_it_and_no_more_start() -> None:
    _, final, al, started = _vote(_at(0.12), _at(0.0, seed=3), _at(0.12, seed=4))
    assert started == 1
    assert [v.status for v in al] == ["warn"]
    assert "not confirmed in 2 processes" in al[0].message and al[0].message.endswith("a process passes, not failing")
    assert al[0].confirmed == "" and al[0].softened == "vote_cleared"
    assert len(al[0].readings) == 2 and al[0].readings[0] == al[0].change and abs(al[0].readings[1]) < 0.05
    assert not any(v.failed for v in final)


def test_a_process_beyond_the_tolerance_that_passes_on_its_noise_says_so() -> None:
    # Fresh 1 reads +20%, four times the tolerance, in rounds that scatter +-60%: it passes, and
    # "fresh 1 +20.0% passes" alone read as a broken rule.
    noisy = record("t.py::test_a", latency(0.012, spread=0.6, seed=3))
    _, _, al, _ = _vote(_at(0.12), noisy)
    assert al[0].status == "warn" and al[0].softened == "vote_cleared"
    assert "fresh 1 +" in al[0].message
    assert "% passes (within the noise): a process passes" in al[0].message, al[0].message
    # One that passes within its tolerance has nothing to explain.
    _, _, al, _ = _vote(_at(0.12), _at(0.0, seed=3))
    assert "passes (" not in al[0].message, al[0].message


def test_the_last_process_alone_can_clear_it() -> None:
    # A majority (2 of 3) is not enough.
    _, _, al, started = _vote(_at(0.12), _at(0.12, seed=3), _at(0.0, seed=4))
    assert started == 2 and [v.status for v in al] == ["warn"]


def test_each_process_reads_the_metric_s_change_against_the_baseline_and_its_budget_stays_once() -> None:
    # What the run-shift rule weighs (`Vote.readings`): the change each voting process saw, this
    # process's first. The budget verdict on the same metric, listed first, has no change.
    limits = (parse_limit("AL", "<= 1 s"), *TOL5)
    first, fresh = _at(0.12), [_at(0.11, seed=3), _at(0.10, seed=4)]
    vote = confirm.Vote(_judge(first, limits), ["AL"], processes=2)
    for rec in fresh:
        vote.add(rec, lambda r: _judge(r, limits))
    expected = [v.change for r in (first, *fresh) for v in _judge(r, limits) if v.kind == "baseline"]
    assert len(expected) == 3 and all(0.05 < c < 0.2 for c in expected)
    assert vote.readings("AL") == expected
    # Both of the metric's verdicts come back once, in their places, the failing one confirmed.
    final = vote.final_verdicts()
    assert [(v.kind, v.status) for v in final] == [("budget", "pass"), ("baseline", "fail")]
    assert "confirmed in 3 processes" in final[1].message
    # The readings travel with the comparison, as data (the run file's reader and the run's shift
    # read them there); the budget has none.
    assert final[1].readings == tuple(expected) and final[0].readings == ()
    assert Verdict.from_dict(json.loads(json.dumps(final[1].to_dict()))) == final[1]


def test_a_metric_that_passes_here_is_not_suspect() -> None:
    # Unanimity: a process that passes already clears it, so nothing is started.
    first = _at(0.035)
    assert not any(v.failed for v in _judge(first))
    assert suspects(first, _judge(first)) == []


def test_a_fresh_process_that_cannot_run_leaves_the_verdict_and_says_why() -> None:
    _, final, al, started = _vote(_at(0.12), "pytest exited 2: ImportError")
    assert started == 1
    assert [v.status for v in al] == ["fail"] and "confirmed" not in al[0].message
    assert any(
        v.metric == "*"
        and v.status == "warn"
        and v.message == "not confirmed: a fresh process failed: pytest exited 2: ImportError"
        for v in final
    )


def test_a_fresh_process_without_the_metric_does_not_vote() -> None:
    _, final, al, _ = _vote(_at(0.12), record("t.py::test_a", counted("peak_memory", 1)))
    assert [v.status for v in al] == ["fail"] and "confirmed" not in al[0].message
    assert any(v.metric == "*" and v.message == "not confirmed: a fresh process recorded no AL" for v in final)


def test_no_processes_no_confirmation() -> None:
    _, _, al, started = _vote(_at(0.12), processes=0)
    assert started == 0 and [v.status for v in al] == ["fail"] and "confirmed" not in al[0].message


def test_suspects() -> None:
    assert suspects(_at(0.12), _judge(_at(0.12))) == ["AL"]
    assert suspects(_at(0.01), _judge(_at(0.01))) == []
    # Faster is never suspect.
    assert suspects(_at(-0.2), _judge(_at(-0.2))) == []
    # A counted regression is exact: nothing to confirm.
    base = record("t.py::test_a", counted("peak_memory", 1000))
    grown = record("t.py::test_a", counted("peak_memory", 1010))
    verdicts = judge(grown, (), base, "", GateOptions())
    assert any(v.failed for v in verdicts) and suspects(grown, verdicts) == []
    # A failed budget on a measured metric is suspect.
    budget = (parse_limit("AL", "<= 5 ms"),)
    verdicts = judge(_at(0.0), budget, None, "", GateOptions())
    assert any(v.failed for v in verdicts) and suspects(_at(0.0), verdicts) == ["AL"]


def test_default_checks_are_suspect_only_where_they_can_fail() -> None:
    # On the CPU the default cpu_time_per_round check only warns: nothing at stake.
    cpu = record("t.py::test_a", latency(0.012, name="cpu_time_per_round"))
    cpu_base = record("t.py::test_a", latency(0.010, name="cpu_time_per_round", seed=1))
    verdicts = judge(cpu, (), cpu_base, "", GateOptions())
    assert suspects(cpu, verdicts) == []
    # On a GPU profile the default latency check fails: suspect.
    gpu = record("t.py::test_a", latency(0.012), profile="h100", fingerprint={"profile": "h100"})
    gpu_base = record("t.py::test_a", latency(0.010, seed=1), profile="h100", fingerprint={"profile": "h100"})
    verdicts = judge(gpu, (), gpu_base, "", GateOptions())
    assert any(v.failed for v in verdicts) and suspects(gpu, verdicts) == ["AL"]


# -- the queue: fresh processes apart in time ------------------------------------------------------


class FakeClock:
    """A clock the test moves: `sleep` and each fresh process advance it, nothing waits."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _held(queue: ConfirmQueue, clock: FakeClock, name: str, *fresh: Record, run_s: float = 3.0):
    """Hold a +12% suspect whose fresh processes hand out `fresh`, each taking `run_s`; log their start times."""
    first = _at(0.12)
    verdicts = _judge(first)
    outcomes = list(fresh)
    starts: list[float] = []

    def measure_again() -> Record:
        starts.append(clock.now)
        clock.now += run_s
        return outcomes.pop(0)

    queue.hold(confirm.Vote(verdicts, suspects(first, verdicts)), measure_again, _judge, name)
    return starts


@pytest.mark.parametrize(
    ("processes", "gate", "confirming"),
    [
        (2, GateOptions(), True),
        (0, GateOptions(), False),  # --efficiency-confirm=0
        (2, GateOptions(mode="warn"), False),  # nothing fails, so nothing is put to a vote
        (2, GateOptions(update=True), False),  # the run records baselines, it is not judged
    ],
)
def test_a_run_votes_only_with_fresh_processes_to_ask_under_gate_fail_and_not_while_recording(
    processes: int, gate: GateOptions, confirming: bool
) -> None:
    # A queue for a run that cannot vote would still judge its first process by the vote's
    # looser bound (90%, not 99.9%): under gate=warn, more warnings than the run should give.
    assert Settings(gate=gate, confirm_processes=processes).confirming is confirming


def test_fresh_processes_start_a_spacing_after_the_previous_measurement() -> None:
    clock = FakeClock()
    queue = ConfirmQueue(20.0, clock, clock.sleep)
    starts = _held(queue, clock, "a", _at(0.11, seed=3), _at(0.10, seed=4))
    clock.now += 19.9  # the next tests run
    assert queue.run_due() == [] and starts == []  # not due yet: the run goes on
    clock.now += 0.1
    assert queue.run_due() == [] and starts == [120.0]  # the first one ran; the second is 20 s after its end
    decided = list(queue.drain())
    assert starts == [120.0, 143.0] and clock.slept == [20.0]
    assert [h.payload for h in decided] == ["a"] and len(queue) == 0
    (al,) = [v for v in decided[0].vote.final_verdicts() if v.metric == "AL"]
    assert al.status == "fail" and "confirmed in 3 processes" in al.message
    assert decided[0].vote.seconds == 6.0


def test_held_tests_take_turns_earliest_first_and_sleep_only_what_is_left() -> None:
    clock = FakeClock()
    queue = ConfirmQueue(10.0, clock, clock.sleep)
    a = _held(queue, clock, "a", _at(0.11, seed=3), _at(0.10, seed=4))
    clock.now += 4.0  # the next test
    b = _held(queue, clock, "b", _at(0.0, seed=5))
    order = [h.payload for h in queue.drain()]
    # a at 110 (slept 6; runs to 113), b at 114 (slept 1; cleared by its pass), a again 10 s after its end.
    assert a == [110.0, 123.0] and b == [114.0]
    assert order == ["b", "a"] and clock.slept == [6.0, 1.0, 6.0]


def test_abandoned_tests_keep_this_process_verdicts_and_say_why() -> None:
    clock = FakeClock()
    queue = ConfirmQueue(20.0, clock, clock.sleep)
    starts = _held(queue, clock, "a", _at(0.11, seed=3))
    (held,) = queue.abandon("the run stopped")
    assert starts == [] and len(queue) == 0
    verdicts = held.vote.final_verdicts()
    assert [v.status for v in verdicts if v.metric == "AL"] == ["fail"]
    assert any(v.metric == "*" and "the run stopped" in v.message for v in verdicts)


def _settings(tmp_path: Path, **kw) -> confirm.ChildSettings:
    base = dict(
        rootdir=tmp_path,
        inifile=tmp_path / "pytest.ini",
        profile="cpu",
        threads=1,
        rounds=5,
        warmup=1,
        min_time_s=0.0,
        plugins=("myplugin",),
        xdist=True,
    )
    base.update(kw)
    return confirm.ChildSettings(**base)


def test_child_command_and_environment(tmp_path: Path) -> None:
    cmd = confirm.child_command("t.py::test_a[x/y z]", _settings(tmp_path), tmp_path / "run.json")
    assert cmd[:4] == [sys.executable, "-m", "pytest", "t.py::test_a[x/y z]"]
    for arg in (
        "--efficiency-gate=off",
        "--efficiency-threads=1",
        "--gpu=cpu",
        f"--efficiency-json={tmp_path / 'run.json'}",
    ):
        assert arg in cmd
    assert cmd[cmd.index("-n") + 1] == "0" and cmd[cmd.index("-c") + 1] == str(tmp_path / "pytest.ini")
    assert "myplugin" in cmd
    env = confirm.child_env(cmd, fixed_layout=False, environ={"PYTEST_XDIST_WORKER": "gw1", "PATH": "/bin"})
    assert env == {"PATH": "/bin", confirm.CONFIRM_ENV: "1"}
    fixed = confirm.child_env(cmd, fixed_layout=True, environ={"PATH": "/bin"})
    # Started already fixed: seeded, padded to the one stack size, marked for this command line.
    assert fixed["PYTHONHASHSEED"] == "0"
    assert layout.stack_bytes(sys.executable, cmd, fixed) == layout.STACK_BYTES


SLEEPER = """
import os, time
import pytest

SLOW = float(os.environ.get("SLOW", "0"))
# A host episode: only the process that measures first runs slow.
EPISODE = os.environ.get("EPISODE") == "1" and not os.environ.get("PYTEST_EFFICIENTLLM_CONFIRMING")

# What these tests count is AL's vote. A sleep's CPU time is microseconds of wake-ups, whose
# default check (gross, +90%) a doubled sleep crosses too, and in a loaded CI run a fresh process
# once crossed it as well: a second fresh process for CPU time, not AL. Out of the vote.
# AL's tolerance +25%, not +5%: a fresh process's unchanged sleep, beside the other xdist worker's
# tests, once read beyond +5% (late wake-ups) and a cleared episode took a second fresh process.
@pytest.mark.efficiency(rounds=7, warmup=1, latency="+25%", cpu_time_per_round="+1000%")
@pytest.mark.parametrize("case", ["a/b c", "x"])
def test_sleep(efficiency, case):
    # Doubled, not +25%: on a loaded 2-core CI runner late wake-ups from a sleep spread the
    # baseline's rounds by several ms, and the interval must still exclude "no change".
    seconds = 0.020 * (1 + SLOW) * (2.0 if EPISODE else 1.0)
    start = time.time()
    efficiency.measure(lambda: time.sleep(seconds))
    if os.environ.get("LOG"):  # when and in which process each measurement ran
        with open(os.environ["LOG"], "a") as log:
            log.write(f"{case}|{os.getpid()}|{start}|{time.time()}\\n")

def test_z_last():
    assert os.environ.get("LAST_FAILS") != "1"
    if os.environ.get("INTERRUPT") == "1":  # Ctrl-C a second after the last test, while the vote waits
        import signal, threading
        # A job a shell starts in the background inherits SIGINT ignored; a user's Ctrl-C is not.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
"""
COMMON = ("-p", "no:cacheprovider", "--efficiency-threads=1", "--efficiency-calibrate-every=off")
QUICK = "--efficiency-confirm-spacing=0.5s"


@pytest.fixture
def sleeper(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    for name in (
        "PYTEST_XDIST_WORKER",
        "PYTEST_XDIST_WORKER_COUNT",
        "PYTEST_XDIST_TESTRUNUID",
        "SLOW",
        "EPISODE",
        "LOG",
        "LAST_FAILS",
        "INTERRUPT",
    ):
        monkeypatch.delenv(name, raising=False)
    pytester.makepyfile(test_sleeper=SLEEPER)
    pytester.makeini("[pytest]\n")
    result = pytester.runpytest_subprocess(*COMMON, "--update-baselines")
    assert result.ret == 0
    return pytester


def _records(path: Path) -> dict[str, dict]:
    return {r["nodeid"]: r for r in json.loads(path.read_text())["records"]}


def _measurements(log: Path) -> list[tuple[str, int, float, float]]:
    rows = [line.split("|") for line in log.read_text().splitlines()]
    return [(case, int(pid), float(start), float(end)) for case, pid, start, end in rows]


def test_end_to_end_an_episode_is_not_failed(sleeper: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EPISODE", "1")
    monkeypatch.setenv("LOG", str(sleeper.path / "log.txt"))
    out = sleeper.path / "run.json"
    result = sleeper.runpytest_subprocess(*COMMON, "--efficiency-confirm-spacing=2s", f"--efficiency-json={out}")
    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*re-measured in fresh processes*2 test(s), 2 process(es) started 2 s or more*"])
    for rec in _records(out).values():
        if rec["nodeid"].endswith("test_z_last"):
            continue
        (al,) = [v for v in rec["verdicts"] if v["metric"] == "AL"]
        assert al["status"] == "warn"
        assert "not confirmed in 2 processes: this process +" in al["message"]
        assert al["message"].endswith("% passes: a process passes, not failing")
        (fresh,) = rec["confirmations"]  # the first fresh process clears it: no second one
        assert len(fresh["metrics"]["AL"]["samples"]) == 7  # the fresh processes' raw rounds are kept
        assert 0.019 < fresh["metrics"]["AL"]["value"] < 0.030  # 20 ms asleep, not 40
    # Ground truth of the spacing: each test's fresh process started 2 s or more after its measurement
    # here ended, and the run went on meanwhile (both tests measured here before either fresh process).
    rows = _measurements(sleeper.path / "log.txt")
    main_pid = rows[0][1]
    assert [(case, pid == main_pid) for case, pid, _, _ in rows] == [
        ("a/b c", True),
        ("x", True),
        ("a/b c", False),
        ("x", False),
    ]
    for case in ("a/b c", "x"):
        here, fresh = [r for r in rows if r[0] == case]
        assert fresh[2] - here[3] >= 2.0


@pytest.mark.slow
def test_end_to_end_a_regression_fails_once_every_process_finds_it(
    sleeper: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLOW", "1")
    out = sleeper.path / "run.json"
    result = sleeper.runpytest_subprocess(*COMMON, QUICK, "-n", "2", f"--efficiency-json={out}")
    assert result.ret == 1
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        ["*confirmed in 3 processes: this process +*% fails, fresh 1 +*% fails, fresh 2 +*% fails*"]
    )
    assert [len(r["confirmations"]) for r in _records(out).values()] == [2, 2]
    # Without confirmation the same run fails at once, and starts no process.
    result = sleeper.runpytest_subprocess(*COMMON, "--efficiency-confirm=0", f"--efficiency-json={out}")
    assert result.ret == 1
    assert [len(r["confirmations"]) for r in _records(out).values()] == [0, 0]
    assert "re-measured in fresh processes" not in result.stdout.str()


@pytest.mark.parametrize(
    "stop, args, exit_code, outcomes",
    [
        # -x stops at the last test's failure while the regressions wait for their spacing.
        ("LAST_FAILS", ("-x",), pytest.ExitCode.TESTS_FAILED, {"failed": 3}),
        # Ctrl-C after the last test, while the vote waits: the held regressions had vanished
        # from the summary and the run file ("1 passed"), as if never run.
        ("INTERRUPT", (), pytest.ExitCode.INTERRUPTED, {"passed": 1, "failed": 2}),
    ],
)
def test_a_run_that_stops_early_keeps_held_verdicts_unconfirmed(
    sleeper: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    stop: str,
    args: tuple[str, ...],
    exit_code: int,
    outcomes: dict[str, int],
) -> None:
    monkeypatch.setenv("SLOW", "1")
    monkeypatch.setenv(stop, "1")
    out = sleeper.path / "run.json"
    result = sleeper.runpytest_subprocess(
        *COMMON, *args, "--efficiency-confirm-spacing=60s", f"--efficiency-json={out}"
    )
    assert result.ret == exit_code
    result.assert_outcomes(**outcomes)
    result.stdout.fnmatch_lines(["*not confirmed: the run stopped before fresh processes voted: 2 tests*"])
    records = [r for r in _records(out).values() if "test_sleep" in r["nodeid"]]
    assert len(records) == 2
    for rec in records:
        assert rec["confirmations"] == [] and rec["outcome"] == "failed"
        assert any(
            v["metric"] == "*" and "the run stopped before fresh processes confirmed it" in v["message"]
            for v in rec["verdicts"]
        )


def test_updating_baselines_never_confirms(sleeper: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLOW", "1")
    out = sleeper.path / "run.json"
    result = sleeper.runpytest_subprocess(*COMMON, "--update-baselines", f"--efficiency-json={out}")
    assert result.ret == 0
    assert [len(r["confirmations"]) for r in _records(out).values()] == [0, 0]


@pytest.mark.parametrize(
    "args, message",
    [
        (("--efficiency-confirm=-1",), "*--efficiency-confirm=-1: expected a whole number of 0 or more processes*"),
        (("--efficiency-confirm-spacing=soon",), "*--efficiency-confirm-spacing=soon: expected a duration*"),
    ],
)
def test_bad_confirm_options(pytester: pytest.Pytester, args: tuple[str, ...], message: str) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_a_confirmation_process_never_confirms_in_turn(
    sleeper: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLOW", "1")
    monkeypatch.setenv(confirm.CONFIRM_ENV, "1")
    out = sleeper.path / "run.json"
    result = sleeper.runpytest_subprocess(*COMMON, QUICK, f"--efficiency-json={out}")
    assert result.ret == 1
    assert [len(r["confirmations"]) for r in _records(out).values()] == [0, 0]


DIES = """
import os, signal, time
import pytest

@pytest.mark.efficiency(rounds=5, warmup=1, latency="+5%")
def test_a_sleep(efficiency):
    efficiency.measure(lambda: time.sleep(0.020 * (2.0 if os.environ.get("SLOW") == "1" else 1.0)))

def test_b_dies():
    if os.environ.get("SLOW") == "1":
        os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_worker_that_dies_names_the_tests_it_held(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    # One worker: test_a_sleep regresses and is held (60 s spacing), then the worker is killed.
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID", "SLOW"):
        monkeypatch.delenv(name, raising=False)
    pytester.makepyfile(test_dies=DIES)
    pytester.makeini("[pytest]\n")
    assert pytester.runpytest_subprocess(*COMMON, "--update-baselines").ret == 0
    monkeypatch.setenv("SLOW", "1")
    result = pytester.runpytest_subprocess(
        *COMMON, "-n", "1", "--max-worker-restart=0", "--efficiency-confirm-spacing=60s", timeout=240
    )
    out = " ".join(result.stdout.str().split())
    assert result.ret != 0
    assert "went down" in out
    assert (
        "no result for 1 test(s) that started on a worker that went down (held for confirmation in fresh "
        "processes): test_dies.py::test_a_sleep"
    ) in out

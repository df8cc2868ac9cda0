"""`ab` measures a test that fails on timings alone again in as many more pairs, and fails it
only if they find the regression too (`ab.command.run_comparison`, with a test double of
`run_process` that hands out prepared records, so the rule is checked without processes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from filelock import FileLock

from pytest_efficientllm.ab import command, outputs
from pytest_efficientllm.ab.runner import ProcessResult
from pytest_efficientllm.core.record import Metric
from tests.helpers.record_builders import counted, latency, record

# `test_s` is a prefix of `test_slow`: pytest's --deselect=t.py::test_s would deselect both.
SLOW, STEADY, COUNTED, PREFIX = "t.py::test_slow", "t.py::test_steady", "t.py::test_counted", "t.py::test_s"


def _cpu(median_s: float, seed: int) -> Metric:
    return latency(median_s, spread=0.01, seed=seed, name="cpu_time_per_round")


# Tests that take 1 s, 2 s, ... (JUnit's time), where the four above take 100 s each; and one that
# takes 0.5 s and only counts, so it is no control of a time.
FILLERS = [f"t.py::test_f{k:02d}" for k in range(10)]
ONLY_COUNTS = "t.py::test_bytes"


class FakeProcesses:
    """Test double of `run_process`: HEAD's `test_slow` is `first` times BASE in the first pairs
    and `second` times in the confirming ones; `test_counted` counts more bytes on HEAD. With
    `fillers`, ten more tests, quicker than these four. `swing[p]`: how much slower the machine made
    every test of HEAD's process in pair p (1.0 where not given)."""

    def __init__(
        self, second: float, budget: str = "", first: float = 1.2, fillers: bool = False, swing: tuple = ()
    ) -> None:
        self.first, self.second, self.fillers, self.swing = first, second, fillers, swing
        self.budget = budget  # a budget on test_slow's cpu_time_per_round, as its marker would give
        self.calls: list[tuple[str, int, list[str]]] = []

    def __call__(self, side, pair: int, pytest_args: list[str], out_dir: Path) -> ProcessResult:
        self.calls.append((side.name, pair, list(pytest_args)))
        head = side.name == "head"
        deselected = {a.removeprefix("--deselect=") for a in pytest_args if a.startswith("--deselect=")}
        factor = (self.first if pair < 6 else self.second) if head else 1.0
        machine = self.swing[pair] if head and pair < len(self.swing) else 1.0
        seed = pair * 2 + head
        records = {
            SLOW: record(SLOW, _cpu(0.010 * factor * machine, seed)),
            STEADY: record(STEADY, _cpu(0.010 * machine, seed + 50)),
            COUNTED: record(COUNTED, _cpu(0.010 * machine, seed + 90), counted("bytes_accessed", 200 if head else 100)),
            PREFIX: record(PREFIX, _cpu(0.010 * machine, seed + 70)),
        }
        seconds = dict.fromkeys(records, 100.0)
        for k, name in enumerate(FILLERS if self.fillers else []):
            records[name] = record(name, _cpu(0.010 * machine, seed + 200 + k))
            seconds[name] = 1.0 + k
        if self.fillers:
            records[ONLY_COUNTS] = record(ONLY_COUNTS, counted("bytes_accessed", 100))
            seconds[ONLY_COUNTS] = 0.5
        if self.budget:
            records[SLOW].settings["limits"] = [f"cpu_time_per_round={self.budget}"]
        kept = {n: r for n, r in records.items() if not any(n.startswith(d) for d in deselected)}  # as pytest
        durations = {n: seconds[n] for n in kept}
        return ProcessResult(side.name, pair, 0, kept, {n: "passed" for n in kept}, durations=durations)


def _compare(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    second: float,
    confirm: bool = True,
    budget: str = "",
    fake: FakeProcesses | None = None,
    **kw,
):
    fake = fake or FakeProcesses(second, budget)
    monkeypatch.setattr(command, "run_process", fake)
    monkeypatch.setattr(command, "machine_lock", lambda name: FileLock(str(tmp_path / f"{name}.lock")))
    (tmp_path / "a").mkdir(exist_ok=True)
    (tmp_path / "b").mkdir(exist_ok=True)
    c = command.run_comparison(
        str(tmp_path / "a"), str(tmp_path / "b"), ["t.py"], tmp_path / "out", confirm=confirm, **kw
    )
    return c, {t.nodeid: t for t in c.tests}, fake


def test_a_slowdown_found_again_in_the_more_pairs_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c, tests, fake = _compare(tmp_path, monkeypatch, second=1.2)
    (v,) = [v for v in tests[SLOW].verdicts if v.metric == "cpu_time_per_round"]
    assert v.status == "fail" and "confirmed in 6 more pairs" in v.message and v.confirmed == "more_pairs"
    assert c.confirmed == [SLOW]  # the counted failure needs no more pairs; the steady test none
    assert tests[COUNTED].failed and tests[STEADY].verdicts[0].status == "pass"
    # Twelve more processes, each running the suspect and the other tests as its control: three
    # here, fewer than CONTROL_TESTS, so none deselected.
    again = [args for _, pair, args in fake.calls if pair >= 6]
    assert len(again) == 12 and len(fake.calls) == 24
    assert all(a == ["t.py"] for a in again)


def test_the_more_pairs_measure_the_suspect_beside_the_quickest_other_tests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeProcesses(second=1.2, fillers=True)
    c, tests, _ = _compare(tmp_path, monkeypatch, second=1.2, fake=fake)
    assert c.confirmed == [SLOW] and tests[SLOW].failed
    again = [args for _, pair, args in fake.calls if pair >= 6]
    assert len(again) == 12
    # The eight quickest that measure a time (fillers 0-7) stay; the slower others go, and so does
    # the quicker one that only counts, except the suspect's prefix, which pytest would deselect with it.
    dropped = sorted([*FILLERS[8:], STEADY, COUNTED, ONLY_COUNTS])
    assert all(a == ["t.py", *(f"--deselect={n}" for n in dropped)] for a in again), again[0]
    assert c.controls == FILLERS[:8]
    assert any(line.endswith("1 test(s), beside 8 other test(s) as their control") for line in outputs.render_lines(c))


def test_a_test_slower_than_the_other_tests_of_its_pairs_is_confirmed_against_them_in_the_more_pairs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # HEAD's processes swing -20% .. +25% with the machine, and test_slow is 10% slower on top: its
    # pairs alone cannot tell, the other tests of each pair can. The more pairs keep eight of those.
    swing = (0.8, 1.25, 0.85, 1.18, 0.9, 1.11) * 2
    fake = FakeProcesses(second=1.1, first=1.1, fillers=True, swing=swing)
    c, tests, _ = _compare(tmp_path, monkeypatch, second=1.1, fake=fake)
    (v,) = [v for v in tests[SLOW].verdicts if v.metric == "cpu_time_per_round"]
    assert v.status == "fail" and v.reason == "beyond_others" and v.confirmed == "more_pairs", v.message
    assert "confirmed in 6 more pairs: " in v.message and c.confirmed == [SLOW]
    assert v.message.count("worse than the other tests of its pairs") == 2, v.message


def test_which_rule_found_it_in_the_more_pairs_is_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # +20% on a quiet machine in the first pairs (the pairs alone find it); +10% in the confirming
    # ones, where the machine swings HEAD's processes -20% .. +25% (only the other tests find it).
    swing = (1.0,) * 6 + (0.8, 1.25, 0.85, 1.18, 0.9, 1.11)
    fake = FakeProcesses(second=1.1, first=1.2, fillers=True, swing=swing)
    c, tests, _ = _compare(tmp_path, monkeypatch, second=1.1, fake=fake)
    (v,) = [v for v in tests[SLOW].verdicts if v.metric == "cpu_time_per_round"]
    (w,) = [w for w in tests[SLOW].again if w.metric == "cpu_time_per_round"]
    assert (v.status, v.reason, v.confirmed) == ("fail", "beyond_noise", "more_pairs"), v.message
    assert (w.status, w.reason) == ("fail", "beyond_others"), w.message
    outputs.write_outputs(c, tmp_path / "out")
    saved = {t["nodeid"]: t for t in json.loads((tmp_path / "out" / "ab.json").read_text())["tests"]}
    assert [a["reason"] for a in saved[SLOW]["confirming_verdicts"] if a["metric"] == "cpu_time_per_round"] == [
        "beyond_others"
    ]
    # Only the suspect was judged again: a control's verdicts there are not its verdicts.
    assert all(saved[n]["confirming_verdicts"] == [] for n in saved if n != SLOW)


def test_a_slowdown_the_more_pairs_do_not_find_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A slow spell of the machine that struck HEAD's processes in the first pairs only.
    c, tests, _ = _compare(tmp_path, monkeypatch, second=1.0)
    (v,) = [v for v in tests[SLOW].verdicts if v.metric == "cpu_time_per_round"]
    assert v.status == "warn" and "not confirmed in 6 more pairs" in v.message
    assert v.confirmed == "" and v.softened == "pairs_cleared"
    assert [w.status for w in tests[SLOW].again if w.metric == "cpu_time_per_round"] == ["pass"]
    assert not tests[SLOW].failed and tests[SLOW].note == "measured again in 6 more pairs"
    assert c.failed  # the counted regression still fails the comparison
    assert any(
        "measured again in 6 more pairs (failing on timings alone): 1 test(s)" in line
        for line in outputs.render_lines(c)
    )


def test_no_confirm_fails_on_the_first_pairs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c, tests, fake = _compare(tmp_path, monkeypatch, second=1.0, confirm=False)
    assert tests[SLOW].failed and c.confirmed == [] and len(fake.calls) == 12


def test_a_budget_and_a_tolerance_of_one_metric_are_confirmed_each_by_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # HEAD at 12 ms, then 10.8 ms: over the 11 ms budget only in the first pairs, beyond the 5%
    # tolerance in both. Looked up by metric alone, the budget had taken the tolerance's reading.
    _, tests, _ = _compare(tmp_path, monkeypatch, second=1.08, budget="<= 11 ms")
    verdicts = {v.kind: v for v in tests[SLOW].verdicts if v.metric == "cpu_time_per_round"}
    assert verdicts["budget"].status == "warn" and "not confirmed in 6 more pairs" in verdicts["budget"].message
    assert verdicts["baseline"].status == "fail" and "confirmed in 6 more pairs" in verdicts["baseline"].message


def test_a_budget_broken_3x_over_is_not_measured_again_in_more_pairs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # HEAD at 12 ms against a 3 ms budget: 4x over it, which no slow spell explains, so the test
    # fails on the first pairs, as the gate's vote would not re-measure it either.
    c, tests, fake = _compare(tmp_path, monkeypatch, second=1.0, budget="<= 3 ms")
    (budget,) = [v for v in tests[SLOW].verdicts if v.kind == "budget"]
    assert budget.status == "fail" and budget.reason == "far_over_budget", budget.message
    assert c.confirmed == [] and len(fake.calls) == 12 and tests[SLOW].failed


def test_one_comparison_at_a_time_on_a_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two at once measure beside each other's processes (one pair of two run together read -39%).
    import subprocess
    import sys
    import time

    lock, ready = tmp_path / "ab.lock", tmp_path / "held"
    holder = subprocess.Popen(  # another comparison, in another process, for a second
        [
            sys.executable,
            "-c",
            f"import pathlib, time; from filelock import FileLock; l = FileLock({str(lock)!r}); l.acquire(); "
            f"pathlib.Path({str(ready)!r}).touch(); time.sleep(1.0); l.release()",
        ]
    )
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    said: list[str] = []
    begun = time.monotonic()
    _, _, fake = _compare(tmp_path, monkeypatch, second=1.2, waiting=said.append)
    holder.wait(timeout=30)
    assert said == [f"ab: waiting for another comparison on this machine to finish ({lock})"]
    assert time.monotonic() - begun >= 0.5 and len(fake.calls) == 24  # it waited, then ran every pair
    _compare(tmp_path, monkeypatch, second=1.2, waiting=said.append)
    assert len(said) == 1  # released when done: the next one does not wait


@pytest.mark.parametrize("flag, processes", [((), 24), (("--efficiency-ab-no-confirm",), 12)])
def test_the_pytest_option_form_confirms_unless_told_not_to(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, flag: tuple[str, ...], processes: int
) -> None:
    fake = FakeProcesses(second=1.0)
    monkeypatch.setattr(command, "run_process", fake)
    monkeypatch.setattr(command, "machine_lock", lambda name: FileLock(str(pytester.path / f"{name}.lock")))
    for side in ("a", "b"):
        (pytester.path / side).mkdir()
    result = pytester.runpytest_inprocess("--efficiency-ab=a..b", "--efficiency-ab-pairs=6", *flag, "t.py")
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # the counted regression, either way
    assert len(fake.calls) == processes and all(args == ["t.py"] for _, pair, args in fake.calls if pair < 6)

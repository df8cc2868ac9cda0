"""Each finding says what it is (`Verdict.reason`) and what let a failure through
(`Verdict.softened`) as data, so the summary counts findings and a reader of the run file
filters them without reading messages.

Ground truth: each case makes its finding through the code that makes it in a run (a budget
broken by a known amount, a count that moved, latencies slowed by a known factor, a vote whose
fresh process passes), and every reason and every softening is made by at least one case.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_efficientllm.ab.command import TestVerdict, after_more_pairs
from pytest_efficientllm.confirmation.queue import ConfirmQueue
from pytest_efficientllm.confirmation.vote import Vote
from pytest_efficientllm.core.limits import parse_limit
from pytest_efficientllm.core.metrics import measured
from pytest_efficientllm.core.record import Metric, Record
from pytest_efficientllm.glue.summary_findings import REASON_TEXTS, SOFTENED_TEXTS, finding_kind
from pytest_efficientllm.judging.compare import compare_record
from pytest_efficientllm.judging.gate import GateOptions, judge
from pytest_efficientllm.judging.gross import apart_from_run, gross_or_warn
from pytest_efficientllm.judging.leak import LeakFinding
from pytest_efficientllm.judging.paired import paired_verdicts
from pytest_efficientllm.judging.run_shift import RunShift
from pytest_efficientllm.judging.throttle import find_throttle
from pytest_efficientllm.judging.verdicts import REASONS, SOFTENINGS, Verdict, check_budget, soften
from pytest_efficientllm.storage.runfile import Run, read_run, write_run
from tests.helpers.record_builders import counted, energy_record, latency, record

AL = "AL"
TOL5 = (parse_limit(AL, "+5%"),)


def _one(verdicts: list[Verdict], metric: str) -> Verdict:
    [found] = [v for v in verdicts if v.metric == metric]
    return found


def _slowed(factor: float, n: int = 7, source: str = "measured") -> tuple[Record, Record]:
    base, cur = latency(0.010, n=n), latency(0.010 * factor, n=n, seed=1)
    if source != "measured":
        model = "a roofline estimate"
        base = dataclasses.replace(base, source=source, method=model)
        cur = dataclasses.replace(cur, source=source, method=model)
    return record("t.py::a", base), record("t.py::a", cur)


def _compared(factor: float, n: int = 7, source: str = "measured") -> Verdict:
    return _one(compare_record(*_slowed(factor, n, source), TOL5), AL)


def _one_value(factor: float) -> Verdict:
    def al(value: float) -> Metric:
        return Metric(AL, value, "s", "lower", "measured", "perf_counter_ns; one value")

    return _one(compare_record(record("t.py::a", al(0.010)), record("t.py::a", al(0.010 * factor)), TOL5), AL)


def _counted(current: int) -> Verdict:
    return _one(
        compare_record(record("t.py::a", counted("flops", 1000)), record("t.py::a", counted("flops", current))), "flops"
    )


def _other_cpu() -> Verdict:
    base, cur = record("t.py::a", counted("ppl", 13.7432, "")), record("t.py::a", counted("ppl", 13.7560, ""))
    base.fingerprint["cpu_model"], cur.fingerprint["cpu_model"] = "AMD EPYC", "Intel Xeon"
    return _one(compare_record(base, cur), "ppl")


def _source_differs() -> Verdict:
    base, cur = _slowed(1.0)
    cur.add(dataclasses.replace(cur.metrics[AL], source="estimated", method="a roofline estimate"))
    return _one(compare_record(base, cur, TOL5), AL)


def _over_budget(source: str, value: float = 0.15) -> Verdict:
    method = "a power-model estimate" if source == "estimated" else "nvmlDeviceGetTotalEnergyConsumption"
    energy = Metric("energy_per_token", value, "J/tok", "lower", source, method)  # type: ignore[arg-type]
    return check_budget(record("t.py::a", energy), parse_limit("energy_per_token", "<= 0.1 J/tok"))


def _world_size() -> Verdict:
    base, cur = _slowed(1.0)
    base.world_size, cur.world_size = 2, 4
    return _one(judge(cur, TOL5, base, "", GateOptions()), "*")


def _judged(options: GateOptions) -> Verdict:
    base, cur = _slowed(2.0)
    return _one(judge(cur, TOL5, base, "", options), AL)


def _gross(change: float) -> Verdict:
    return Verdict("cpu_time_per_round", "fail", "slower beyond tolerance and noise", "baseline", change)


def _throttled() -> Verdict:
    rec = record("t.py::a")
    rec.add(measured("gpu_throttled", 1.0, "nvmlDeviceGetCurrentClocksEventReasons", note="throttled: sw power cap"))
    found = find_throttle(rec)
    assert found is not None
    return found


def _voted(fresh: Record | str, stop: bool = False) -> Verdict:
    base, first = _slowed(2.0)
    verdicts = judge(first, TOL5, base, "", GateOptions())
    vote = Vote(verdicts, [AL], processes=1)
    if stop:
        queue = ConfirmQueue(spacing_s=0.0)
        queue.hold(vote, lambda: fresh, lambda r: judge(r, TOL5, base, "", GateOptions()), "t.py::a")
        queue.abandon("the run stopped before fresh processes confirmed it (KeyboardInterrupt())")
    else:
        vote.add(fresh, lambda r: judge(r, TOL5, base, "", GateOptions()))
    final = vote.final_verdicts()
    return _one(final, "*") if vote.problem else _one(final, AL)


def _pairs_cleared() -> Verdict:
    failing = Verdict(AL, "fail", "+20% in the pairs", "baseline", 0.2)
    passing = Verdict(AL, "pass", "+1% in the pairs", "baseline", 0.01)
    again = after_more_pairs(
        TestVerdict("t.py::a", "compared", [failing]), TestVerdict("t.py::a", "compared", [passing]), 6
    )
    return again.verdicts[0]


def _paired(factor: float, source: str = "measured") -> Verdict:
    base = [_slowed(1.0, source=source)[0] for _ in range(8)]
    head = [_slowed(factor, source=source)[1] for _ in range(8)]
    return _one(paired_verdicts(base, head, TOL5), AL)


def _paired_beyond_others() -> Verdict:
    # The pairs swing with the machine, and the three other tests with them; the test is 10% slower.
    swing = (0.8, 1.25, 0.85, 1.18, 0.9, 1.11, 0.95, 1.05)
    base = [_slowed(1.0)[0] for _ in swing]
    head = [_slowed(s * 1.10)[1] for s in swing]
    others = {AL: [[s * 0.99, s, s * 1.01] for s in swing]}
    return _one(paired_verdicts(base, head, TOL5, others), AL)


def _within_resolution() -> Verdict:
    limits = (parse_limit("energy_per_token", "+5%"),)
    (found,) = compare_record(energy_record(0.100, 0.1), energy_record(0.115, 0.1), limits)
    assert found.status == "pass"
    return found


def _within_noise() -> Verdict:
    # +20% in rounds that scatter +-60%: beyond the 5% tolerance, not beyond the two runs' noise.
    base, cur = latency(0.010, spread=0.6), latency(0.012, spread=0.6, seed=1)
    found = _one(compare_record(record("t.py::a", base), record("t.py::a", cur), TOL5), AL)
    assert found.status == "pass" and "within the noise of the two runs" in found.message
    return found


def _within_run_noise() -> Verdict:
    # Rounds that agree to 1%, but runs of the baseline that lay 10 .. 13 ms apart: +15% over their
    # centre is beyond the 5% tolerance and the rounds' noise, inside the runs' own spread.
    def al(median: float, history: tuple[float, ...] = ()) -> Metric:
        samples = tuple(median * (1 + 0.01 * (k % 3 - 1)) for k in range(7))
        return Metric(AL, median, "s", "lower", "measured", "test", samples=samples, history=history)

    base = al(0.0100, history=(0.0130, 0.0110, 0.0125, 0.0105))
    found = _one(compare_record(record("t.py::a", base), record("t.py::a", al(0.0132)), TOL5), AL)
    assert found.status == "pass" and "within the run-to-run noise" in found.message, found.message
    return found


# (what makes the finding, its reason, what softened it)
CASES: dict[str, tuple[Callable[[], Verdict], str, str]] = {
    "a budget broken": (lambda: _over_budget("measured"), "over_budget", ""),
    "a budget broken 5x over": (lambda: _over_budget("measured", 0.5), "far_over_budget", ""),
    "an estimate over its budget": (lambda: _over_budget("estimated"), "over_budget", "estimate"),
    "a time 2x slower": (lambda: _compared(2.0), "beyond_noise", ""),
    "an estimated time 2x slower": (lambda: _compared(2.0, source="estimated"), "beyond_noise", "estimate"),
    "a time 2x faster": (lambda: _compared(0.5), "better", ""),
    "one value per run, 2x slower": (lambda: _one_value(2.0), "one_value", ""),
    "one value per run, 2x faster": (lambda: _one_value(0.5), "better", ""),
    "3 rounds a side, 2x slower": (lambda: _compared(2.0, n=3), "too_few_rounds", ""),
    "a count up 10%": (lambda: _counted(1100), "counted_regression", ""),
    "a count down 10%": (lambda: _counted(900), "counted_better", ""),
    "a float count on another CPU": (_other_cpu, "other_cpu", ""),
    "measured against estimated": (_source_differs, "source_differs", ""),
    "memory grown late in the window": (lambda: LeakFinding(64 * 2**20, 32 * 2**20, 10).as_verdict(), "leak", ""),
    "memory grown in a short window": (
        lambda: LeakFinding(64 * 2**20, None, 2).as_verdict(),
        "leak_window_short",
        "",
    ),
    "another world size": (_world_size, "world_size", ""),
    "a fresh process that failed": (lambda: _voted("exit code 1"), "vote_failed", ""),
    "a run stopped mid-vote": (lambda: _voted("unused", stop=True), "vote_stopped", ""),
    "a fresh process that passes": (lambda: _voted(_slowed(1.0)[1]), "beyond_noise", "vote_cleared"),
    "another profile": (
        lambda: _one(compare_record(record("t.py::a", profile="h100"), record("t.py::a", profile="h200")), "*"),
        "other_hardware",
        "",
    ),
    "another kernel build": (
        lambda: _one(
            compare_record(
                record("t.py::a", fingerprint={"os": "Linux 6.1"}), record("t.py::a", fingerprint={"os": "Linux 6.2"})
            ),
            "*",
        ),
        "fingerprint_differs",
        "",
    ),
    "a throttled window": (_throttled, "throttled", ""),
    "energy +15% in windows that resolve 10%": (_within_resolution, "within_resolution", ""),
    "+20% in rounds that scatter 60%": (_within_noise, "within_noise", ""),
    "+15% inside the baseline runs' own spread": (_within_run_noise, "within_noise", ""),
    "gate=warn": (lambda: _judged(GateOptions(mode="warn")), "beyond_noise", "gate_warn"),
    "--update-baselines": (lambda: _judged(GateOptions(update=True)), "beyond_noise", "baseline_replaced"),
    "gate=warn on other hardware": (
        lambda: soften(compare_record(record("t.py::a", profile="h100"), record("t.py::a", profile="h200")))[0],
        "other_hardware",
        "gate_warn",
    ),
    "the CPU's default check, +30%": (
        lambda: gross_or_warn(_gross(0.3), latency(0.010), None, "cpu"),
        "",
        "gross_floor",
    ),
    "a gross slowdown in a run that drifted": (
        lambda: apart_from_run(
            dataclasses.replace(_gross(1.0), readings=(1.0, 1.0)), latency(0.010), None, RunShift(0.4, 61), "cpu"
        ),
        "",
        "run_moved",
    ),
    "ab: more pairs that pass": (_pairs_cleared, "", "pairs_cleared"),
    "ab: worse in the pairs": (lambda: _paired(2.0), "beyond_noise", ""),
    "ab: an estimate worse in the pairs": (lambda: _paired(2.0, "estimated"), "beyond_noise", "estimate"),
    "ab: better in the pairs": (lambda: _paired(0.5), "better", ""),
    "ab: worse than the other tests of its pairs": (_paired_beyond_others, "beyond_others", ""),
}


@pytest.mark.parametrize(("make", "reason", "softened"), CASES.values(), ids=CASES.keys())
def test_each_finding_names_its_reason_and_what_softened_it(
    make: Callable[[], Verdict], reason: str, softened: str
) -> None:
    found = make()
    assert (found.reason, found.softened) == (reason, softened), found.message
    if softened:
        assert found.status == "warn"  # what softens a failure leaves a warning
    # The run file carries both, and reads them back.
    assert Verdict.from_dict(found.to_dict()) == found


def test_every_reason_and_softening_is_made_by_some_finding_and_has_words_in_the_summary() -> None:
    assert {reason for _, reason, _ in CASES.values()} == set(REASONS)
    assert {softened for _, _, softened in CASES.values()} == set(SOFTENINGS)
    assert set(REASON_TEXTS) == set(REASONS) - {""}
    assert set(SOFTENED_TEXTS) == set(SOFTENINGS) - {""}


def test_the_summary_counts_by_reason_not_by_wording() -> None:
    said = Verdict(AL, "warn", "slower (worded one way)", "baseline", 0.3, reason="beyond_noise", softened="gate_warn")
    reworded = dataclasses.replace(said, message="reworded entirely")
    assert finding_kind(said) == finding_kind(reworded) == "AL beyond tolerance and noise (gate=warn: not failing)"
    # A time that improved reads faster; any other metric better.
    better = Verdict(AL, "improved", "", "baseline", -0.5, reason="better")
    assert finding_kind(better, "s") == "AL faster than the baseline"
    assert finding_kind(better, "tok/s") == "AL better than the baseline"
    # With no reason, only identical findings are counted together.
    odd = Verdict("my_metric", "warn", "something new")
    assert finding_kind(odd) == "my_metric: something new"


@pytest.mark.parametrize(
    ("field", "value"),
    [("status", "passed"), ("kind", "bogus"), ("reason", "slow"), ("softened", "gate=warn"), ("confirmed", "yes")],
)
def test_a_worker_verdict_with_an_unknown_fixed_word_is_refused_naming_it(field: str, value: str) -> None:
    data = Verdict(AL, "warn", "x", "baseline", reason="beyond_noise").to_dict() | {field: value}
    with pytest.raises(ValueError, match=f"verdict {field} must be one of .*got {value!r}"):
        Verdict.from_dict(data)


def test_a_verdict_dict_without_reasons_reads_with_none() -> None:
    data = {"metric": AL, "status": "warn", "message": "x", "kind": "baseline", "change": 0.3, "interval": None}
    read = Verdict.from_dict(data)
    assert (read.reason, read.softened, read.confirmed, read.fingerprint) == ("", "", "", None)


def test_a_run_file_keeps_verdict_fields_this_plugin_does_not_know(tmp_path: Path) -> None:
    # A run file's verdicts stay plain dicts: one written by a newer plugin, with a field or a
    # reason this one does not know, still reads here (only `Verdict.from_dict`, the xdist wire
    # between processes of one install, is strict).
    written = Verdict(AL, "warn", "x", "baseline", reason="beyond_noise").to_dict() | {"reason": "future", "extra": 1}
    newer = json.loads(json.dumps(written))
    write_run(tmp_path / "run.json", Run(records=[record("t.py::a", counted("flops", 1))], runs=[]))
    data = json.loads((tmp_path / "run.json").read_text())
    data["records"][0]["verdicts"] = [newer]
    (tmp_path / "run.json").write_text(json.dumps(data))
    assert read_run(tmp_path / "run.json").records[0].verdicts == [newer]

"""Re-judge the processes `gate_evidence.py --keep DIR` kept, under alternative baseline rules.

Every rule sees the same measurements (each round's baseline files, each candidate
process's run file with the raw rounds of the fresh processes that confirmed it), so the
rules differ only in how they read them. The vote is replayed over the candidate process
and its fresh processes in order, by the majority of 1 + 2 that `confirm` used until
2026-11-26 and by the unanimity it uses since (", unanimous").
A fresh process is only there when the rule that ran thought the test suspect; where
another rule needs one that was never run, the trial is counted as "no process to
confirm with" and decided by the processes there are (the candidate's verdict alone
when there is none).

    python benchmarks/gate_rejudge.py /tmp/keep_b5
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from unittest import mock

from gate_evidence import (
    workload_of,  # this folder's script: one workload naming for both
)

from pytest_efficientllm.core.limits import parse_limit
from pytest_efficientllm.core.record import Metric, Record
from pytest_efficientllm.judging import run_noise
from pytest_efficientllm.judging.gate import GateOptions, judge
from pytest_efficientllm.judging.run_noise import pool, run_medians
from pytest_efficientllm.storage.baselines import read_entries

AS_RUN = "as run (the verdicts in the run files)"
LIMITS = (parse_limit("latency", "+5%"), parse_limit("cpu_time_per_round", "+5%"))
METRICS = ("cpu_time_per_round", "AL")
VOTES = 3
TIMED = ("matmul", "forward")


def _moved_to(metric: Metric, centre: Callable[[list[float]], float]) -> Metric:
    """The newest run's rounds moved to `centre` of the runs' medians, history dropped: no run-to-run bound."""
    medians = run_medians(metric)
    if not medians:
        return metric
    shift = centre(medians) / medians[-1]
    return Metric(**{**metric.__dict__, "history": (), "samples": tuple(x * shift for x in metric.samples)})


def _rewrite(baseline: Record, how: Callable[[Metric], Metric]) -> Record:
    metrics = {n: how(m) if m.source == "measured" and m.samples else m for n, m in baseline.metrics.items()}
    return Record(**{**baseline.__dict__, "metrics": metrics})


# name -> (baseline rewrite or None for the rule as shipped, one-sided prediction level)
RULES: dict[str, tuple[Callable[[Metric], Metric] | None, float]] = {
    "newest run, no run-to-run bound": (lambda m: _moved_to(m, lambda x: x[-1]), run_noise.PREDICTION),
    "median of all runs, no run-to-run bound": (lambda m: _moved_to(m, statistics.median), run_noise.PREDICTION),
    "faster half, no run-to-run bound": (
        lambda m: _moved_to(m, lambda x: run_noise.centre(x, m.direction)),
        run_noise.PREDICTION,
    ),
    "faster half, moderated 99.9% bound (one process alone)": (None, run_noise.PREDICTION),
    "faster half, moderated 99% bound": (None, 0.99),
    "faster half, moderated 95% bound": (None, 0.95),
    "faster half, moderated 90% bound (each of 3 voting, shipped)": (None, 0.90),
}


def _fails(record: Record, baseline: Record, priors: dict, metric: str) -> bool:
    verdicts = judge(record, LIMITS, baseline, "", GateOptions(), priors)
    return any(v.metric == metric and v.failed for v in verdicts)


def _unanimous(first: bool, fresh: list[bool]) -> tuple[bool, bool]:
    """(fails, short of processes) when every one of 1 + 2 processes must fail; a pass ends it."""
    votes = [first, *fresh][:VOTES]
    if not all(votes):
        return False, False
    return True, len(votes) < VOTES


def _vote(first: bool, fresh: list[bool]) -> tuple[bool, bool]:
    """(fails, short of processes) by the sequential majority of 1 + 2."""
    votes = [first]
    need = VOTES // 2 + 1
    for vote in fresh:
        if votes.count(True) >= need or votes.count(False) >= need:
            break
        votes.append(vote)
    decided = votes.count(True) >= need or votes.count(False) >= need
    if not first and len(votes) == 1:
        return False, False  # not suspect enough to fail here: nothing to confirm
    return votes.count(True) >= need if decided else votes.count(True) > votes.count(False), not decided


def _round_baselines(round_dir: Path) -> tuple[dict[str, Record], dict]:
    """A kept round's baseline records by node id, and the run-to-run priors of their file."""
    files = list((round_dir / "baselines").rglob("*.json"))
    baselines = {nodeid: rec for path in files for nodeid, rec in read_entries(path).items()}
    return baselines, pool(baselines.values())


def rejudge(keep: Path) -> dict[tuple[str, str, str, str], list[int]]:
    """(rule, workload, variant, metric) -> [trials, failed, short of processes]."""
    tally: dict[tuple[str, str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for round_dir in sorted(keep.glob("round-*")):
        baselines, priors = _round_baselines(round_dir)
        for run_file in sorted(round_dir.glob("run-*.json")):
            if "-threeprocesses-" in run_file.stem:
                continue  # `rejudge_repeats`
            variant = run_file.stem.split("-", 2)[2].rsplit("-", 1)[0]
            for data in json.loads(run_file.read_text())["records"]:
                record = Record.from_dict(data)
                workload = workload_of(record.nodeid)
                base = baselines.get(record.nodeid)
                if workload not in TIMED or base is None:
                    continue
                fresh_records = [Record.from_dict(c) for c in data.get("confirmations", [])]
                for metric in METRICS:
                    row = tally[(AS_RUN, workload, variant, metric)]
                    row[0] += 1
                    row[1] += any(v["metric"] == metric and v["status"] == "fail" for v in data["verdicts"])
                for rule, (how, level) in RULES.items():
                    b = _rewrite(base, how) if how else base
                    with mock.patch.object(run_noise, "PREDICTION", level):
                        for metric in METRICS:
                            p = priors if how is None else {}
                            first = _fails(record, b, p, metric)
                            fresh = [_fails(f, b, p, metric) for f in fresh_records] if first else []
                            for vote_rule, vote in (("", _vote), (", unanimous", _unanimous)):
                                fails, short = vote(first, fresh)
                                row = tally[(rule + vote_rule, workload, variant, metric)]
                                row[0] += 1
                                row[1] += fails
                                row[2] += short
    return tally


def rejudge_repeats(keep: Path) -> dict[tuple[str, str, str, str], list[int]]:
    """Votes over whole candidate processes run one after another (gate_evidence's "three
    processes"): (rule + vote, workload, variant, metric) -> [trials, failed, 0]."""
    tally: dict[tuple[str, str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for round_dir in sorted(keep.glob("round-*")):
        baselines, priors = _round_baselines(round_dir)
        groups: dict[str, list[Path]] = defaultdict(list)
        for run_file in sorted(round_dir.glob("run-*-threeprocesses-*.json")):
            groups[run_file.stem.split("-", 2)[2].split("-threeprocesses-")[0]].append(run_file)
        for variant, run_files in groups.items():
            processes = [
                {d["nodeid"]: Record.from_dict(d) for d in json.loads(f.read_text())["records"]}
                for f in sorted(run_files)
            ]
            for nodeid, base in baselines.items():
                workload = workload_of(nodeid)
                records = [p[nodeid] for p in processes if nodeid in p]
                if workload not in TIMED or len(records) < VOTES:
                    continue
                for rule, (how, level) in RULES.items():
                    b = _rewrite(base, how) if how else base
                    with mock.patch.object(run_noise, "PREDICTION", level):
                        for metric in METRICS:
                            p = priors if how is None else {}
                            votes = [_fails(r, b, p, metric) for r in records[:VOTES]]
                            for vote_rule, fails in (
                                ("first process alone", votes[0]),
                                ("majority of 3", votes.count(True) >= 2),
                                ("all 3", all(votes)),
                            ):
                                row = tally[(f"{rule}, {vote_rule}", workload, variant, metric)]
                                row[0] += 1
                                row[1] += fails
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("keep", type=Path, nargs="+")
    args = parser.parse_args()
    total: dict[tuple[str, str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for keep in args.keep:
        for key, row in (*rejudge(keep).items(), *rejudge_repeats(keep).items()):
            total[key] = [a + b for a, b in zip(total[key], row)]
    repeat_rules = sorted({key[0] for key in total if key[0].endswith(("alone", "of 3", "all 3"))})
    columns = [(w, v) for w in ("matmul", "forward") for v in ("AA", "+5", "+10", "+20")]
    for metric in METRICS:
        print(f"\n{metric}: failed / trials per workload and variant (A/A includes the memory variant's timed tests)\n")
        print(
            "| rule | "
            + " | ".join(f"{w} {'A/A' if v == 'AA' else v + '%'}" for w, v in columns)
            + " | short of processes |"
        )
        print("|---" * (len(columns) + 2) + "|")
        for rule in (AS_RUN, *RULES, *(r + ", unanimous" for r in RULES), *repeat_rules):
            cells, short = [], 0
            for w, v in columns:
                variants = ("AA", "mem+1") if v == "AA" else (v,)
                rows = [total[(rule, w, x, metric)] for x in variants if (rule, w, x, metric) in total]
                n, failed = sum(r[0] for r in rows), sum(r[1] for r in rows)
                if not n:
                    cells.append("-")
                    continue
                short += sum(r[2] for r in rows)
                cells.append(f"{failed}/{n} ({failed / n:.0%})" if n else "-")
            if any(cell != "-" for cell in cells):
                print(f"| {rule} | " + " | ".join(cells) + f" | {short} |")


if __name__ == "__main__":
    main()

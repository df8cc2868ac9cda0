"""How far each kept suite run moved as a whole, and how far its tests moved beyond it (`judging.run_shift`).

    python benchmarks/run_shift_evidence.py /work/ev-aa/*.json [--only decode [--rules]]

Reads run files that `gross_evidence.py --keep DIR` kept. Per run, over the first-process
`cpu_time_per_round` changes against the baseline: the median and the lower quartile (the run's
shift, `RunChanges.shift`); how many readings reached the least gross floor (+90%) raw, and how
many still did beyond the run's shift; the largest of each; how many the vote of fresh processes
confirmed (raw), and how many of those have a process's reading beyond the run too (what fails
under the rule since commit 3f79b91); and the calibration workload of the run's first record
against its baseline's. With `--only`, the tests whose node id contains it are counted apart
(the slowed ones of a trial).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from pytest_efficientllm.judging.gross import GROSS_MIN
from pytest_efficientllm.judging.run_shift import RunChanges, RunShift
from pytest_efficientllm.judging.verdicts import Verdict
from pytest_efficientllm.storage.cpu_folders import BaselineFolders

METRIC = "cpu_time_per_round"
ROOT = Path(__file__).resolve().parent.parent


def first_changes(run: dict) -> dict[str, float]:
    """Each test's change in the process that measured it first (a verdict's `change`)."""
    out = {}
    for record in run["records"]:
        for v in record.get("verdicts", []):
            if v["metric"] == METRIC and v.get("kind") == "baseline" and v.get("change") is not None:
                out[record["nodeid"]] = float(v["change"])
    return out


def confirmed(run: dict) -> dict[str, list[float]]:
    """The tests whose vote confirmed the metric's failure in every process (`confirmed`; raw, before
    the run's shift), with each process's reading (the verdict's `readings`, this process's first)."""
    out = {}
    for record in run["records"]:
        for v in record.get("verdicts", []):
            if v["metric"] == METRIC and v.get("confirmed") == "fresh_processes":
                if "readings" not in v:  # a run file older than the field
                    raise SystemExit(f"{record['nodeid']}: this run file's verdicts carry no readings")
                out[record["nodeid"]] = [float(c) for c in v["readings"]]
    return out


def taken_out(changes: dict[str, float]) -> tuple[RunShift | None, float]:
    """The run's shift over `changes`, and what the rule takes out of a reading (0 where nothing)."""
    collected = RunChanges()
    collected.add(Verdict(METRIC, "pass", "", "baseline", c) for c in changes.values())
    shift = collected.shift(METRIC)
    return shift, shift.change if shift is not None and 0 < shift.change < GROSS_MIN else 0.0


def by_rule(path: Path, only: str) -> str:
    """One table row: of the tests whose node id contains `only`, how many fail raw (the vote
    confirmed them) and under each way of taking the run's shift out that was tried: every
    reading divided (commit 64510dd), this process's alone (0d8b6ae), and the failure kept
    unless the shift explains every reading (3f79b91)."""
    run = json.loads(path.read_text())
    changes = first_changes(run)
    _, q = taken_out(changes)
    voted = {n: r for n, r in confirmed(run).items() if only in n}
    beyond = {n: [(1 + c) / (1 + q) - 1 >= GROSS_MIN for c in r] for n, r in voted.items()}
    slowed = sum(1 for n in changes if only in n)
    return (
        f"| {path.stem} | {slowed} | {len(voted)} | {sum(all(b) for b in beyond.values())} | "
        f"{sum(b[0] for b in beyond.values())} | {sum(any(b) for b in beyond.values())} |"
    )


def calibration_ratio(run: dict) -> str:
    fp = run["records"][0]["fingerprint"]
    folders = BaselineFolders(ROOT / "baselines", "cpu", fp)
    base = folders.lookup(run["records"][0]["nodeid"])
    if base is None:
        return "-"
    mine, theirs = fp["calibration"], base.fingerprint["calibration"]
    return " / ".join(
        f"{mine[k] / theirs[k] - 1:+.0%}" for k in ("matmul_cpu_s", "copy_cpu_s", "cpu_index_s") if theirs.get(k)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--only", default="")
    parser.add_argument("--rules", action="store_true", help="with --only: the slowed tests failed under each rule")
    args = parser.parse_args()
    if args.rules:
        print(
            "| run | slowed | raw (vote confirmed) | every reading divided | this process's alone "
            "| unless all explained |"
        )
        print("|---|---|---|---|---|---|")
        for path in args.runs:
            print(by_rule(path, args.only))
        return
    print(
        "| run | tests | median | lower quartile | raw >= +90% | largest raw | beyond the run >= +90% "
        "| largest beyond the run | vote confirmed | both | calibration matmul / copy / index |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for path in args.runs:
        run = json.loads(path.read_text())
        changes = first_changes(run)
        shift, q = taken_out(changes)
        own = {n: (1 + c) / (1 + q) - 1 for n, c in changes.items()}
        groups = (
            [("", changes)]
            if not args.only
            else [
                (f" ({args.only})", {n: c for n, c in changes.items() if args.only in n}),
                (" (others)", {n: c for n, c in changes.items() if args.only not in n}),
            ]
        )
        voted = confirmed(run)
        for label, chosen in groups:
            raw_gross = sum(1 for c in chosen.values() if c >= GROSS_MIN)
            own_gross = sum(1 for n in chosen if own[n] >= GROSS_MIN)
            both = sum(1 for n in chosen if n in voted and max((1 + c) / (1 + q) - 1 for c in voted[n]) >= GROSS_MIN)
            print(
                f"| {path.stem}{label} | {len(chosen)} | {statistics.median(changes.values()):+.0%} | "
                f"{shift.change if shift else float('nan'):+.0%} | {raw_gross} | {max(chosen.values()):+.0%} | "
                f"{own_gross} | {max(own[n] for n in chosen):+.0%} | {len(set(voted) & set(chosen))} | {both} | "
                f"{calibration_ratio(run)} |"
            )


if __name__ == "__main__":
    main()

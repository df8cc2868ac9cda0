"""Evidence for `pytest-efficientllm ab` (issue 20): A/A false alarms and +10% detection on the pairs,
side by side with the stored-baseline gate in the same hour.

Each round, in an order shuffled per round:

* **ab A/A**: `ab` between two folders holding the same workload file;
* **ab +10%**: `ab` between that folder and one whose workload does 10% more work per round;
* **stored baseline** (`gate_evidence.experiment`, one round): a baseline recorded in one
  process, then one candidate process each for A/A and +10%, judged by the gate's default
  rule with the vote of fresh processes (`--efficiency-confirm=2`), as a CI run would be.

With `--one-slower`, the +10% side slows only the first copy of each workload (`[0]`), the way a
change slows one model of a suite: that copy's trials are "+10% (one copy)", the other copies of
the same comparisons are "A/A (beside it)", and the A/A comparisons are left out. `ab` can then
judge the slowed copy against the other tests of its pairs (`judging.paired.relative_change`).

The workload file is `gate_evidence.WORKLOAD`: `test_latency` (60 fp32 256x256 matmuls per
round) and `test_forward` (20 forwards of a 2-layer Llama), each with `latency='+5%'` and
`cpu_time_per_round='+5%'` on its marker, several copies per process. Every test copy and
metric is one trial. One torch thread per process.

    python benchmarks/ab_evidence.py --rounds 4 --write   # writes its RESULTS.md section
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import gate_evidence
from results_md import RESULTS, replace_section

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from pytest_efficientllm.ab.command import run_comparison  # noqa: E402
from pytest_efficientllm.judging.verdicts import Verdict  # noqa: E402

SECTION = "## Base against head, interleaved (issue 20)"
METRICS = ("AL", "cpu_time_per_round")


def side_folder(root: Path, name: str, slowdown: float, first_copy_only: bool = False) -> Path:
    """A project folder whose workload does `slowdown` more work per round, fixed in the file itself
    (in the first copy of each workload only, with `first_copy_only`)."""
    folder = root / name
    folder.mkdir()
    text = gate_evidence.WORKLOAD.replace(
        'SLOWDOWN = float(os.environ.get("GATE_SLOWDOWN", "0"))', f"SLOWDOWN = {slowdown!r}"
    )
    assert f"SLOWDOWN = {slowdown!r}" in text
    if first_copy_only:
        for work in ("MATMULS", "FORWARDS"):
            old = f"count = round({work} * (1 + SLOWDOWN))"
            assert old in text
            text = text.replace(old, f"count = round({work} * (1 + (SLOWDOWN if copy == 0 else 0)))")
    (folder / "test_workload.py").write_text(text)
    (folder / "pytest.ini").write_text("[pytest]\n")
    return folder


def stage_of(v: Verdict) -> str:
    """Whether a verdict was decided by the first pairs ("first") or after more pairs ("confirmed",
    "not confirmed")."""
    if v.softened == "pairs_cleared":
        return "not confirmed"
    if v.confirmed == "more_pairs":
        return "confirmed"
    return "first"


# The +10% comparisons of `--one-slower`: the first copy is slowed, the others are not.
ONE = "+10% (one copy)"
BESIDE = "A/A (beside it)"


def variant_of(variant: str, nodeid: str) -> str:
    if variant != ONE:
        return variant
    return ONE if nodeid.endswith("[0]") else BESIDE


def ab_trials(base: Path, head: Path, variant: str, pairs: int, out: Path, rnd: int) -> tuple[list[dict], float]:
    args = ["--efficiency-threads=1", "-k", "test_latency or test_forward"]
    started = time.monotonic()
    comparison = run_comparison(str(base), str(head), args, out, pairs=pairs)
    seconds = time.monotonic() - started
    trials = []
    for test in comparison.tests:
        by_metric = {v.metric: v for v in test.verdicts}
        again = {v.metric: v for v in test.again if v.kind == "baseline"}
        for metric in METRICS:
            v = by_metric.get(metric)
            if v is None:
                continue
            trials.append(
                {
                    "round": rnd,
                    "method": f"ab, {pairs} pairs",
                    "variant": variant_of(variant, test.nodeid),
                    "workload": gate_evidence.workload_of(test.nodeid),
                    "test": test.nodeid,
                    "metric": metric,
                    "status": v.status,
                    "change": v.change,
                    "incomplete": test.status != "compared",
                    # Which stage decided: the first pairs alone, or the pairs that confirm a failure.
                    "stage": stage_of(v),
                    "reason": v.reason,
                    # The rule the confirming pairs found it by, where they measured it again.
                    "confirming_reason": again[metric].reason if metric in again else None,
                }
            )
    return trials, seconds


def stored_trials(rnd: int, seed: int) -> list[dict]:
    """One round of the stored-baseline gate, A/A and +10% only, with the default vote."""
    variants = gate_evidence.VARIANTS
    gate_evidence.VARIANTS = {k: v for k, v in variants.items() if k in ("A/A", "+10%")}
    try:
        trials = gate_evidence.experiment(1, seed + rnd, ["confirmed"])
    finally:
        gate_evidence.VARIANTS = variants
    out = []
    for t in trials:
        if t["workload"] == "memory":
            continue
        out.append(
            {
                "round": rnd,
                "method": "stored baseline, confirmed",
                "variant": "A/A" if t["slowdown"] == 0 else "+10%",
                "workload": t["workload"],
                "test": t["test"],
                "metric": t["metric"],
                "status": t["status"],
                "change": t["change"],
                "incomplete": False,
            }
        )
    return out


def table(trials: list[dict]) -> list[str]:
    rows = [
        "| method | workload | trial | metric | comparisons | first pairs failed | failed | rate | target "
        "| median change seen |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    targets = {"A/A": "false alarms <= 1%", "+10%": ">= 95%", BESIDE: "false alarms <= 1%", ONE: ">= 95%"}
    for method in sorted({t["method"] for t in trials}):
        for workload in ("matmul", "forward"):
            for variant in targets:
                for metric in METRICS:
                    key = (method, workload, variant, metric)
                    picked = [t for t in trials if (t["method"], t["workload"], t["variant"], t["metric"]) == key]
                    if not picked:
                        continue
                    hits = sum(t["status"] == "fail" for t in picked)
                    # Decided by the confirming pairs, either way, means the first pairs failed it;
                    # trials saved before the stage was recorded ("-") cannot say.
                    first = (
                        str(sum(t["stage"] != "first" or t["status"] == "fail" for t in picked))
                        if all("stage" in t for t in picked)
                        else "-"
                    )
                    changes = [t["change"] for t in picked if t["change"] is not None]
                    median = f"{100 * statistics.median(changes):+.1f}%" if changes else "-"
                    rows.append(
                        f"| {method} | {workload} | {variant} | {metric} | {len(picked)} | {first} | {hits} | "
                        f"{100 * hits / len(picked):.1f}% | {targets[variant]} | {median} |"
                    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--tests", type=int, default=16, help="matmul test copies per process")
    parser.add_argument("--forward-tests", type=int, default=4, help="forward test copies per process")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--no-stored", action="store_true", help="ab only, without the stored-baseline gate")
    parser.add_argument("--one-slower", action="store_true", help="slow only the first copy of each workload")
    parser.add_argument("--trials-json", type=Path, default=None)
    parser.add_argument("--from-trials", type=Path, default=None, help="render from a saved --trials-json")
    parser.add_argument("--write", action="store_true", help=f"replace the '{SECTION}' section of {RESULTS}")
    args = parser.parse_args()
    os.environ.update(
        {
            "GATE_BENCHMARKS_DIR": str(HERE),
            "GATE_TESTS": str(args.tests),
            "GATE_FWD_TESTS": str(args.forward_tests),
            "GATE_MEM_TESTS": "0",
            "HF_HUB_OFFLINE": "1",
        }
    )
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_ADDOPTS"):
        os.environ.pop(name, None)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    seconds: list[float] = []
    if args.from_trials:
        saved = json.loads(args.from_trials.read_text())
        trials, seconds, started = saved["trials"], saved["ab_seconds"], saved["started"]
    else:
        rng = random.Random(args.seed)
        trials = []
        with tempfile.TemporaryDirectory(prefix="ab-evidence-") as tmp:
            root = Path(tmp)
            base = side_folder(root, "base", 0.0)
            same = side_folder(root, "same", 0.0)
            slower = side_folder(root, "slower", 0.10, first_copy_only=args.one_slower)
            for rnd in range(args.rounds):
                t0 = time.time()
                jobs = [f"ab {ONE}"] if args.one_slower else ["ab A/A", "ab +10%"]
                jobs += [] if args.no_stored else ["stored"]
                rng.shuffle(jobs)
                for job in jobs:
                    if job == "stored":
                        trials += stored_trials(rnd, args.seed)
                        continue
                    variant = job.split(" ", 1)[1]
                    head = same if variant == "A/A" else slower
                    got, took = ab_trials(base, head, variant, args.pairs, root / f"out-{rnd}-{len(trials)}", rnd)
                    trials += got
                    seconds.append(took)
                print(f"round {rnd + 1}/{args.rounds}: {time.time() - t0:.0f} s", flush=True)
        if args.trials_json:
            args.trials_json.write_text(json.dumps({"trials": trials, "ab_seconds": seconds, "started": started}))
    tests_per_process = args.tests + args.forward_tests
    per_ab = statistics.median(seconds) if seconds else float("nan")
    lines = [
        SECTION,
        "",
        f"Command: `python benchmarks/ab_evidence.py --rounds {args.rounds} --pairs {args.pairs}"
        f" --tests {args.tests} --forward-tests {args.forward_tests}"
        f"{' --no-stored' if args.no_stored else ''}{' --one-slower' if args.one_slower else ''}`"
        f" (started {started}; {gate_evidence.machine()}).",
        "",
        *table(trials),
        "",
        f"Time to decide: one `ab` run of {args.pairs} pairs ({2 * args.pairs} fresh processes) over a selection of "
        f"{tests_per_process} tests (~20 ms x 6 rounds each, the forward tests building a tiny Llama once per "
        f"process) took {per_ab:.0f} s, median of {len(seconds)} runs.",
    ]
    print("\n".join(lines))
    if args.write:
        replace_section(SECTION, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

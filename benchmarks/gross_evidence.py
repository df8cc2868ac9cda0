"""Does the CPU's default time check fail gross slowdowns, and only them? (issue 17)

    python benchmarks/gross_evidence.py --trial 1.0:5 --trial 2.0:2:-k=decode --trial 1.5:3:-k=decode \
        [--keep DIR] [--write]

Each trial is FACTOR:RUNS[:PYTEST-ARGS], the args split on commas. A run is `pytest suites/` as
`.ci/run` runs it (default gate, vote and all) against a copy of the committed CPU baselines
this machine is compared with (its CPU model's own `baselines/cpu@<cpu>/`, else
`baselines/cpu/`) in which every measured time (value, rounds, run history) is divided by
FACTOR: unchanged code then reads FACTOR times slower, as a slowdown of the code would. FACTOR
1.0 is the A/A: every failure is a false alarm. Counted per run: its exit status and, per test,
the final verdict of `cpu_time_per_round`, the CPU profile's default check (after the vote).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_md import replace_section
from suites_aa import ROOT, one_run

sys.path.insert(0, str(ROOT))
from tests.helpers.slowed_baselines import compared_here, slow_down  # noqa: E402

SECTION = "## Gross slowdowns on the CPU (issue 17)"
METRIC = "cpu_time_per_round"


def slowed_copy(factor: float, dest: Path, only: str = "") -> Path:
    """The CPU baselines this machine is compared with (`compared_here`), copied to `dest/cpu`
    with every measured time divided by `factor` (of the tests whose node id contains `only`)."""
    shutil.copytree(compared_here(ROOT / "baselines"), dest / "cpu")
    slow_down(dest / "cpu", factor, only)
    return dest


def verdicts(run: dict) -> dict[str, tuple[str, float | None]]:
    out = {}
    for record in run["records"]:
        for v in record.get("verdicts", []):
            if v["metric"] == METRIC and v.get("kind") == "baseline":
                out[record["nodeid"]] = (v["status"], v.get("change"))
    return out


def floors() -> list[float]:
    """The gross floor of every committed CPU baseline of the metric."""
    from pytest_efficientllm.judging.gross import gross_floor
    from pytest_efficientllm.judging.run_noise import pool
    from pytest_efficientllm.storage.baselines import read_entries

    out = []
    for path in sorted(compared_here(ROOT / "baselines").rglob("*.json")):
        records = read_entries(path)
        priors = pool(records.values())
        for record in records.values():
            base = record.metrics.get(METRIC)
            if base is not None and base.value is not None:
                out.append(gross_floor(base, priors.get(METRIC))[0])
    return sorted(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trial", action="append", required=True, help="FACTOR:RUNS[:PYTEST-ARGS]")
    parser.add_argument("--write", action="store_true")
    parser.add_argument(
        "--keep", type=Path, help="copy each run's file here (x<factor>-<run>.json), for re-judging them later"
    )
    parser.add_argument(
        "--only",
        default="",
        help="slow down only the tests whose node id contains this (the rest of the run unchanged: a "
        "regression of some tests on a machine that may have drifted as a whole)",
    )
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows = []
    changed: dict[float, list[str]] = {}
    for spec in args.trial:
        factor_text, runs_text, *rest = spec.split(":", 2)
        factor, runs = float(factor_text), int(runs_text)
        extra = rest[0].split(",") if rest and rest[0] else []
        for i in range(runs):
            with tempfile.TemporaryDirectory() as tmp:
                base = slowed_copy(factor, Path(tmp) / "baselines", args.only)
                load = os.getloadavg()[0]
                t0 = time.perf_counter()
                wall, rc, run = one_run([f"--baselines-dir={base}", *extra], Path(tmp) / "run.json")
                seen = verdicts(run)
                if args.keep:
                    args.keep.mkdir(parents=True, exist_ok=True)
                    shutil.copy(Path(tmp) / "run.json", args.keep / f"x{factor:g}-{len(rows) + 1}.json")
            counts = {s: sum(1 for st, _ in seen.values() if st == s) for s in ("fail", "warn", "pass", "improved")}
            changes = [c for _, c in seen.values() if c is not None]
            rows.append((factor, " ".join(extra), i + 1, rc, len(seen), counts, changes, wall, load))
            wrong = [n for n, (st, _) in seen.items() if (st == "fail") != (factor >= 1.5 and args.only in n)]
            changed.setdefault(factor, []).extend(f"{n} {seen[n][0]} {(seen[n][1] or 0) * 100:+.0f}%" for n in wrong)
            print(f"x{factor} run {i + 1}/{runs}: rc {rc}, {counts}, {time.perf_counter() - t0:.0f} s", flush=True)
            for n in wrong[:10]:
                print(f"    {n}: {seen[n][0]} {(seen[n][1] or 0) * 100:+.1f}%", flush=True)
    lines = [
        SECTION,
        "",
        f"Command: `python benchmarks/gross_evidence.py {' '.join('--trial ' + t for t in args.trial)}"
        + (f" --only {args.only}" if args.only else "")
        + " --write` "
        f"({started}, commit {commit.stdout.strip()}). Each run is `pytest suites/` with the default gate (vote of "
        f"2 fresh processes 20 s apart) against a copy of the committed `{compared_here(ROOT / 'baselines').name}/` "
        "with every measured time "
        + (f"of the tests whose node id contains `{args.only}` " if args.only else "")
        + "divided by the factor, so unchanged code reads that much slower. Verdicts of `cpu_time_per_round`, the "
        "CPU profile's default check, after the vote. Factor 1.0 is the A/A (every failure a false alarm).",
        "",
        "| slowdown | selection | run | exit | tests checked | failed | warned | passed | improved "
        "| median change seen | wall | load at start |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for factor, sel, i, rc, n, counts, changes, wall, load in rows:
        med = f"{statistics.median(changes) * 100:+.0f}%" if changes else "-"
        lines.append(
            f"| x{factor:g} | {sel or 'all'} | {i} | {rc} | {n} | {counts['fail']} | {counts['warn']} | "
            f"{counts['pass']} | {counts['improved']} | {med} | {wall:.0f} s | {load:.1f} |"
        )
    lines.append("")
    for factor in sorted({r[0] for r in rows}):
        mine = [r for r in rows if r[0] == factor]
        tests = sum(r[4] for r in mine)
        failed = sum(r[5]["fail"] for r in mine)
        red = sum(1 for r in mine if r[3] != 0)
        lines.append(
            f"- x{factor:g}: {failed} of {tests} test checks failed; {red} of {len(mine)} runs exited non-zero."
        )
    fl = floors()
    if fl:
        lines += [
            "",
            f"Gross floors of the {len(fl)} committed baselines of `{METRIC}`: {fl[0]:+.0%} (smallest), "
            f"{statistics.median(fl):+.0%} (median), {fl[-1]:+.0%} (largest); "
            f"{sum(1 for f in fl if f == fl[0])} at the smallest.",
        ]
    for factor, names in sorted(changed.items()):
        if names:
            lines += ["", f"x{factor:g}, the checks that went the other way: " + "; ".join(names[:30])]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        replace_section(SECTION, text)


if __name__ == "__main__":
    main()

"""Are the suites' counted costs identical across fresh processes and across `-n 2`? (issue 17)

    python benchmarks/counted_determinism.py [--runs 20] [--xdist-runs 2] [--write]
    python benchmarks/counted_determinism.py --runs 3 --xdist-runs 0 --vary 1:0,3:1,12:3 --against-baselines

Each run is a fresh `pytest suites/` process with `--efficiency-json`; the counted metrics
(source `counted`: bytes accessed, tensor peak, allocations, operators, dtype shares, FLOPs,
parameters...) of every record are collected by node id and compared across all runs. The
counting pass runs once per test after warm-up whatever the number of timed rounds, so the
runs use `--efficiency-rounds=1` and the gate off to save time; the counts do not depend on
either. A value that differs between any two runs is listed with every run's value.

`--vary ROUNDS:WARMUP,...` checks that claim: run i takes the i-th pair (cyclically) as its
default rounds and warm-up instead of one round (a marker's own rounds still win).
`--against-baselines` adds the committed CPU baselines this machine is compared with (its CPU
model's own `baselines/cpu@<cpu>/`, else `baselines/cpu/`) as one more "run", recorded at the
default rounds, to the comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_md import replace_section

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Counted cost: identical across fresh processes (issue 17)"
# Counted, but the protocol's own setting echoed, not a cost: it follows --efficiency-rounds.
SETTINGS = {"rounds"}
FAST = ["--efficiency-rounds=1", "--efficiency-gate=off", "--efficiency-confirm=0"]


def one_run(out: Path, xdist: bool, rounds_warmup: tuple[int, int] | None = None) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    fast = FAST
    if rounds_warmup is not None:
        fast = [f"--efficiency-rounds={rounds_warmup[0]}", f"--efficiency-warmup={rounds_warmup[1]}", *FAST[1:]]
    cmd = [sys.executable, "-m", "pytest", "suites/", "-q", "-p", "no:cacheprovider", f"--efficiency-json={out}", *fast]
    if xdist:
        cmd += ["-n", "2"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if not out.exists():
        raise RuntimeError(f"pytest suites/ exited {proc.returncode} without a run file:\n{proc.stdout[-3000:]}")
    return json.loads(out.read_text())


def counted_values(run: dict) -> dict[tuple[str, str], float | None]:
    out = {}
    for record in run["records"]:
        for name, metric in record["metrics"].items():
            if metric.get("source") == "counted" and name not in SETTINGS:
                out[(record["nodeid"], name)] = metric.get("value")
    return out


def baseline_values() -> dict[tuple[str, str], float | None]:
    sys.path.insert(0, str(ROOT))
    from pytest_efficientllm.storage.baselines import read_entries
    from tests.helpers.slowed_baselines import compared_here

    out = {}
    for path in sorted(compared_here(ROOT / "baselines").rglob("*.json")):
        for nodeid, record in read_entries(path).items():
            for name, metric in record.metrics.items():
                if metric.source == "counted" and name not in SETTINGS:
                    out[(nodeid, name)] = metric.value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="serial fresh processes")
    parser.add_argument("--xdist-runs", type=int, default=2, help="further runs with -n 2")
    parser.add_argument("--vary", default="", help="ROUNDS:WARMUP pairs, comma-separated, cycled over the runs")
    parser.add_argument("--against-baselines", action="store_true", help="compare with the CPU baselines too")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    vary = [(int(r), int(w)) for r, w in (p.split(":") for p in args.vary.split(",") if p)]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    runs: list[tuple[str, dict[tuple[str, str], float | None]]] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        kinds = ["serial"] * args.runs + ["-n 2"] * args.xdist_runs
        for i, kind in enumerate(kinds):
            pair = vary[i % len(vary)] if vary else None
            if pair is not None:
                kind += f", rounds {pair[0]} warm-up {pair[1]}"
            values = counted_values(one_run(Path(tmp) / f"run-{i}.json", not kind.startswith("serial"), pair))
            runs.append((kind, values))
            print(f"run {i + 1}/{len(kinds)} ({kind}): {len(values)} counted values", flush=True)
    if args.against_baselines:
        runs.append(("baselines", baseline_values()))
    wall = time.perf_counter() - t0
    keys = sorted(set().union(*(v.keys() for _, v in runs)))
    differing = []
    missing = []
    for key in keys:
        seen = [v.get(key, "absent") for _, v in runs]
        if any(s == "absent" for s in seen):
            missing.append((key, seen))
        elif len({json.dumps(s) for s in seen}) > 1:
            differing.append((key, seen))
    records = {k[0] for k in keys}
    summary = (
        f"{len(keys)} counted values of {len(records)} records; {len(differing)} differ between runs, "
        f"{len(missing)} are missing from some run"
    )
    print(summary)
    for key, seen in differing[:40] + missing[:10]:
        print(f"  {key[0]} {key[1]}: {seen}")
    if not args.write:
        return
    lines = [
        SECTION,
        "",
        f"Command: `python benchmarks/counted_determinism.py --runs {args.runs} --xdist-runs {args.xdist_runs} "
        f"--write` ({started}, commit {commit.stdout.strip()}, {wall / 60:.0f} min on the shared 2-core machine). "
        f"{args.runs} fresh `pytest suites/` processes run one after another and {args.xdist_runs} more with "
        f"`-n 2`, each with `{' '.join(FAST)}` (the counting pass runs once per test after warm-up "
        "whatever the rounds); every metric of source `counted` of every record compared across all "
        f"{len(runs)} runs.",
        "",
        f"**Result: {summary}.**",
    ]
    if differing or missing:
        lines += ["", "| record | metric | values per run |", "|---|---|---|"]
        for key, seen in differing + missing:
            lines.append(f"| `{key[0]}` | {key[1]} | {', '.join(str(s) for s in seen)} |")
    replace_section(SECTION, "\n".join(lines))


if __name__ == "__main__":
    main()

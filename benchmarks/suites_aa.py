"""A/A of the CPU suites against the committed baselines (issue 3): what our own CI meets.

    python benchmarks/suites_aa.py [--runs 3] [--write] [--pytest-arg=--efficiency-min-time=0.5s]

Each run is `pytest suites/` exactly as `.ci/run` runs it (default gate, the CPU baselines this
machine is compared with, which an earlier, separate process recorded), with
`--efficiency-json` to read the verdicts. Unchanged code, so every regression verdict is a
false alarm. Counted per gated metric: failures; the CPU profile's default `cpu_time_per_round`
check, which warns, is counted apart as "would fail" when its message says the change is beyond
tolerance and noise — the number that decides whether that default could fail instead. Also:
improvements beyond tolerance (a baseline recorded slower than this run), and the wall time of
each run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_md import replace_section

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.helpers.slowed_baselines import compared_here  # noqa: E402

SECTION = "## Suites against the committed baselines (issue 3)"


def one_run(extra: list[str], out: Path) -> tuple[float, int, dict]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "suites/", "-q", "-p", "no:cacheprovider", f"--efficiency-json={out}", *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if not out.exists():
        raise RuntimeError(f"pytest suites/ exited {proc.returncode} without a run file:\n{proc.stdout[-3000:]}")
    return wall, proc.returncode, json.loads(out.read_text())


def tally(run: dict) -> dict:
    gated = fails = would_fail = improved = 0
    failed: list[str] = []
    would: list[str] = []
    for record in run["records"]:
        for v in record.get("verdicts", []):
            if v.get("kind") != "baseline" or v["metric"] == "*":
                continue
            gated += 1
            if v["status"] == "fail":
                fails += 1
                failed.append(f"{record['nodeid']} {v['metric']} {v['change'] * 100:+.1f}%")
            elif v["status"] == "improved":
                improved += 1
            elif v["status"] == "warn" and v.get("reason") == "beyond_noise":
                would_fail += 1
                would.append(f"{record['nodeid']} {v['metric']} {v['change'] * 100:+.1f}%")
    return {
        "gated": gated,
        "fails": fails,
        "would_fail": would_fail,
        "improved": improved,
        "failed": failed,
        "would": would,
    }


def run_to_run_bounds(metric: str = "cpu_time_per_round") -> list[float]:
    """For each committed CPU baseline this machine is compared with, that has a run-to-run
    bound: how far above the centre of its runs the gate's prediction bound lies, i.e. the
    smallest regression that can fail at all (`run_noise.predict`, jitter moderated across the
    file's tests)."""
    from pytest_efficientllm.judging.run_noise import pool, predict, run_medians
    from pytest_efficientllm.storage.baselines import read_entries

    out = []
    for path in sorted(compared_here(ROOT / "baselines").rglob("*.json")):
        records = read_entries(path)
        priors = pool(records.values())
        for record in records.values():
            base = record.metrics.get(metric)
            if base is None or not base.samples:
                continue
            prediction = predict(run_medians(base), priors.get(metric))
            if prediction is not None:
                out.append(prediction.high / prediction.centre - 1)
    return sorted(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--pytest-arg", action="append", default=[])
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M")
    load0 = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            wall, rc, run = one_run(args.pytest_arg, Path(tmp) / f"run-{i}.json")
            t = tally(run)
            rows.append({"wall_s": wall, "rc": rc, **t})
            print(f"run {i + 1}/{args.runs}: rc {rc}, {wall:.0f} s, {t}", flush=True)
    load1 = os.getloadavg()[0]
    lines = [
        SECTION,
        "",
        f"Command: `python benchmarks/suites_aa.py --runs {args.runs}"
        + "".join(f" --pytest-arg={a}" for a in args.pytest_arg)
        + f" --write` ({started}, load average "
        f"{load0:.1f} at start, {load1:.1f} at end). Each run is `pytest suites/` as `.ci/run` runs it, against "
        f"the committed `{compared_here(ROOT / 'baselines').name}/` (recorded by earlier, separate processes); "
        "unchanged code, so every "
        'regression verdict is a false alarm. "would fail": the CPU profile\'s default `cpu_time_per_round` '
        "check (which warns) found a change beyond its 5% tolerance and the noise.",
        "",
        "| run | exit | wall | gated comparisons | failed | would fail (default CPU-time check) | improved |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows):
        lines.append(
            f"| {i + 1} | {r['rc']} | {r['wall_s']:.0f} s | {r['gated']} | {r['fails']} | {r['would_fail']} | "
            f"{r['improved']} |"
        )
    total = sum(r["gated"] for r in rows)
    lines += [
        "",
        f"False alarms: {sum(r['fails'] for r in rows)} failed of {total} gated comparisons; "
        f"{sum(r['would_fail'] for r in rows)} of {total} would fail if the CPU-time default failed "
        f"({statistics.mean(r['wall_s'] for r in rows):.0f} s per run on average).",
    ]
    bounds = run_to_run_bounds()
    if bounds:
        q = statistics.quantiles(bounds, n=10) if len(bounds) > 1 else bounds * 9
        lines += [
            "",
            f"What the run-to-run rule leaves detectable: over the {len(bounds)} committed CPU baselines of "
            "`cpu_time_per_round` with a run-to-run bound, the 99.9% prediction bound lies "
            f"{bounds[0]:+.0%} (smallest), {statistics.median(bounds):+.0%} (median), {q[8]:+.0%} (90th "
            f"percentile) above the centre of the runs (`run_noise`); a regression below that passes as "
            "run-to-run noise.",
        ]
    would = [w for r in rows for w in r["would"] + r["failed"]]
    if would:
        lines += ["", "Which: " + "; ".join(would[:20]) + (" …" if len(would) > 20 else "")]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        replace_section(SECTION, text)


if __name__ == "__main__":
    main()

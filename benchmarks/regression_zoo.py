"""The regression zoo (issue 17): what the default gate catches of nine realistic LLM regressions.

    python benchmarks/regression_zoo.py --runs 5 --aa-runs 20 [--write] [--only dtype_upcast,...]

Each regression is a before/after pair in `benchmarks/zoo/workloads.py`, measured by the real
plugin through `benchmarks/zoo/test_zoo.py` (one parametrized test, side from ZOO_SIDE):

1. one pytest process records the "before" of every pair with `--update-baselines` into a
   temporary `--baselines-dir`;
2. `--runs` fresh pytest processes run the "after" against it, with the default gate (the
   project's ini: one torch thread, fixed process layout); the run file (`--efficiency-json`)
   says, per test, which verdicts failed;
3. `--aa-runs` fresh processes run the "before" against its own baseline: unchanged code, so
   every counted metric should compare at exactly +0%, and any failure is a false alarm.

Per pair: the counted metrics that failed (median change over the runs), in how many runs the
test failed, and the `cpu_time_per_round` verdict (the default timing rule) in each run. Then
the counting pass's cost per workload: one round, one run under FlopCounterMode alone (the
FLOP pass before issue 17) and one run under the counting pass (`op_counting.count_run`),
each timed in this process with one torch thread.
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
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from results_md import replace_section

ROOT = Path(__file__).resolve().parents[1]
TEST_FILE = "benchmarks/zoo/test_zoo.py"
SECTION = "## Regression zoo: what counting catches (issue 17)"
TIMING = "cpu_time_per_round"


def pytest_run(side: str, baselines: Path, out: Path, only: list[str], update: bool = False) -> tuple[int, dict]:
    """One fresh pytest process over the zoo on `side`; its exit code and run file."""
    env = {**os.environ, "ZOO_SIDE": side, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "pytest", TEST_FILE, "-q", "-p", "no:cacheprovider"]
    cmd += [f"--baselines-dir={baselines}", f"--efficiency-json={out}"]
    if update:
        cmd.append("--update-baselines")
    if only:
        cmd += ["-k", " or ".join(only)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if not out.exists():
        raise RuntimeError(f"pytest ({side}) exited {proc.returncode} without a run file:\n{proc.stdout[-3000:]}")
    return proc.returncode, json.loads(out.read_text())


def regression_of(nodeid: str) -> str:
    return nodeid.rsplit("[", 1)[1].rstrip("]")


def counted_names(record: dict) -> set[str]:
    return {name for name, m in record["metrics"].items() if m.get("source") == "counted"}


def baseline_verdicts(record: dict) -> list[dict]:
    return [v for v in record.get("verdicts", []) if v.get("kind") == "baseline" and v["metric"] != "*"]


def after_row(records: list[dict]) -> dict[str, Any]:
    """What the gate said about one regression over the runs of its "after"."""
    fails = sum(r["outcome"] == "failed" for r in records)
    changes: dict[str, list[float]] = defaultdict(list)
    better: dict[str, list[float]] = defaultdict(list)
    messages: dict[str, str] = {}
    other: Counter[str] = Counter()
    timing: list[tuple[str, float | None]] = []
    for r in records:
        counted = counted_names(r)
        for v in baseline_verdicts(r):
            if v["metric"] == TIMING:
                timing.append((v["status"], v.get("change")))
            elif v["metric"] in counted and v["status"] == "fail":
                changes[v["metric"]].append(v["change"])
                messages.setdefault(v["metric"], v["message"])
            elif v["metric"] in counted and v["status"] == "improved":
                better[v["metric"]].append(v["change"])
            elif v["status"] in ("fail", "warn"):
                other[f"{v['metric']} {v['status']}"] += 1
        for v in r.get("verdicts", []):
            if v.get("kind") != "baseline" and v["status"] in ("fail", "warn"):
                other[f"{v['kind']}:{v['metric']} {v['status']}"] += 1
    return {
        "runs": len(records),
        "failed": fails,
        "caught_by": {m: (len(c), statistics.median(c)) for m, c in sorted(changes.items())},
        "better": {m: (len(c), statistics.median(c)) for m, c in sorted(better.items())},
        "messages": messages,
        "timing": timing,
        "other": dict(other),
    }


def aa_tally(runs: list[dict]) -> dict[str, Any]:
    compared = changed = failed_tests = timing_warn_noise = timing_fail = 0
    which: list[str] = []
    for run in runs:
        for r in run["records"]:
            failed_tests += r["outcome"] == "failed"
            counted = counted_names(r)
            for v in baseline_verdicts(r):
                if v["metric"] in counted:
                    compared += 1
                    if v.get("change") not in (0, 0.0) or v["status"] != "pass":
                        changed += 1
                        which.append(f"{regression_of(r['nodeid'])} {v['metric']} {v['message']}")
                elif v["metric"] == TIMING:
                    timing_fail += v["status"] == "fail"
                    timing_warn_noise += v["status"] == "warn" and v.get("reason") == "beyond_noise"
    tests = sum(len(run["records"]) for run in runs)
    return {
        "compared": compared,
        "changed": changed,
        "which": which,
        "tests": tests,
        "failed_tests": failed_tests,
        "timing_fail": timing_fail,
        "timing_warn_noise": timing_warn_noise,
    }


def counting_cost(names: list[str], repeats: int = 7) -> list[dict[str, Any]]:
    """Per workload (both sides): seconds of one round, of the FLOP pass alone and of the counting pass."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch
    from zoo.workloads import build

    from pytest_efficientllm.telemetry.flops import count_flops
    from pytest_efficientllm.telemetry.op_counting import count_run

    torch.set_num_threads(1)  # as the project's ini measures (efficiency_threads = 1)

    def best(fns: dict[str, Any]) -> dict[str, float]:
        # interleaved, so a burst of load from other jobs hits every kind alike; the fastest of each
        # is the one least disturbed by them
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(repeats):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
        return {k: min(v) for k, v in times.items()}

    rows = []
    for name in names:
        for side in ("before", "after"):
            work = build(name, side)
            work.round()  # warm-up, as the meter does before counting
            timed = best(
                {
                    "round_s": work.round,
                    "flops_s": lambda w=work: count_flops(w.round),
                    "count_s": lambda w=work: count_run(w.round),
                }
            )
            # bytes the run allocated that are still alive when it ends: not a gated metric
            rows.append({"name": name, "side": side, **timed, "outlives_bytes": count_run(work.round).tally.live_bytes})
            print(f"cost {name} {side}: {rows[-1]}", flush=True)
    return rows


def pct(x: float) -> str:
    return f"{x * 100:+.1f}%" if abs(x) >= 0.001 or x == 0 else f"{x * 100:+.3f}%"


def dtype_bytes(record: dict, dtype: str) -> float:
    """Bytes accessed in `dtype`: `bytes_accessed` x its `bytes_share:` metric."""
    share = record["metrics"].get(f"bytes_share:{dtype}", {}).get("value") or 0.0
    return float(record["metrics"]["bytes_accessed"]["value"]) * share


def timing_cell(timing: list[tuple[str, float | None]]) -> str:
    statuses = Counter(s for s, _ in timing)
    changes = [c for _, c in timing if c is not None]
    shown = ", ".join(f"{s} {n}" for s, n in sorted(statuses.items()))
    return f"{shown} (median {pct(statistics.median(changes))})" if changes else shown or "no verdict"


def cause(messages: dict[str, str]) -> str:
    """The cause the gate named, if any (the text in parentheses after "regression")."""
    for metric in ("bytes_accessed", "flops", "tensor_peak_bytes", "allocated_bytes"):
        text = messages.get(metric, "")
        if "regression (" in text:
            return text.split("regression (", 1)[1].rstrip(")")
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes of the 'after' side (default 5)")
    parser.add_argument("--aa-runs", type=int, default=20, help="fresh processes of the 'before' side (A/A)")
    parser.add_argument("--only", default="", help="comma-separated regression names (default: all)")
    parser.add_argument("--write", action="store_true", help="write the section into benchmarks/RESULTS.md")
    args = parser.parse_args()
    if args.runs < 1 or args.aa_runs < 0:
        parser.error("--runs must be >= 1 and --aa-runs >= 0")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from zoo.workloads import DECODE_PROMPT, DECODE_TOKENS, NAMES, PREFILL_BATCH, PREFILL_LEN, REGRESSIONS, SCALE

    only = [n for n in args.only.split(",") if n]
    unknown = sorted(set(only) - set(NAMES))
    if unknown:
        parser.error(f"--only: unknown regression(s) {', '.join(unknown)}; expected some of {', '.join(NAMES)}")
    names = only or list(NAMES)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    loads = [os.getloadavg()[0]]
    t_start = time.perf_counter()
    after: dict[str, list[dict]] = defaultdict(list)
    counting: dict[tuple[str, str], dict] = {}  # (regression, side) -> the record's counted_cost details
    baseline_of: dict[str, dict] = {}  # regression -> the record its baseline was written from
    aa_runs: list[dict] = []
    exits: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        baselines = Path(tmp) / "baselines"
        rc, base = pytest_run("before", baselines, Path(tmp) / "baseline.json", only, update=True)
        if rc != 0:
            raise RuntimeError(f"recording the 'before' baselines exited {rc}")
        print(f"baselines: {len(base['records'])} records", flush=True)
        for r in base["records"]:
            counting[(regression_of(r["nodeid"]), "before")] = r["settings"].get("counted_cost", {})
            baseline_of[regression_of(r["nodeid"])] = r
        for i in range(args.runs):
            rc, run = pytest_run("after", baselines, Path(tmp) / f"after-{i}.json", only)
            exits.append(rc)
            for r in run["records"]:
                after[regression_of(r["nodeid"])].append(r)
                counting.setdefault((regression_of(r["nodeid"]), "after"), r["settings"].get("counted_cost", {}))
            loads.append(os.getloadavg()[0])
            print(f"after {i + 1}/{args.runs}: exit {rc}", flush=True)
        for i in range(args.aa_runs):
            rc, run = pytest_run("before", baselines, Path(tmp) / f"aa-{i}.json", only)
            aa_runs.append(run)
            loads.append(os.getloadavg()[0])
            print(f"A/A {i + 1}/{args.aa_runs}: exit {rc}", flush=True)
    gate_wall = time.perf_counter() - t_start
    costs = counting_cost(names)
    loads.append(os.getloadavg()[0])

    mistakes = {r.name: r.mistake for r in REGRESSIONS}
    rows = {name: after_row(after[name]) for name in names}
    caught = [n for n in names if rows[n]["caught_by"]]
    dec = SCALE.decoder
    first = after[names[0]][0]
    rounds = first["settings"].get("rounds", "?")
    syncs = "synchronizations" in first["metrics"]
    lines = [
        SECTION,
        "",
        f"Command: `python benchmarks/regression_zoo.py --runs {args.runs} --aa-runs {args.aa_runs}"
        + (f" --only {args.only}" if only else "")
        + f" --write` ({started}; {os.cpu_count()} CPUs shared with other jobs, 1-minute load average "
        f"{min(loads):.1f} to {max(loads):.1f}, {statistics.median(loads):.1f} median over the run; "
        f"{gate_wall / 60:.1f} min of pytest processes). Each pair is in `benchmarks/zoo/workloads.py`: "
        f"the suites' {SCALE.name} Llama (GQA, hidden {dec.hidden}, {dec.layers} layers, {dec.heads} heads, "
        f"vocabulary {dec.vocab}, random weights from seed 0) in bf16, prefill of {PREFILL_BATCH} x {PREFILL_LEN} "
        f"tokens or greedy decoding of {DECODE_TOKENS} tokens after a {DECODE_PROMPT}-token prompt. One pytest process "
        "records the baselines of every 'before' (`--update-baselines`, temporary `--baselines-dir`); "
        f"{args.runs} fresh processes run every 'after' against them with the default gate and the project's "
        f"ini (1 torch thread, fixed process layout, {rounds} rounds). Caught: the counted metrics that failed, "
        "with their median change; cause: what the failure message names (with, for a dtype shift, how the bytes "
        "of the dtype that lost share changed in absolute terms: an upcast moves bytes from one dtype to the "
        "other, a change that only adds work in the other dtype grows them). Timing: the "
        f"`{TIMING}` verdict of each run (the CPU profile's default check warns, never fails).",
        "",
        "| regression (the 'after') | gate failed | caught by (counted, exact) | cause named | "
        f"`{TIMING}` (default rule) |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        row = rows[name]
        by = row["caught_by"]
        caught_cell = (
            "; ".join(
                f"`{m}` {pct(c)}" + (f" ({k}/{row['runs']})" if k < row["runs"] else "") for m, (k, c) in by.items()
            )
            if by
            else "**nothing counted moved**"
        )
        if row["better"]:
            caught_cell += " (better: " + ", ".join(f"`{m}` {pct(c)}" for m, (_, c) in row["better"].items()) + ")"
        extra = "; ".join(f"{k} x{n}" for k, n in sorted(row["other"].items()))
        if extra:
            caught_cell += f"; also {extra}"
        named = cause(row["messages"])
        if " -> " in named and name in baseline_of:
            # the shift is of shares; whether the lost dtype's own bytes fell says if it is the cause
            lost = named.split(" -> ", 1)[0]
            was, now = dtype_bytes(baseline_of[name], lost), dtype_bytes(after[name][0], lost)
            if was:
                named += f"; {lost} bytes themselves {pct(now / was - 1)}"
        lines.append(
            f"| `{name}`: {mistakes[name]} | {row['failed']}/{row['runs']} | {caught_cell} | "
            f"{named or '-'} | {timing_cell(row['timing'])} |"
        )
    timing_caught = [n for n in names if any(s == "fail" for s, _ in rows[n]["timing"])]
    slower = sum(s == "warn" and (c or 0) > 0 for n in names for s, c in rows[n]["timing"])
    timed = sum(len(rows[n]["timing"]) for n in names)
    aa = aa_tally(aa_runs)
    lines += [
        "",
        f"Caught by a counted metric: {len(caught)} of {len(names)} pairs"
        + (
            f"; not caught: {', '.join(f'`{n}`' for n in names if n not in caught)}."
            if len(caught) < len(names)
            else "."
        )
        + f" Timing alone at the default rule failed {len(timing_caught)} of {len(names)} pairs"
        + (f" ({', '.join(timing_caught)})" if timing_caught else "")
        + f"; it warned 'slower beyond tolerance and noise' in {slower} of {timed} 'after' tests"
        + (f", and in {aa['timing_warn_noise']} of {aa['tests']} A/A tests (unchanged code)" if args.aa_runs else "")
        + ".",
        "",
        *(
            []
            if syncs
            else [
                "On this CPU run the records have no `synchronizations` or copy counts (counted on CUDA only); a "
                "`.item()` is still an operator (`aten._local_scalar_dense`, data-dependent), so `operators` moves.",
                "",
            ]
        ),
        "One failure message per caught pair (first run):",
        "",
    ]
    for name in caught:
        metric = max(rows[name]["caught_by"], key=lambda m: abs(rows[name]["caught_by"][m][1]))
        lines.append(f"- `{name}`: `{metric}: {rows[name]['messages'][metric]}`")
    if args.aa_runs:
        lines += [
            "",
            f"A/A (the 'before' against its own baseline, {args.aa_runs} fresh processes, {aa['tests']} tests): "
            f"**{aa['changed']} of {aa['compared']} counted comparisons changed**; {aa['failed_tests']} tests failed; "
            f"`{TIMING}`: {aa['timing_fail']} failed, {aa['timing_warn_noise']} warned beyond tolerance and noise.",
        ]
        if aa["which"]:
            lines.append("Changed: " + "; ".join(aa["which"][:10]) + (" ..." if len(aa["which"]) > 10 else ""))
    lines += [
        "",
        "Cost of the counting pass per test (this process, 1 torch thread, the three interleaved, fastest of 7 "
        "each): one round of the "
        "workload; one run under FlopCounterMode alone (the FLOP pass before issue 17, "
        "`telemetry.flops.count_flops`); one run under the counting pass (`telemetry.op_counting.count_run`: "
        "FlopCounterMode and the operator counter together). The meter makes one counting run per test, two "
        "when the first saw an operator whose result depends on the data (runs and those operators from the "
        "run files). Outlives: bytes the counting run allocated that are still alive when it ends "
        "(`OpTally.live_bytes`; not a metric, so not gated).",
        "",
        "| workload | round | FLOP pass | counting pass | counting / FLOP pass | counting runs (data-dependent ops) "
        "| outlives |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in costs:
        details = counting.get((c["name"], c["side"]), {})
        dependent = ", ".join(details.get("data_dependent", []))
        lines.append(
            f"| {c['name']} ({c['side']}) | {c['round_s'] * 1e3:.1f} ms | {c['flops_s'] * 1e3:.1f} ms | "
            f"{c['count_s'] * 1e3:.1f} ms | {c['count_s'] / c['flops_s']:.2f}x | {details.get('runs', '?')}"
            + (f" ({dependent})" if dependent else "")
            + f" | {c['outlives_bytes']} B |"
        )
    ratios = [c["count_s"] / c["flops_s"] for c in costs]
    lines += [
        "",
        f"Counting pass / FLOP pass: median {statistics.median(ratios):.2f}x, largest {max(ratios):.2f}x "
        f"(target <= 2x); counting pass / one round: median "
        f"{statistics.median(c['count_s'] / c['round_s'] for c in costs):.1f}x.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if exits and any(rc not in (0, 1) for rc in exits):
        print(f"warning: 'after' runs exited {exits}", file=sys.stderr)
    if args.write:
        replace_section(SECTION, text)


if __name__ == "__main__":
    main()

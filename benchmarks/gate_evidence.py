"""Evidence for the regression gate (issue 3): A/A false alarms, A/B detection, 1% memory.

End to end, through pytest and the plugin, in separate processes: each experiment round
records baselines in one pytest process (`--update-baselines`), then runs candidate
processes against them (`--efficiency-json`), one per variant, in a shuffled order:

* A/A: the same workloads again;
* A/B: the workloads with 5%, 10% and 20% more work per round (more matmuls, more
  forwards: extra work proportional to the workload, not a sleep);
* memory +1%: a tensor 1% larger. Its `peak_memory` is counted (the tensor's exact
  bytes) and gated exactly; its `peak_memory_delta` is the measured VmHWM rise, gated
  with the test's `+0.5%` tolerance (no per-round spread: the tolerance alone decides).

Two timed workloads, because the machine's noise treats them differently: 60 fp32
256x256 matmuls per round (`test_latency`), and 20 forwards of a 2-layer Llama with
random weights (`test_forward`: small ops, Python dispatch). Every test and metric
comparison is one trial; the verdicts are read from the run file. The timed tests of the
memory variant are unchanged code, so they count as A/A trials too.
Default settings of the gate (5% tolerance, 95% interval) and of the protocol (5 rounds,
1 warm-up); one torch thread per process.

    python benchmarks/gate_evidence.py --rounds 7 --write   # writes its RESULTS.md section
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from results_md import RESULTS, replace_section

EXTRA_ARGS: list[str] = []
HERE = Path(__file__).resolve().parent
SECTION = "## Baselines and gating (issue 3)"
SECTION_FIXED = "## Baselines and gating, processes with one fixed layout (issue 3)"

WORKLOAD = """
import os
import sys

import pytest
import torch

sys.path.insert(0, os.environ["GATE_BENCHMARKS_DIR"])
from side_by_side.workloads import _tiny_llama  # the tiny Llama the other benchmarks time

SLOWDOWN = float(os.environ.get("GATE_SLOWDOWN", "0"))
MEMGROW = float(os.environ.get("GATE_MEMGROW", "0"))
MATMULS = 60  # fp32 256x256 each, about 20 ms per round on one core of this machine
A = torch.randn(256, 256, generator=torch.Generator().manual_seed(0))
OUT = torch.empty(256, 256)


@pytest.mark.efficiency(flops=False, latency="+5%", cpu_time_per_round="+5%")
@pytest.mark.parametrize("copy", range(int(os.environ.get("GATE_TESTS", "8"))))
def test_latency(efficiency, copy):
    count = round(MATMULS * (1 + SLOWDOWN))

    def work():
        for _ in range(count):
            torch.mm(A, A, out=OUT)

    efficiency.measure(work, tokens=256)


@pytest.fixture(scope="module")
def tiny_llama():
    return _tiny_llama()


FORWARDS = 20  # forwards of a 2-layer Llama (random weights) on 32 tokens, about 20 ms per round


@pytest.mark.efficiency(flops=False, latency="+5%", cpu_time_per_round="+5%")
@pytest.mark.parametrize("copy", range(int(os.environ.get("GATE_FWD_TESTS", "4"))))
def test_forward(efficiency, tiny_llama, copy):
    count = round(FORWARDS * (1 + SLOWDOWN))
    ids = torch.randint(0, 256, (1, 32), generator=torch.Generator().manual_seed(0))

    def work():
        with torch.no_grad():
            for _ in range(count):
                tiny_llama(ids)

    efficiency.measure(work, tokens=32 * count)


@pytest.mark.efficiency(peak_memory_delta="+0.5%")
@pytest.mark.parametrize("copy", range(int(os.environ.get("GATE_MEM_TESTS", "4"))))
def test_memory(efficiency, copy):
    elements = int(16 * 2**20 * (1 + MEMGROW))  # 64 MiB of fp32, +1% when asked
    with efficiency.window():
        t = torch.ones(elements)
    efficiency.count("peak_memory", t.numel() * t.element_size(), method="bytes of the tensor the test allocates")
    del t
"""

VARIANTS = {  # name -> environment
    "A/A": {"GATE_SLOWDOWN": "0", "GATE_MEMGROW": "0"},
    "+5%": {"GATE_SLOWDOWN": "0.05", "GATE_MEMGROW": "0"},
    "+10%": {"GATE_SLOWDOWN": "0.10", "GATE_MEMGROW": "0"},
    "+20%": {"GATE_SLOWDOWN": "0.20", "GATE_MEMGROW": "0"},
    "mem +1%": {"GATE_SLOWDOWN": "0", "GATE_MEMGROW": "0.01"},
}


def pytest_run(project: Path, env: dict[str, str], *args: str) -> None:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--efficiency-threads=1", *EXTRA_ARGS, *args]
    full_env = {**os.environ, **env, "HF_HUB_OFFLINE": "1", "GATE_BENCHMARKS_DIR": str(HERE)}
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_ADDOPTS"):
        full_env.pop(name, None)
    proc = subprocess.run(cmd, cwd=project, env=full_env, capture_output=True, text=True, timeout=900)
    if proc.returncode not in (0, 1):  # 1: a gated test failed, which is what we count
        raise RuntimeError(
            f"pytest {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )


def verdicts_of(run_file: Path) -> dict[str, dict[str, dict]]:
    run = json.loads(run_file.read_text())
    out: dict[str, dict[str, dict]] = {}
    for record in run["records"]:
        out[record["nodeid"]] = {v["metric"]: v for v in record["verdicts"]}
    return out


def confirmations_of(run_file: Path) -> dict[str, int]:
    """Fresh processes each test's verdict took (`--efficiency-confirm`)."""
    return {r["nodeid"]: len(r.get("confirmations", [])) for r in json.loads(run_file.read_text())["records"]}


def _calibration(fingerprint: dict) -> dict:
    return fingerprint.get("calibration") or {}


def calibrations_of(run_file: Path) -> dict[str, dict]:
    """Each test's calibration (the run's start-of-session workload) in a run file."""
    return {r["nodeid"]: _calibration(r["fingerprint"]) for r in json.loads(run_file.read_text())["records"]}


def baseline_calibrations(base_dir: Path) -> dict[str, dict]:
    return {
        nodeid: _calibration(entry["fingerprint"])
        for path in base_dir.rglob("*.json")
        for nodeid, entry in json.loads(path.read_text())["tests"].items()
    }


def _ratio(now: dict, base: dict, key: str) -> float | None:
    return now[key] / base[key] if now.get(key) and base.get(key) else None


def workload_of(nodeid: str) -> str:
    return "matmul" if "test_latency" in nodeid else "forward" if "test_forward" in nodeid else "memory"


# How the candidate processes judge: alone, or confirming a suspect in fresh processes.
METHODS = {
    "one process": ["--efficiency-confirm=0"],
    "confirmed": ["--efficiency-confirm=2"],
    # Three whole candidate processes in a row, each judged alone, for `gate_rejudge.py` to
    # replay votes over processes a whole test file apart (not started right after the suspect).
    "three processes": ["--efficiency-confirm=0"],
}
REPEATS = {"three processes": 3}


def experiment(
    rounds: int, seed: int, methods: list[str], baseline_runs: int = 1, keep: Path | None = None
) -> list[dict]:
    """All trials: one per (round, variant, test, metric). With `keep`, each round's baseline
    files and run files are copied there (`round-R/`), to re-judge the same processes offline."""
    rng = random.Random(seed)
    trials = []
    with tempfile.TemporaryDirectory(prefix="gate-evidence-") as tmp:
        project = Path(tmp)
        (project / "test_workload.py").write_text(WORKLOAD)
        (project / "pytest.ini").write_text("[pytest]\n")
        for r in range(rounds):
            base_dir = project / f"baselines-{r}"
            t0 = time.time()
            for _ in range(baseline_runs):  # each run keeps the earlier runs' medians (`run_noise`)
                pytest_run(project, VARIANTS["A/A"], "--update-baselines", f"--baselines-dir={base_dir}")
            cal_base = baseline_calibrations(base_dir)
            order = [(name, method) for name in VARIANTS for method in methods]
            rng.shuffle(order)
            for name, method in order:
                slug = (
                    f"{name}-{method}".replace("/", "")
                    .replace(" ", "")
                    .replace("%", "")
                    .replace("(", "")
                    .replace(")", "")
                )
                repeats = REPEATS.get(method, 1)
                for i in range(repeats):
                    out = project / (f"run-{r}-{slug}-{i}.json" if repeats > 1 else f"run-{r}-{slug}.json")
                    pytest_run(
                        project,
                        VARIANTS[name],
                        f"--baselines-dir={base_dir}",
                        f"--efficiency-json={out}",
                        *METHODS[method],
                    )
                cal_now = calibrations_of(out)
                confirmations = confirmations_of(out)
                for nodeid, by_metric in verdicts_of(out).items():
                    workload = workload_of(nodeid)
                    now, base = cal_now.get(nodeid, {}), cal_base.get(nodeid, {})
                    metrics = (
                        ("peak_memory", "peak_memory_delta") if workload == "memory" else ("AL", "cpu_time_per_round")
                    )
                    for metric in metrics:
                        v = by_metric.get(metric)
                        if v is not None:
                            trials.append(
                                {
                                    "round": r,
                                    "variant": name,
                                    "method": method,
                                    "workload": workload,
                                    "test": nodeid,
                                    "confirmations": confirmations.get(nodeid, 0),
                                    "metric": metric,
                                    "status": v["status"],
                                    "change": v["change"],
                                    "slowdown": float(VARIANTS[name]["GATE_SLOWDOWN"]),
                                    "calibration_matmul_cpu_ratio": _ratio(now, base, "matmul_cpu_s"),
                                    "calibration_cpu_index_ratio": _ratio(now, base, "cpu_index_s"),
                                }
                            )
            if keep is not None:
                shutil.copytree(base_dir, keep / f"round-{r}" / "baselines")
                for run_file in project.glob(f"run-{r}-*.json"):
                    shutil.copy2(run_file, keep / f"round-{r}" / run_file.name)
            print(f"round {r + 1}/{rounds}: {time.time() - t0:.0f} s, load {os.getloadavg()[0]:.1f}", flush=True)
    return trials


def _kind(trial: dict) -> str:
    """A/A for every unchanged workload: the A/A variant's and the memory variant's latency tests alike."""
    if trial.get("workload", "matmul") == "memory":
        return trial["variant"]
    slowdown = trial.get("slowdown", 0.0)
    return "A/A" if slowdown == 0 else f"+{slowdown * 100:.0f}%"


def chosen(trials: list[dict], workload: str, kind: str, metric: str, method: str) -> list[dict]:
    return [
        t
        for t in trials
        if t.get("workload", "matmul") == workload
        and _kind(t) == kind
        and t["metric"] == metric
        and t.get("method", "one process") == method
    ]


def table(trials: list[dict]) -> list[str]:
    rows = [
        "| method | workload | trial | metric (rule) | comparisons | gate failed | rate | target | median change "
        "seen | middle 90% of changes | fresh processes per test |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    cpu = "cpu_time_per_round (`+5%`)"
    wall = "AL wall clock (`latency='+5%'`)"
    spec = []
    for workload in ("matmul", "forward"):
        for metric, label in (("cpu_time_per_round", cpu), ("AL", wall)):
            spec += [
                (workload, "A/A", metric, label, "false alarms <= 1%"),
                (workload, "+5%", metric, label, "(at the tolerance)"),
                (workload, "+10%", metric, label, ">= 95%"),
                (workload, "+20%", metric, label, ">= 95%"),
            ]
    spec += [
        ("memory", "A/A", "peak_memory", "peak_memory (counted, exact)", "0 false alarms"),
        ("memory", "mem +1%", "peak_memory", "peak_memory (counted, exact)", "100%"),
        ("memory", "A/A", "peak_memory_delta", "peak_memory_delta (measured VmHWM, +0.5%)", "(secondary)"),
        ("memory", "mem +1%", "peak_memory_delta", "peak_memory_delta (measured VmHWM, +0.5%)", "(secondary)"),
    ]
    methods = [m for m in METHODS if any(t.get("method", "one process") == m for t in trials)]
    for method in methods:
        for workload, kind, metric, label, target in spec:
            picked = chosen(trials, workload, kind, metric, method)
            if not picked:
                continue
            n = len(picked)
            hits = sum(t["status"] == "fail" for t in picked)
            changes = sorted(t["change"] for t in picked if t["change"] is not None)
            lo, hi = changes[int(0.05 * (len(changes) - 1))], changes[int(0.95 * (len(changes) - 1))]
            fresh = statistics.mean(t.get("confirmations", 0) for t in picked)
            rows.append(
                f"| {method} | {workload} | {kind} | {label} | {n} | {hits} | {100 * hits / n:.1f}% | {target} | "
                f"{100 * statistics.median(changes):+.1f}% | {100 * lo:+.1f}% .. {100 * hi:+.1f}% | {fresh:.2f} |"
            )
    return rows


def machine() -> str:
    import torch

    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return (
        f"{cpu}, {len(os.sched_getaffinity(0))} usable cores, Linux {platform.release()}, Python "
        f"{platform.python_version()}, torch {torch.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="experiment rounds (one baseline process each)")
    parser.add_argument("--tests", type=int, default=8, help="matmul tests per process")
    parser.add_argument("--forward-tests", type=int, default=4, help="transformer forward tests per process")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--fixed-layout",
        action="store_true",
        help="run every pytest process with --efficiency-fixed-layout (ASLR off, PYTHONHASHSEED=0, "
        "the stack padded to one size), so processes differ only in what they measure",
    )
    parser.add_argument(
        "--baseline-runs",
        type=int,
        default=1,
        help="baseline processes per round (--update-baselines again keeps each run's median; "
        "from 2 the run-to-run rule applies)",
    )
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated candidate methods, each its own processes in every round: {', '.join(METHODS)}",
    )
    parser.add_argument("--write", action="store_true", help=f"replace the '{SECTION}' section of {RESULTS}")
    parser.add_argument("--pytest-arg", action="append", default=[], help="extra pytest argument (repeatable)")
    parser.add_argument("--from-trials", type=Path, default=None, help="render from a saved --trials-json, run nothing")
    parser.add_argument("--trials-json", type=Path, default=None, help="also save every trial here")
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="copy each round's baseline files and run files (raw rounds, confirmations) here",
    )
    args = parser.parse_args()
    os.environ["GATE_TESTS"] = str(args.tests)
    os.environ["GATE_FWD_TESTS"] = str(args.forward_tests)
    if args.fixed_layout:
        EXTRA_ARGS.append("--efficiency-fixed-layout")
    layout_text = (
        " Every pytest process ran with `--efficiency-fixed-layout`: ASLR off, `PYTHONHASHSEED=0`, "
        "the stack padded to one size."
        if args.fixed_layout
        else " Processes ran with address-space layout and str hashes randomized per process."
    )
    EXTRA_ARGS.extend(args.pytest_arg)
    load0, t0 = os.getloadavg()[0], time.time()
    if args.from_trials:
        trials = json.loads(args.from_trials.read_text())
        load0 = load1 = float("nan")
    else:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            parser.error(f"--methods: unknown {unknown}; choose from {list(METHODS)}")
        trials = experiment(args.rounds, args.seed, methods, args.baseline_runs, args.keep)
        load1 = os.getloadavg()[0]
    if args.trials_json:
        args.trials_json.write_text(json.dumps(trials, indent=1))
    rows = table(trials)
    methods_arg = "" if args.methods == ",".join(METHODS) else f" --methods '{args.methods}'"
    if args.baseline_runs != 1:
        methods_arg += f" --baseline-runs {args.baseline_runs}"
    baseline_text = (
        "Baselines here are one run each, so the run-to-run rule does not apply."
        if args.baseline_runs < 2
        else f"Baselines here are {args.baseline_runs} runs each (separate "
        "processes), so the run-to-run rule applies: the change is read against the median of the "
        "faster half of the runs' medians, and a regression must also lie beyond the prediction bound of "
        "those runs, their jitter moderated across the file's tests (`run_noise`): 99.9% where one "
        "process decides, 90% in each of the 3 that must all find it where fresh processes confirm."
    )
    command = (
        f"python benchmarks/gate_evidence.py --rounds {args.rounds} --tests {args.tests} "
        f"--forward-tests {args.forward_tests}{' --fixed-layout' if args.fixed_layout else ''}{methods_arg} --write"
    )
    text = (
        textwrap.dedent(f"""\
        {SECTION_FIXED if args.fixed_layout else SECTION}

        Command: `{command}`
        ({time.strftime("%Y-%m-%d %H:%M")} UTC, {(time.time() - t0) / 60:.0f} min). Machine: {machine()}; load average
        {load0:.1f} at start, {load1:.1f} at end.

        End to end through pytest: per experiment round, one process records the baselines
        (`--update-baselines`), then one process per variant and method (shuffled order) runs
        against them with `--efficiency-json`, and the verdicts are read from that run file.
        Methods: "one process" judges each test in its own process alone
        (`--efficiency-confirm=0`); "confirmed" (the default, `--efficiency-confirm=2`) re-measures
        a failing test in up to 2 fresh processes, each started 20 s or more after the test's
        previous measurement, and fails it only when every process finds the regression
        (`confirm.py`); the last column counts those processes. Workloads per round:
        60 fp32 256x256 matmuls (slowdowns: 63, 66, 72) and 20 forwards of a 2-layer Llama on 32
        tokens (21, 22, 24); default protocol (5 rounds, 1 warm-up), 1 torch thread per process.
        The tests give `cpu_time_per_round` (each round's process CPU time) and wall-clock `AL` a
        `+5%` tolerance (on the CPU profile the default check of `cpu_time_per_round` only warns),
        noise-aware: fails only beyond 5% *and* when the 95% Hodges-Lehmann/Moses interval on the
        ratio excludes 1.{layout_text}
        {baseline_text}
        "A/A" counts every comparison of an unchanged timed test: those of the A/A variant and of
        the memory variant. Memory: a 64 MiB tensor, +1% in the "mem +1%" variant. A trial = one
        test's comparison of one metric.

        """)
        + "\n".join(rows)
        + "\n"
    )
    print(text)
    if args.write:
        replace_section(SECTION_FIXED if args.fixed_layout else SECTION, text)


if __name__ == "__main__":
    main()

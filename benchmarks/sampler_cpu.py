"""What the plugin's sampler threads add to a round's process CPU time, and how much of a
suite window's CPU they are.

Not a test: a script whose figures go to benchmarks/RESULTS.md.

1. Rounds of a known kind (sleeps of 20 and 40 ms, which cost the process almost no CPU;
   an fp32 matmul, which keeps one core busy) run with the CPU backend's RSS sampler
   going, as in `efficiency.measure`. Each round reads the process CPU clock and the
   samplers' own CPU clocks (`telemetry.sampler.samplers_cpu_ns`) around it, so one run
   gives both figures: process CPU as it is (what `cpu_time_per_round` was before the
   samplers were taken out) and less the samplers (what it is now).
2. With `--run-file`, the samplers' share of each record's window CPU
   (`sampler_cpu_time` / (`cpu_time` + `sampler_cpu_time`)) over a suite run's records.

Run:  python benchmarks/sampler_cpu.py [--rounds 50] [--run-file RUN.json] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from results_md import replace_section  # noqa: E402

SECTION = "## The sampler threads' CPU, kept out of the workload's (cpu_time_per_round)"


def _rounds(fn: Callable[[], object], n: int) -> tuple[list[int], list[int]]:
    """(process CPU ns, samplers' CPU ns) of each of n rounds, the RSS sampler running."""
    # Imported here: gpu_check_report.py imports this module for its shares, with the stdlib only.
    from pytest_efficientllm.telemetry.procfs import ProcessMemoryProbe
    from pytest_efficientllm.telemetry.sampler import samplers_cpu_ns

    probe = ProcessMemoryProbe()
    probe.open()
    process, samplers = [], []
    try:
        for _ in range(n):
            s0 = samplers_cpu_ns()
            c0 = time.process_time_ns()
            fn()
            c1 = time.process_time_ns()
            process.append(c1 - c0)
            samplers.append(samplers_cpu_ns() - s0)
    finally:
        probe.close()
    return process, samplers


def _us(ns: float) -> str:
    return f"{ns / 1e3:.0f} µs"


def rounds_table(n: int) -> tuple[list[str], str]:
    import torch  # here, not at the top: see _rounds

    torch.set_num_threads(1)
    a = torch.randn(384, 384)
    size = 1
    while True:  # a matmul workload of about 20 ms
        t0 = time.perf_counter()
        for _ in range(size):
            a @ a
        if time.perf_counter() - t0 > 0.02:
            break
        size *= 2

    def matmul() -> None:
        for _ in range(size):
            a @ a

    kinds = [
        ("sleep 20 ms", lambda: time.sleep(0.02)),
        ("sleep 40 ms", lambda: time.sleep(0.04)),
        (f"{size} x fp32 384x384 matmul", matmul),
    ]
    lines = [
        "| round | rounds | process CPU per round, median (samplers in: before) | samplers' CPU per round, median "
        "| less the samplers, median (now) | samplers' share of the process CPU |",
        "|---|---|---|---|---|---|",
    ]
    medians = {}
    for name, fn in kinds:
        fn()  # warm-up
        process, samplers = _rounds(fn, n)
        work = [p - s for p, s in zip(process, samplers)]
        share = sum(samplers) / sum(process)
        medians[name] = (statistics.median(process), statistics.median(work))
        lines.append(
            f"| {name} | {n} | {_us(medians[name][0])} | {_us(statistics.median(samplers))} "
            f"| {_us(medians[name][1])} | {share:.1%} |"
        )
    (before20, now20), (before40, now40) = medians["sleep 20 ms"], medians["sleep 40 ms"]
    reading = (
        "The samplers' CPU follows the round's wall time, not its work: a sleep twice as long read "
        f"{before40 / before20 - 1:+.0%} in process CPU with the samplers in, and {now40 / now20 - 1:+.0%} "
        "without them. So a round a neighbour or a host episode stretched used to read as costing more CPU, "
        "which is what `cpu_time_per_round` exists not to do."
    )
    return lines, reading


def sampler_shares(records: list[dict]) -> list[float]:
    """`sampler_cpu_time` / (`cpu_time` + `sampler_cpu_time`) of each record that has both."""
    shares = []
    for rec in records:
        m = rec["metrics"]
        sampler = (m.get("sampler_cpu_time") or {}).get("value")
        cpu = (m.get("cpu_time") or {}).get("value")
        if sampler is not None and cpu:
            shares.append(sampler / (cpu + sampler))
    return shares


def shares_text(shares: list[float]) -> str:
    """The spread of the samplers' shares, as RESULTS.md says it."""
    q = statistics.quantiles(shares, n=10) if len(shares) > 1 else shares * 9
    return (
        f"median {statistics.median(shares):.1%}, {min(shares):.1%} .. {max(shares):.1%} "
        f"(10th .. 90th percentile {q[0]:.1%} .. {q[-1]:.1%})"
    )


def run_file_lines(path: Path) -> list[str]:
    run = json.loads(path.read_text())
    started = ", ".join(r.get("started", "?") for r in run.get("runs", []))
    shares = sampler_shares(run["records"])
    if not shares:
        return [f"`{path.name}`: no record carries `sampler_cpu_time`."]
    return [
        f"Suite run started {started} ({len(shares)} records): the samplers' share of a window's process CPU is "
        f"{shares_text(shares)}."
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--run-file", type=Path, help="a suite run's --efficiency-json file")
    parser.add_argument("--write", action="store_true", help=f"write the section {SECTION!r} of RESULTS.md")
    args = parser.parse_args()
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    lines = [
        SECTION,
        "",
        f"Command: `python benchmarks/sampler_cpu.py --rounds {args.rounds}"
        + (f" --run-file {args.run_file.name}" if args.run_file else "")
        + f" --write`, started {started}, load average {load:.2f}; 1 torch thread, the RSS sampler at its "
        "default 20 ms. Process CPU counts every thread; the samplers' CPU is read from their own thread "
        "CPU clocks around the same rounds.",
        "",
    ]
    table, reading = rounds_table(args.rounds)
    lines += [*table, "", reading]
    if args.run_file:
        lines += ["", *run_file_lines(args.run_file)]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        replace_section(SECTION, text)


if __name__ == "__main__":
    main()

"""How CPU time per round varies on this machine: within one process, and between processes.

    python benchmarks/cpu_noise.py [--steady-s 60] [--processes 20]

1. steady: one process times a 60-matmul round (fp32 256x256, 1 thread) back to back for
   `--steady-s` seconds; prints the median, the share of rounds within 8% of the 10th
   percentile and the slow episodes (consecutive rounds above that) with their durations.
2. processes: `--processes` fresh processes per workload (`matmul`: the same round; `forward`:
   20 forwards of the tiny Llama of benchmarks/side_by_side), one after another. Each times
   5 rounds with a small matmul reference (4 of them) before and after every round, and
   reports its median round. Printed: the spread (standard deviation of the log, in %) of
   the processes' medians, raw and divided by their median reference.

Figures quoted in benchmarks/RESULTS.md ("Gate noise on this machine") come from this.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _workload(kind: str):
    import torch

    torch.set_num_threads(1)
    if kind == "matmul":
        a, out = torch.randn(256, 256), torch.empty(256, 256)

        def work() -> None:
            for _ in range(60):
                torch.mm(a, a, out=out)

        return work
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from side_by_side.workloads import _tiny_llama

    model = _tiny_llama()
    ids = torch.randint(0, 256, (1, 32), generator=torch.Generator().manual_seed(0))

    def forward() -> None:
        with torch.no_grad():
            for _ in range(20):
                model(ids)

    return forward


def _cpu_s(fn) -> float:
    c0 = time.process_time_ns()
    fn()
    return (time.process_time_ns() - c0) * 1e-9


def child(kind: str) -> None:
    import torch

    work = _workload(kind)
    r, r_out = torch.randn(256, 256), torch.empty(256, 256)

    def reference() -> None:
        for _ in range(4):
            torch.mm(r, r, out=r_out)

    reference()
    work()
    rounds, refs = [], [_cpu_s(reference)]
    for _ in range(5):
        rounds.append(_cpu_s(work))
        refs.append(_cpu_s(reference))
    print(json.dumps({"median": statistics.median(rounds), "reference": statistics.median(refs)}))


def steady(seconds: float) -> None:
    work = _workload("matmul")
    work()
    rounds: list[tuple[float, float]] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rounds.append((time.monotonic(), _cpu_s(work)))
    cpu = sorted(c for _, c in rounds)
    p10 = cpu[len(cpu) // 10]
    episodes: list[list[float]] = []
    current: list[float] | None = None
    for at, c in rounds:
        if c > 1.08 * p10:
            current = current or [at, at]
            current[1] = at
        elif current is not None:
            episodes.append(current)
            current = None
    if current is not None:
        episodes.append(current)
    within = sum(c <= 1.08 * p10 for c in cpu) / len(cpu)
    durations = sorted(e[1] - e[0] + statistics.median(cpu) for e in episodes)
    print(
        f"steady: {len(cpu)} rounds in {seconds:.0f} s; median {statistics.median(cpu) * 1e3:.2f} ms; "
        f"{within:.1%} within 8% of the 10th percentile ({p10 * 1e3:.2f} ms); {len(episodes)} slow episodes, "
        f"{durations[0] * 1e3:.0f}–{durations[-1] * 1e3:.0f} ms"
        if durations
        else "no slow episode"
    )


def processes(n: int) -> None:
    for kind in ("matmul", "forward"):
        rows = []
        for _ in range(n):
            out = subprocess.run(
                [sys.executable, __file__, "--child", kind], capture_output=True, text=True, check=True
            )
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        raw = [r["median"] for r in rows]
        rel = [r["median"] / r["reference"] for r in rows]

        def spread(xs: list[float]) -> float:
            return statistics.stdev(math.log(x) for x in xs) * 100

        print(
            f"{kind}: {n} processes; median round {min(raw) * 1e3:.2f}–{max(raw) * 1e3:.2f} ms; spread of the "
            f"medians {spread(raw):.1f}% raw, {spread(rel):.1f}% relative to the reference"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steady-s", type=float, default=60)
    parser.add_argument("--processes", type=int, default=20)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.1f}")
    steady(args.steady_s)
    processes(args.processes)
    print(f"{time.strftime('%H:%M')}, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

"""How CPU time per round varies on this machine: within one process, and between processes.

    python benchmarks/cpu_noise.py [--steady-s 60] [--processes 20] [--blocks 200] [--only PART]

1. steady: one process times a 60-matmul round (fp32 256x256, 1 thread) back to back for
   `--steady-s` seconds; prints the median, the share of rounds within 8% of the 10th
   percentile and the slow episodes (consecutive rounds above that) with their durations.
2. processes: `--processes` fresh processes per workload (`matmul`: the same round; `forward`:
   20 forwards of the tiny Llama of benchmarks/side_by_side), one after another. Each times
   5 rounds with a small matmul reference (4 of them) before and after every round, and
   reports its median round. Printed: the spread (standard deviation of the log, in %) of
   the processes' medians, raw and divided by their median reference.
3. interleaved: two live processes per workload take turns timing a block (the median of 5
   rounds), A B | B A | ..., `--blocks` blocks each. Printed, per lag of k blocks: the spread of
   log(B[i] / A[i + k]). Lag 0 is two processes timed back to back, as a test-by-test
   interleaving of `ab`'s sides would time them; the lag at ~8 s is how far apart `ab`'s pairs
   time a test now (each side's process runs all its tests in turn).
4. cpus: one process pins itself to each usable CPU in turn (`sched_setaffinity`), timing a
   forward block on each, `--blocks` times; prints each CPU's median block and the spread of
   the CPUs' ratio: whether one vCPU of the VM is slower than another.

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


def serve(kind: str) -> None:
    """Time one block per line read from stdin; answer with its median round (CPU s) and the time."""
    work = _workload(kind)
    for _ in range(3):
        work()
    print("ready", flush=True)
    for _ in sys.stdin:
        block = statistics.median(_cpu_s(work) for _ in range(5))
        print(f"{block} {time.monotonic()}", flush=True)


def interleaved(blocks: int) -> None:
    for kind in ("matmul", "forward"):
        sides = [
            subprocess.Popen(
                [sys.executable, __file__, "--serve", kind], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
            for _ in range(2)
        ]
        for side in sides:
            assert side.stdin is not None and side.stdout is not None
            assert side.stdout.readline().strip() == "ready"
        times: list[list[tuple[float, float]]] = [[], []]
        for i in range(blocks):
            for s in (0, 1) if i % 2 == 0 else (1, 0):
                sides[s].stdin.write("go\n")  # type: ignore[union-attr]
                sides[s].stdin.flush()  # type: ignore[union-attr]
                block, at = sides[s].stdout.readline().split()  # type: ignore[union-attr]
                times[s].append((float(block), float(at)))
        for side in sides:
            side.stdin.close()  # type: ignore[union-attr]
            side.wait()
        a, b = times
        gap = (a[-1][1] - a[0][1]) / (len(a) - 1)
        spreads = []
        for k in (0, 1, 4, 16, 32, 64):
            if k < len(a) - 2:
                ratios = [math.log(b[i][0] / a[i + k][0]) for i in range(len(a) - k)]
                spreads.append(f"{k * gap:.1f} s {statistics.pstdev(ratios) * 100:.1f}%")
        print(
            f"{kind}: {blocks} blocks a side, one every {gap * 1e3:.0f} ms; spread of log(B/A) by lag: "
            + ", ".join(spreads)
        )


def cpus(blocks: int) -> None:
    work = _workload("forward")
    usable = sorted(os.sched_getaffinity(0))
    on: dict[int, list[float]] = {c: [] for c in usable}
    for i in range(blocks):
        for c in usable if i % 2 == 0 else usable[::-1]:
            os.sched_setaffinity(0, {c})
            work()  # the first after a move warms the caches of the new CPU
            on[c].append(statistics.median(_cpu_s(work) for _ in range(5)))
    os.sched_setaffinity(0, set(usable))
    medians = ", ".join(f"CPU {c} {statistics.median(on[c]) * 1e3:.2f} ms" for c in usable)
    ratios = [math.log(on[usable[-1]][i] / on[usable[0]][i]) for i in range(blocks)]
    print(
        f"cpus: forward, {blocks} blocks on each CPU: {medians}; log(CPU {usable[-1]} / CPU {usable[0]}) "
        f"median {statistics.median(ratios) * 100:+.1f}%, spread {statistics.pstdev(ratios) * 100:.1f}%"
    )


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
    parser.add_argument(
        "--blocks", type=int, default=200, help="blocks a side (interleaved) or a CPU (cpus); 0: skip both"
    )
    parser.add_argument("--only", choices=("steady", "processes", "interleaved", "cpus"), default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    if args.serve:
        serve(args.serve)
        return
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.1f}")
    if args.only in (None, "steady"):
        steady(args.steady_s)
    if args.only in (None, "processes"):
        processes(args.processes)
    if args.only in (None, "interleaved") and args.blocks:
        interleaved(args.blocks)
    if args.only in (None, "cpus") and args.blocks:
        cpus(args.blocks)
    print(f"{time.strftime('%H:%M')}, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

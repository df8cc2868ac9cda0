"""Plugin overhead on a ~50 ms CPU workload, and NVML calls per timed round (issue 2).

Not a test: a script whose figures go to benchmarks/RESULTS.md.

1. The same workload is timed two ways in one process, interleaved (order alternating per
   repetition so drift and neighbours' load hit both alike): by hand, `perf_counter_ns`
   around each call; and by `Meter.run_window` on the CPU backend with every probe open
   (RSS sampler thread, VmHWM reset, CPU time, energy) - what `efficiency.measure` runs
   after its warm-up and FLOP count. Reported: the ratio of the medians per repetition,
   its median, min and max.
2. NVML calls per timed round, counted with FakePynvml (tests/helpers/nvml_double.py; a test
   double, so this counts calls, it measures no GPU): calls made on the measuring thread
   between the first round's start and the last round's end, and calls elsewhere.

Run:  python benchmarks/overhead.py [--configs 200x1,40x5,40x5@5000] [--write]
(REPSxROUNDS[@MS]: repetitions of windows of ROUNDS rounds, RSS sampler every MS ms (default 20,
the plugin's default); 1-round windows interleave finest; @5000 all but switches the sampler
thread off, to see what it costs.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

import torch  # noqa: E402
from results_md import replace_section  # noqa: E402

from pytest_efficientllm.measuring.backends import Backend, cpu_backend  # noqa: E402
from pytest_efficientllm.measuring.fingerprint import host_fingerprint  # noqa: E402
from pytest_efficientllm.measuring.meter import MeasureProtocol, Meter  # noqa: E402
from pytest_efficientllm.telemetry.nvml import open_nvml  # noqa: E402
from pytest_efficientllm.telemetry.procfs import (  # noqa: E402
    PerfCounterTimer,
    ProcessCpuTimeProbe,
    ProcessMemoryProbe,
)

SECTION = "## Plugin overhead (issue 2)"
TARGET_S = 0.050


def make_workload(target_s: float = TARGET_S):
    """A fixed fp32 matmul loop calibrated once to about `target_s` seconds on 1 thread."""
    a, b = torch.randn(256, 256), torch.randn(256, 256)

    def k_matmuls(k: int):
        def fn() -> None:
            for _ in range(k):
                a @ b

        return fn

    probe = k_matmuls(20)
    probe()
    t0 = time.perf_counter()
    for _ in range(5):
        probe()
    per = (time.perf_counter() - t0) / 5 / 20
    k = max(1, round(target_s / per))
    return k_matmuls(k), k


def by_hand(fn, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t0) * 1e-9)
    return out


def overhead(fn, k: int, reps: int, rounds: int, interval_ms: int = 20) -> dict:
    meter = Meter(cpu_backend(threads=1, sample_interval_s=interval_ms / 1e3))
    protocol = MeasureProtocol(rounds=rounds, warmup=0)
    for _ in range(2):  # warm-up, as efficiency.measure does
        fn()
    ratios, hand_all, meter_all = [], [], []
    for rep in range(reps):
        order = ("hand", "meter") if rep % 2 == 0 else ("meter", "hand")
        got = {}
        for which in order:
            got[which] = by_hand(fn, rounds) if which == "hand" else meter.run_window(fn, protocol).latencies_s
        hand_all += got["hand"]
        meter_all += got["meter"]
        ratios.append(statistics.median(got["meter"]) / statistics.median(got["hand"]))
    return {
        "k": k,
        "reps": reps,
        "rounds": rounds,
        "interval_ms": interval_ms,
        "hand_median_s": statistics.median(hand_all),
        "meter_median_s": statistics.median(meter_all),
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "ratio_of_medians": statistics.median(meter_all) / statistics.median(hand_all),
    }


def nvml_calls_per_round(rounds: int) -> dict:
    from tests.helpers.nvml_double import FakePynvml

    nv = FakePynvml()
    devs = open_nvml(nv, None, probe_max_s=0.2)

    def probes():
        return [ProcessCpuTimeProbe(), ProcessMemoryProbe(interval_s=0.02, prefix="host_"), *devs.make_probes(0.02)]

    backend = Backend("fake-gpu", PerfCounterTimer(), probes, lambda: None, None)

    def workload() -> None:
        nv.mark("<round start>")
        time.sleep(0.05)
        nv.mark("<round end>")

    nv.calls.clear()
    Meter(backend).run_window(workload, MeasureProtocol(rounds=rounds, warmup=0))
    names = [(thread, name) for thread, name, _ in nv.calls]
    first = next(i for i, (_, n) in enumerate(names) if n == "<round start>")
    last = max(i for i, (_, n) in enumerate(names) if n == "<round end>")
    main = "MainThread"
    inside_main = [n for t, n in names[first:last] if t == main and not n.startswith("<")]
    open_close = [n for i, (t, n) in enumerate(names) if t == main and not n.startswith("<") and not first <= i < last]
    sampler = [n for t, n in names if t != main]
    return {
        "rounds": rounds,
        "inside_rounds_main_thread": len(inside_main),
        "per_round_main_thread": len(inside_main) / rounds,
        "open_close": len(open_close),
        "open_close_calls": sorted(set(open_close)),
        "sampler_thread": len(sampler),
    }


def overhead_rows(o: dict) -> list[str]:
    pct = lambda r: f"{(r - 1) * 100:+.2f}%"  # noqa: E731
    within = "yes" if abs(o["ratio_median"] - 1) <= 0.02 else "NO"
    return [
        f"| {o['reps']} x {o['rounds']} | {o['interval_ms']} ms | {o['hand_median_s'] * 1e3:.2f} ms | "
        f"{o['meter_median_s'] * 1e3:.2f} ms | {o['ratio_of_medians']:.4f} ({pct(o['ratio_of_medians'])}) | "
        f"{o['ratio_median']:.4f} ({pct(o['ratio_median'])}) | "
        f"{o['ratio_min']:.3f} .. {o['ratio_max']:.3f} | {within} |"
    ]


def section(runs: list[dict], n: dict, fp: dict, load: tuple[float, float], command: str) -> str:
    k = runs[0]["k"]
    return "\n".join(
        [
            SECTION,
            "",
            f"Command: `{command}` (1 torch thread). Machine: {fp['cpu_model']}, "
            f"{fp['cpu_cores_usable']} usable cores, "
            f"{fp['os']}, Python {fp['python']}, torch {fp['packages'].get('torch')}; load average "
            f"{load[0]:.1f} at start, {load[1]:.1f} at end (the 2-core machine was shared with other work, so single "
            "rounds scatter widely; the paired, interleaved medians are what to read).",
            "",
            f"Workload: {k} x fp32 256x256 matmul (calibrated to ~{TARGET_S * 1e3:.0f} ms when the run started). Each "
            "repetition times the same rounds by hand (`perf_counter_ns` around each call) and by `Meter.run_window` "
            "on the CPU backend with all probes open (what `efficiency.measure` runs after its warm-up and FLOP "
            "count), in alternating order. Ratio = Meter / hand.",
            "",
            "| reps x rounds per window | RSS sampler interval | median round, by hand | median round, Meter | "
            "ratio of the medians | median of per-repetition ratios | "
            "min .. max per-repetition ratio | median within 2% |",
            "|---|---|---|---|---|---|---|---|",
            *[row for o in runs for row in overhead_rows(o)],
            "",
            "NVML calls per timed round, counted with the `FakePynvml` test double "
            "(a call count, not a GPU measurement), "
            f"{n['rounds']} rounds of 50 ms with the host and NVML probes open:",
            "",
            "| figure | value |",
            "|---|---|",
            f"| pynvml calls on the measuring thread between the first round's start and the last round's end | "
            f"{n['inside_rounds_main_thread']} ({n['per_round_main_thread']:.0f} per round) |",
            f"| pynvml calls at window open and close (incl. the samplers' first and last sample) | {n['open_close']} "
            f"({', '.join(n['open_close_calls'])}) |",
            "| pynvml calls in the sampler threads "
            "(memory v2 and utilization, every 20 ms while the window is open) | "
            f"{n['sampler_thread']} |",
            "",
            "The same property is a unit test that can fail: "
            "`tests/telemetry/test_nvml.py::"
            "test_no_nvml_call_between_timed_rounds_only_at_open_close_and_in_the_sampler`, "
            "with a negative control that a timer reading NVML each round is caught.",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--configs", default="200x1,40x5,40x5@5000", help="REPSxROUNDS[@MS],... (default 200x1,40x5,40x5@5000)"
    )
    parser.add_argument("--write", action="store_true", help="write the figures to benchmarks/RESULTS.md")
    args = parser.parse_args()
    try:
        configs = [tuple(int(x) for x in c.replace("@", "x").split("x")) for c in args.configs.split(",")]
        assert all(len(c) in (2, 3) and min(c) >= 1 for c in configs)
    except (ValueError, AssertionError):
        parser.error(f"--configs={args.configs!r}: expected REPSxROUNDS[@MS][,...], e.g. 200x1,40x5,40x5@5000")
    torch.set_num_threads(1)
    load0 = os.getloadavg()[0]
    fn, k = make_workload()  # one calibration: every configuration times the same work
    runs = [overhead(fn, k, *config) for config in configs]
    n = nvml_calls_per_round(5)
    load1 = os.getloadavg()[0]
    command = f"python benchmarks/overhead.py --configs {args.configs}" + (" --write" if args.write else "")
    text = section(runs, n, host_fingerprint(1), (load0, load1), command)
    print(text)
    if args.write:
        replace_section(SECTION, text)


if __name__ == "__main__":
    main()

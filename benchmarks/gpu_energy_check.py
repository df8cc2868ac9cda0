"""On a GPU: NVML energy counter vs integrated power over the same window, the counter's step, NVML call cost.

    python benchmarks/gpu_energy_check.py > out.md

Prints Markdown. Needs a CUDA device and NVML; exits 2 without them.
"""

from __future__ import annotations

import sys
import threading
import time

import pynvml
import torch


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 2
    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    name = pynvml.nvmlDeviceGetName(h)
    # Counter step: read as fast as possible for 1 s, record the distinct increments (mJ) and their spacing (s).
    steps, times, last = [], [], pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
    t_end = time.perf_counter() + 1.0
    while time.perf_counter() < t_end:
        e = pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
        if e != last:
            steps.append(e - last)
            times.append(time.perf_counter())
            last = e
    periods = [b - a for a, b in zip(times, times[1:])]
    # Call cost of the reads the plugin makes.
    cost = {}
    for label, fn in (
        ("nvmlDeviceGetTotalEnergyConsumption", lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(h)),
        ("nvmlDeviceGetMemoryInfo v2", lambda: pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2)),
        ("nvmlDeviceGetUtilizationRates", lambda: pynvml.nvmlDeviceGetUtilizationRates(h)),
    ):
        t0 = time.perf_counter_ns()
        for _ in range(500):
            fn()
        cost[label] = (time.perf_counter_ns() - t0) / 500 / 1e3
    # Energy counter vs power integration over a 5 s matmul window.
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    torch.cuda.synchronize()
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.perf_counter(), pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0))
            time.sleep(0.01)

    th = threading.Thread(target=sample)
    e0 = pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
    t0 = time.perf_counter()
    th.start()
    while time.perf_counter() - t0 < 5.0:
        for _ in range(20):
            a @ a
        torch.cuda.synchronize()
    t1 = time.perf_counter()
    e1 = pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
    stop.set()
    th.join()
    counter_j = (e1 - e0) / 1000.0
    integ = sum((tb - ta) * (pa + pb) / 2 for (ta, pa), (tb, pb) in zip(samples, samples[1:]))
    span = samples[-1][0] - samples[0][0]
    integ_j = integ * (t1 - t0) / span if span else float("nan")
    print(f"### NVML on {name}, driver {pynvml.nvmlSystemGetDriverVersion()}, torch {torch.__version__}\n")
    print("| figure | value |\n|---|---|")
    print(f"| energy counter steps seen in 1 s of back-to-back reads | {len(steps)} |")
    if steps:
        print(
            f"| step size (mJ), min / median / max | {min(steps)} / {sorted(steps)[len(steps) // 2]} / {max(steps)} |"
        )
    if periods:
        print(
            f"| time between counter updates (ms), min / median / max | {min(periods) * 1e3:.2f} / "
            f"{sorted(periods)[len(periods) // 2] * 1e3:.2f} / {max(periods) * 1e3:.2f} |"
        )
    for label, us in cost.items():
        print(f"| {label} call cost | {us:.1f} µs |")
    print(f"| 5 s bf16 8192² matmul window: energy counter | {counter_j:.1f} J ({counter_j / (t1 - t0):.1f} W mean) |")
    print(
        f"| same window: nvmlDeviceGetPowerUsage sampled every 10 ms, trapezoid, scaled to the window | "
        f"{integ_j:.1f} J ({len(samples)} samples) |"
    )
    print(f"| agreement (power integration / counter) | {integ_j / counter_j:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

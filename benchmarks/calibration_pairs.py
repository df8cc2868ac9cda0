"""Does dividing by the calibration bring runs of one machine closer? Run files compared in pairs.

    python benchmarks/calibration_pairs.py RUN.json [RUN.json ...] [--metric cpu_time_per_round]

Every pair of run files (`--efficiency-json`, recorded on one machine under one fingerprint):
for each test both timed, the log of the metric's ratio, raw and divided by each calibration
figure its process recorded (the index, the matmul part, the copy part; the CPU-time figures
for a `cpu_time*` metric, the wall-clock ones otherwise); the pair's machine-wide shift is
the median over its tests. Printed per variant: the root mean square of the pairs' shifts, and
the largest, as factors. A calibration that stood for the machine's speed would bring them
towards x1.000; one noisier than the runs would take them further. Figures quoted in
benchmarks/RESULTS.md ("The calibration only across hardware") come from this.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
from pathlib import Path


def timed(path: Path, metric: str) -> dict[str, tuple[float, dict]]:
    """Each test's value of `metric` and the calibration its process recorded."""
    out = {}
    for record in json.loads(path.read_text())["records"]:
        value = (record["metrics"].get(metric) or {}).get("value")
        calibration = record["fingerprint"].get("calibration")
        if value and calibration:
            out[record["nodeid"]] = (float(value), calibration)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--metric", default="cpu_time_per_round")
    args = parser.parse_args()
    cpu = args.metric.startswith("cpu_time")
    variants: dict[str, str | None] = {
        "nothing (raw)": None,
        "the index": "cpu_index_s" if cpu else "index_s",
        "its matmul part": "matmul_cpu_s" if cpu else "matmul_s",
        "its copy part": "copy_cpu_s" if cpu else "copy_s",
    }
    runs = {path.name: timed(path, args.metric) for path in args.runs}
    shifts: dict[str, list[float]] = {name: [] for name in variants}
    for a, b in itertools.combinations(sorted(runs), 2):
        common = sorted(set(runs[a]) & set(runs[b]))
        if not common:
            continue
        for name, key in variants.items():
            logs = []
            for nodeid in common:
                (va, ca), (vb, cb) = runs[a][nodeid], runs[b][nodeid]
                correction = 0.0 if key is None else math.log(float(cb[key]) / float(ca[key]))
                logs.append(math.log(vb / va) - correction)
            shifts[name].append(statistics.median(logs))
    pairs = len(shifts["nothing (raw)"])
    print(f"{len(runs)} run files, {pairs} pairs, metric {args.metric}")
    print("| divided by | RMS of the pairs' shifts | largest |")
    print("|---|---|---|")
    for name, values in shifts.items():
        rms = math.sqrt(statistics.fmean(x * x for x in values))
        print(f"| {name} | x{math.exp(rms):.3f} | x{math.exp(max(abs(x) for x in values)):.3f} |")


if __name__ == "__main__":
    main()

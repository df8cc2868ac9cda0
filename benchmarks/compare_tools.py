"""Side by side with the tools users would pick instead (issue 6): one command runs them all.

    python benchmarks/compare_tools.py [--timing-runs 20] [--memory-pairs 4] [--energy-reps 5]
                                       [--suite-pairs 2] [--skip suites,...] [--no-write]

1. timing vs pytest-benchmark: `timing_tests.py` run `--timing-runs` times under pytest with both
   plugins loaded; in each run and workload the same rounds are timed by hand, by
   `efficiency.measure` and by `benchmark.pedantic`, in an order that rotates between runs.
   Overhead = a tool's wall time for the measurement / the hand loop's (same rounds, same
   warm-up); spread = (max - min) / median of the medians each tool reported over the runs.
2. peak memory vs pytest-memray: `memory_tests.py` run in pairs, once with our plugin and
   once with `--memray` (`limit_memory`), order alternating. Peak of a known 64 MiB allocation
   against its size; slowdown = median round inside the tool / median round by hand.
3. energy vs codecarbon and zeus, in one process, interleaved: the same fixed matmul work bare,
   under `Meter` (our CPU backend), under codecarbon's `OfflineEmissionsTracker` and under a
   `ZeusMonitor` window. Overhead = wall with the tool / wall bare (adjacent).
4. suite throughput: `pytest suites/` serially and with `-n 2`, alternating.

Raw results: benchmarks/side_by_side/last_run.json; the section "## Side by side with other
tools (issue 6)" of benchmarks/RESULTS.md is rewritten (only that section).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from results_md import RESULTS, replace_section

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "benchmarks" / "side_by_side"
RAW = HERE / "last_run.json"
SECTION = "## Side by side with other tools (issue 6)"
MiB = 2**20
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
OURS = ["--efficiency-calibrate-every=off", "--efficiency-threads=1"]


def mmm(values: list[float]) -> tuple[float, float, float]:
    return min(values), statistics.median(values), max(values)


def fmt3(values: list[float], digits: int = 3) -> str:
    lo, med, hi = mmm(values)
    return f"{med:.{digits}f} ({lo:.{digits}f} .. {hi:.{digits}f})"


def spread(values: list[float]) -> float:
    """(max - min) / median: how far apart repeated runs' reported medians land."""
    return (max(values) - min(values)) / statistics.median(values)


def run_pytest(args: list[str], env: dict[str, str], timeout: float = 900) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(
        PYTEST + args, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise RuntimeError(f"pytest {' '.join(args)} exited {proc.returncode}:\n{tail}")
    return wall


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- 1. timing ---------------------------------------------------------------------------------


def timing(runs: int, tmp: Path) -> dict[str, Any]:
    out = tmp / "timing.jsonl"
    for i in range(runs):
        run_pytest([str(HERE / "timing_tests.py"), *OURS], {"SBS_OUT": str(out), "SBS_RUN": str(i), "SBS_ROUNDS": "20"})
        print(f"  timing run {i + 1}/{runs}", flush=True)
    rows = read_lines(out)
    result: dict[str, Any] = {"rows": rows, "by_workload": {}}
    for name in sorted({r["workload"] for r in rows}):
        rs = [r for r in rows if r["workload"] == name]
        w = {
            "n_runs": len(rs),
            "overhead_ours": [r["ours_wall_s"] / r["hand_wall_s"] for r in rs],
            "overhead_theirs": [r["theirs_wall_s"] / r["hand_wall_s"] for r in rs],
            "overhead_ours_over_theirs": [r["ours_wall_s"] / r["theirs_wall_s"] for r in rs],
            "extra_ours_s": [r["ours_wall_s"] - r["hand_wall_s"] for r in rs],
            "extra_theirs_s": [r["theirs_wall_s"] - r["hand_wall_s"] for r in rs],
            "median_ratio_ours": [r["ours_median_s"] / r["hand_median_s"] for r in rs],
            "median_ratio_theirs": [r["theirs_median_s"] / r["hand_median_s"] for r in rs],
            "spread_ours": spread([r["ours_median_s"] for r in rs]),
            "spread_theirs": spread([r["theirs_median_s"] for r in rs]),
            "spread_hand": spread([r["hand_median_s"] for r in rs]),
            "median_hand_s": statistics.median(r["hand_median_s"] for r in rs),
        }
        result["by_workload"][name] = w
    return result


# -- 2. peak memory ----------------------------------------------------------------------------


def _memray_peaks(bin_dir: Path) -> dict[str, int]:
    from memray import FileReader

    peaks = {}
    for path in glob.glob(str(bin_dir / "*.bin")):
        for name in ("alloc64", "forward", "matmul"):
            if f"{name}]" in path or f"{name}-" in path or path.endswith(f"{name}.bin") or f"[{name}" in path:
                peaks[name] = int(FileReader(path).metadata.peak_memory)
    return peaks


def memory(pairs: int, tmp: Path) -> dict[str, Any]:
    out = tmp / "memory.jsonl"
    memray_rows: list[dict[str, Any]] = []
    for i in range(pairs):
        order = ("ours", "memray") if i % 2 == 0 else ("memray", "ours")
        for tool in order:
            env = {"SBS_OUT": str(out), "SBS_TOOL": tool, "SBS_ROUNDS": "10"}
            args = [str(HERE / "memory_tests.py")]
            if tool == "memray":
                bins = tmp / f"memray-{i}"
                bins.mkdir()
                args += ["--memray", f"--memray-bin-path={bins}", "-p", "no:efficiency"]
            else:
                args += OURS
            run_pytest(args, env)
            if tool == "memray":
                for name, peak in _memray_peaks(bins).items():
                    memray_rows.append({"pair": i, "workload": name, "memray_peak_b": peak})
        print(f"  memory pair {i + 1}/{pairs}", flush=True)
    rows = read_lines(out)
    ours = [r for r in rows if r["tool"] == "ours"]
    theirs = [r for r in rows if r["tool"] == "memray"]
    result: dict[str, Any] = {"rows": rows, "memray_peaks": memray_rows, "by_workload": {}}
    for name in ("alloc64", "forward", "matmul"):
        o = [r for r in ours if r["workload"] == name]
        t = [r for r in theirs if r["workload"] == name]
        peaks_theirs = [r["memray_peak_b"] for r in memray_rows if r["workload"] == name]
        w: dict[str, Any] = {
            "ours_peak_b": [r["ours_peak_delta_b"] for r in o],
            "ours_peak_method": o[0]["ours_peak_method"] if o else "",
            "memray_peak_b": peaks_theirs,
            # Our slowdown: median round under efficiency.measure / by hand, same process, bracketing.
            "slowdown_ours": [
                r["ours_median_s"] / statistics.mean([r["hand_median_s"], r["hand_median_after_s"]]) for r in o
            ],
            # memray's: median round by hand inside a tracked test / by hand in the paired untracked run.
            "slowdown_memray": [tr["hand_median_s"] / orow["hand_median_s"] for tr, orow in zip(t, o)],
        }
        if name == "alloc64":
            w["error_ours"] = [p / (64 * MiB) - 1 for p in w["ours_peak_b"]]
            w["error_memray"] = [p / (64 * MiB) - 1 for p in peaks_theirs]
        result["by_workload"][name] = w
    return result


# -- 3. energy ---------------------------------------------------------------------------------


def energy(reps: int) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    import logging

    import torch

    torch.set_num_threads(1)
    from side_by_side.workloads import build

    from pytest_efficientllm.measuring.backends import cpu_backend
    from pytest_efficientllm.measuring.meter import (
        MeasureProtocol,
        Meter,
        Work,
        derive_metrics,
    )

    fn = build("matmul")
    rounds = 100

    def bare() -> dict[str, Any]:
        for _ in range(rounds):
            fn()
        return {}

    backend = cpu_backend(threads=1)
    meter = Meter(backend)

    def ours() -> dict[str, Any]:
        res = meter.run_window(fn, MeasureProtocol(rounds=rounds, warmup=0))
        work = Work(count_flops=False)
        m = derive_metrics(res, work, meter.flops_of(fn, work), backend)["energy"]
        return {"energy_j": m.value, "source": m.source, "method": m.method}

    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    from codecarbon import OfflineEmissionsTracker

    def codecarbon() -> dict[str, Any]:
        t0 = time.perf_counter()
        tracker = OfflineEmissionsTracker(
            country_iso_code="USA", measure_power_secs=1, save_to_file=False, log_level="error"
        )
        init_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        tracker.start()
        bare()
        tracker.stop()
        d = tracker.final_emissions_data
        cpu = next((h for h in tracker._hardware if type(h).__name__ == "CPU"), None)
        return {
            "energy_j": d.energy_consumed * 3.6e6,
            "cpu_energy_j": d.cpu_energy * 3.6e6,
            "ram_energy_j": d.ram_energy * 3.6e6,
            "cpu_power_w": d.cpu_power,
            "ram_power_w": d.ram_power,
            "source": f"codecarbon cpu mode {getattr(cpu, '_mode', '?')}, TDP {getattr(cpu, '_tdp', '?')} W",
            "init_s": init_s,
            "_wall_override": time.perf_counter() - t1,
        }

    from zeus.monitor import ZeusMonitor

    def zeus() -> dict[str, Any]:
        info: dict[str, Any] = {}
        t1 = time.perf_counter()
        try:
            mon = ZeusMonitor(gpu_indices=[], cpu_indices=[0])
            info["source"] = "zeus ZeusMonitor(gpu_indices=[], cpu_indices=[0])"
            mon.begin_window("w")
        except Exception as exc:  # no RAPL here: record what zeus says, then measure without CPUs
            info["cpu_error"] = f"{type(exc).__name__}: {exc} (at begin_window)"
            mon = ZeusMonitor(gpu_indices=[])
            info["source"] = "zeus ZeusMonitor(gpu_indices=[])"
            t1 = time.perf_counter()
            mon.begin_window("w")
        bare()
        m = mon.end_window("w")
        info.update({"energy_j": m.cpu_energy, "gpu_energy": m.gpu_energy, "_wall_override": time.perf_counter() - t1})
        return info

    t0 = time.perf_counter()
    OfflineEmissionsTracker(country_iso_code="USA", save_to_file=False, log_level="error")
    first_codecarbon_init_s = time.perf_counter() - t0
    variants = {"bare": bare, "ours": ours, "codecarbon": codecarbon, "zeus": zeus}
    bare()  # warm-up
    rows = []
    names = list(variants)
    for rep in range(reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        walls: dict[str, float] = {}
        infos: dict[str, Any] = {}
        for name in order + ["bare"]:  # a second bare run so every tool has a bare neighbour
            t0 = time.perf_counter()
            info = variants[name]()
            wall = info.pop("_wall_override", None) or (time.perf_counter() - t0)
            walls.setdefault(name, wall) if name != "bare" else walls.setdefault(
                "bare2" if "bare" in walls else "bare", wall
            )
            if name != "bare":
                infos[name] = info
        base = statistics.mean([walls["bare"], walls.get("bare2", walls["bare"])])
        rows.append(
            {
                "rep": rep,
                "walls": walls,
                "infos": infos,
                "overhead": {n: walls[n] / base for n in ("ours", "codecarbon", "zeus")},
            }
        )
        print(f"  energy rep {rep + 1}/{reps}", flush=True)
    return {"rows": rows, "rounds": rounds, "first_codecarbon_init_s": first_codecarbon_init_s}


# -- 4. suite throughput -----------------------------------------------------------------------


def suites(pairs: int) -> dict[str, Any]:
    rows = []
    for i in range(pairs):
        order = ("serial", "n2") if i % 2 == 0 else ("n2", "serial")
        walls = {}
        for mode in order:
            extra = ["-n", "2"] if mode == "n2" else []
            walls[mode] = run_pytest(["suites/", "--efficiency-calibrate-every=off"] + extra, {}, timeout=1800)
        rows.append({"pair": i, **walls, "speedup": walls["serial"] / walls["n2"]})
        print(f"  suites pair {i + 1}/{pairs}: {walls}", flush=True)
    return {"rows": rows}


# -- the report --------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from pytest_efficientllm.measuring.fingerprint import host_fingerprint

    fp = host_fingerprint(1)
    return {k: fp.get(k) for k in ("cpu_model", "cpu_count", "platform", "python", "packages") if k in fp}


def _ms3(seconds: list[float] | None) -> str:
    return fmt3([x * 1e3 for x in seconds], 1) + " ms" if seconds else "-"


def _from(part: dict[str, Any]) -> str:
    return f" (from the run of {part['from_run']})" if part.get("from_run") else ""


def render(data: dict[str, Any]) -> str:
    lines = [SECTION, ""]
    m = data["machine"]
    lines += [
        f"Command: `python benchmarks/compare_tools.py` ({data['started']} .. {data['finished']}); raw numbers in "
        "`benchmarks/side_by_side/last_run.json`. Machine: "
        + ", ".join(f"{k} {v}" for k, v in m.items() if k != "packages")
        + f"; load average {data['load_start']} at start, {data['load_end']} at end: **the 2-core machine was shared** "
        "with other engineers' test runs throughout, so every figure is a ratio of runs interleaved in the same "
        "period, given as median (min .. max) over repetitions. Tools: pytest-benchmark 5.3.1, pytest-memray 1.11 "
        "(memray 1.20), codecarbon 3.3.2, zeus 0.16; torch at 1 thread for every tool.",
        "",
    ]
    t = data.get("timing")
    if t:
        lines += [
            "### Timing vs pytest-benchmark" + _from(t),
            "",
            f"{next(iter(t['by_workload'].values()))['n_runs']} separate pytest runs; in each, per workload, "
            "20 rounds + 2 warm-up timed by hand "
            "(`perf_counter_ns` per call), by `efficiency.measure` (marker `flops=False`: no FLOP-counting run) and by "
            "`benchmark.pedantic(rounds=20, warmup_rounds=2)` (fixed rounds, so both tools do the same work; "
            "pytest-benchmark's default auto-calibration would run a different number of rounds), order rotating. "
            "Overhead = the tool's wall time for the whole measurement call / the hand loop's. Spread = (max − min) / "
            "median of the medians the tool reported over the runs (lower is steadier).",
            "",
            "| workload | hand median round | overhead ours | overhead pytest-benchmark | ours / theirs wall | "
            "wall − hand wall: ours | … theirs | reported median / hand: ours | … theirs | spread ours | "
            "spread theirs | spread hand |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, w in t["by_workload"].items():
            lines.append(
                f"| {name} | {w['median_hand_s'] * 1e3:.2f} ms | {fmt3(w['overhead_ours'])} | "
                f"{fmt3(w['overhead_theirs'])} | {fmt3(w['overhead_ours_over_theirs'])} | "
                f"{_ms3(w.get('extra_ours_s'))} | {_ms3(w.get('extra_theirs_s'))} | "
                f"{fmt3(w['median_ratio_ours'])} | {fmt3(w['median_ratio_theirs'])} | "
                f"{w['spread_ours'] * 100:.1f}% | {w['spread_theirs'] * 100:.1f}% | {w['spread_hand'] * 100:.1f}% |"
            )
        lines.append("")
    if t:
        goals = []
        for name, w in t["by_workload"].items():
            ratio = statistics.median(w["overhead_ours_over_theirs"])
            goals.append(
                f"{name}: overhead ours ≤ theirs **{'met' if ratio <= 1 else 'NOT met'}** (ours/theirs wall "
                f"{ratio:.2f}); spread ours ≤ theirs "
                f"**{'met' if w['spread_ours'] <= w['spread_theirs'] else 'NOT met'}**"
            )
        lines += [
            "Goals: " + "; ".join(goals) + ". Both tools report the same median (ratios to the hand loop ≈ 1), and "
            "every spread, the hand loop's included, is set by the shared machine, not by the tool. The overhead is "
            'a fixed cost per measurement, not per round ("wall − hand wall"; per round the timer adds nothing '
            "measurable, see Plugin overhead, issue 2). Ours buys what pytest-benchmark does not measure: "
            "a no-op measured 8 times in one "
            "process with the plugin's functions wrapped by a timer (`python -m pytest "
            "benchmarks/side_by_side/fixed_cost_tests.py -s`, 11:50, load ~0.5) took 1.05 ms per `efficiency.measure` "
            "(first call 1.87 ms): opening and closing the memory probe 0.57 ms (its RSS sampler thread's start 0.23 "
            "ms and stop 0.16 ms, the VmHWM reset through `clear_refs`), ~20 derived metrics and the record 0.20 ms, "
            "the CPU-time probe 0.02 ms. The first measurement of a process (matmul here) pays first calls on top; "
            "`np.percentile`'s, which imported `numpy.ma` (~9 ms), is gone: the percentiles are computed with "
            "`statistics.quantiles`. Until this run `Meter` ran a full `gc.collect()` before each test's first window: "
            "~0.1 s over a heap holding transformers (`python benchmarks/side_by_side/gc_cost.py`), which gave "
            "ours/theirs wall 5.28 / 1.47 / 1.21 (forward / generate / matmul, 10 runs, 11:12–11:13); it now collects "
            "only the young generations (~0.03 ms), which is where the set-up's cyclic garbage lives "
            "(`tests/measuring/test_meter_ground_truth.py::test_cyclic_garbage_left_by_set_up_is_freed_before_the_first_round`).",
            "",
        ]
    mem = data.get("memory")
    if mem:
        lines += [
            "### Peak memory vs pytest-memray" + _from(mem),
            "",
            'Pairs of pytest runs (ours without memray; `--memray` with `@pytest.mark.limit_memory("2 GB")`, '
            "our plugin "
            "off), order alternating. Ours: `peak_memory_delta` = VmHWM (reset per window through "
            "`/proc/self/clear_refs`) minus RSS at window open, i.e. resident pages. memray: the peak of tracked "
            "allocations in the test, read from its capture file (`FileReader(...).metadata.peak_memory`), i.e. "
            "allocated bytes. Slowdown: ours = median round under `efficiency.measure` / by hand in the same test; "
            "memray = median round by hand inside the tracked test / the same in the paired untracked run.",
            "",
            "| workload | peak ours | peak memray | error vs 64 MiB: ours | … memray | slowdown ours | "
            "slowdown memray |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, w in mem["by_workload"].items():
            po = fmt3([p / MiB for p in w["ours_peak_b"]], 2) + " MiB" if w["ours_peak_b"] else "-"
            pt = fmt3([p / MiB for p in w["memray_peak_b"]], 2) + " MiB" if w["memray_peak_b"] else "-"
            eo = (
                fmt3([e * 100 for e in w.get("error_ours", [])], 2) + "%" if w.get("error_ours") else "(size not known)"
            )
            et = (
                fmt3([e * 100 for e in w.get("error_memray", [])], 2) + "%"
                if w.get("error_memray")
                else "(size not known)"
            )
            lines.append(
                f"| {name} | {po} | {pt} | {eo} | {et} | {fmt3(w['slowdown_ours'])} | "
                f"{fmt3(w['slowdown_memray']) if w['slowdown_memray'] else '-'} |"
            )
        a = mem["by_workload"].get("alloc64", {})
        if a.get("error_ours"):
            lines += [
                f"Goals: exact to allocator granularity — memray {statistics.median(a['error_memray']) * 100:+.2f}% "
                f"(it counts allocated bytes), ours {statistics.median(a['error_ours']) * 100:+.2f}% (resident pages, "
                "VmHWM minus RSS at window open: ~0.1 MiB short of the tensor; VmHWM counts the whole process, so "
                "pages it releases between the window's opening and the peak come off, but which ones is not "
                "established; tests/measuring/test_meter_ground_truth.py::test_a_tensor_of_known_size_appears_in_the_"
                "window_peak allows 1 MiB below for this); < 1% slowdown: ours "
                f"{statistics.median(mem['by_workload']['alloc64']['slowdown_ours']):.3f} / "
                f"{statistics.median(mem['by_workload']['forward']['slowdown_ours']):.3f} / "
                f"{statistics.median(mem['by_workload']['matmul']['slowdown_ours']):.3f} (alloc64 / forward / matmul, "
                "medians inside the machine's noise, no slowdown resolved), memray "
                f"{statistics.median(mem['by_workload']['alloc64']['slowdown_memray']):.3f} / "
                f"{statistics.median(mem['by_workload']['forward']['slowdown_memray']):.3f} / "
                f"{statistics.median(mem['by_workload']['matmul']['slowdown_memray']):.3f}. For the forward and the "
                "matmul the two tools measure different things: memray the bytes allocated during the test (0.5–0.6 "
                "MiB of activations), ours the new resident pages (≈ 0: the allocator reuses pages freed by the "
                "warm-up round).",
                "",
            ]
        lines.append("")
    e = data.get("energy")
    if e:
        rows = e["rows"]
        cc = rows[0]["infos"]["codecarbon"]
        ours_info = rows[0]["infos"]["ours"]
        z = rows[0]["infos"]["zeus"]
        lines += [
            "### Energy vs codecarbon and zeus (CPU; no RAPL, no GPU on this machine)" + _from(e),
            "",
            f"{len(rows)} repetitions in one process, order rotating, of {e['rounds']} rounds of the matmul workload "
            "bare, under our `Meter` (CPU backend), under codecarbon's "
            '`OfflineEmissionsTracker(country_iso_code="USA", measure_power_secs=1)` '
            "(start/stop; its constructor is timed apart) and under a zeus `ZeusMonitor` window. "
            "Overhead = wall with the tool / mean of the bare runs around it.",
            "",
            "| tool | overhead | energy it reports for the window | what that number is |",
            "|---|---|---|---|",
            f"| pytest-efficientllm | {fmt3([r['overhead']['ours'] for r in rows])} | "
            f"{fmt3([r['infos']['ours']['energy_j'] for r in rows], 2)} J | "
            f"`{ours_info['source']}`: {ours_info['method']} |",
            f"| codecarbon | {fmt3([r['overhead']['codecarbon'] for r in rows])} "
            f"(constructor apart: first {e['first_codecarbon_init_s']:.1f} s, "
            f"later {fmt3([r['infos']['codecarbon']['init_s'] for r in rows], 2)} s) | "
            f"{fmt3([r['infos']['codecarbon']['energy_j'] for r in rows], 2)} J "
            f"(CPU {fmt3([r['infos']['codecarbon']['cpu_energy_j'] for r in rows], 2)} J "
            f"+ RAM {fmt3([r['infos']['codecarbon']['ram_energy_j'] for r in rows], 2)} J) | "
            f"an estimate: {cc['source']} (CPU {cc['cpu_power_w']:.1f} W in rep 0), "
            f"RAM a constant {cc['ram_power_w']:.0f} W; no counter read |",
            f"| zeus | {fmt3([r['overhead']['zeus'] for r in rows])} | {z['energy_j']} (GPU: {z['gpu_energy']}) | "
            + (
                f"nothing: `ZeusMonitor(gpu_indices=[], cpu_indices=[0])` is built, then `{z['cpu_error']}`; "
                if z.get("cpu_error")
                else f"{z['source']}; "
            )
            + "with no GPU and no RAPL a window gives its time only |",
            "",
            "GPU (NVML energy counter windows vs power integration): not run by this script "
            "(it runs on the CPU machine); "
            'see "On a GPU (issue 2, H100)" above, from the GPU check on a lent H100.',
            "",
        ]
    s = data.get("suites")
    if s:
        rows = s["rows"]
        lines += [
            "### Suite throughput: tiny suites serially vs `-n 2`" + _from(s),
            "",
            f"`pytest suites/ -q` (tiny scale, calibration off) serially and with `-n 2`, "
            f"{len(rows)} pairs, order alternating.",
            "",
            "| serial wall | -n 2 wall | speedup |",
            "|---|---|---|",
            f"| {fmt3([r['serial'] for r in rows], 1)} s | {fmt3([r['n2'] for r in rows], 1)} s | "
            f"{fmt3([r['speedup'] for r in rows], 2)} |",
            "",
            "Why two workers save little, as far as it is known (causes not measured separately): each xdist worker "
            "pays the start-up again (importing torch, transformers and diffusers, loading SmolLM2 from GGUF, the "
            "calibration workload), a large share of a suite this short; and with `efficiency_threads = 1` a serial "
            "run already leaves the second core to the sampler thread and the OS.",
            "",
        ]
        if max(r["speedup"] for r in rows) > 2.0:
            lines += [
                "**Not a valid speedup figure:** above 2 on 2 cores cannot come from parallelism. "
                "The serial run overlapped "
                "another engineer's `pytest suites/…` run on this machine (seen in `ps` during it) and the `-n 2` run "
                f"did not; with {len(rows)} pair(s) the contention is not averaged out. Rerun "
                "`python benchmarks/compare_tools.py --skip timing,memory,energy --suite-pairs 3` on a quiet machine.",
                "",
            ]
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--timing-runs", type=int, default=20)
    ap.add_argument("--memory-pairs", type=int, default=4)
    ap.add_argument("--energy-reps", type=int, default=5)
    ap.add_argument("--suite-pairs", type=int, default=2)
    ap.add_argument("--skip", default="", help="comma-separated: timing,memory,energy,suites")
    ap.add_argument("--no-write", action="store_true", help="print the section instead of writing RESULTS.md")
    ap.add_argument("--render-only", action="store_true", help="re-render RESULTS.md from last_run.json")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    if args.render_only:
        data = json.loads(RAW.read_text())
    else:
        skip = set(filter(None, args.skip.split(",")))
        data: dict[str, Any] = {
            "started": time.strftime("%Y-%m-%d %H:%M"),
            "load_start": os.getloadavg()[0],
            "machine": machine(),
        }
        # Parts skipped now keep their figures from the previous run, labelled with its times.
        previous = json.loads(RAW.read_text()) if RAW.exists() else {}
        for part in ("timing", "memory", "energy", "suites"):
            if part in skip and part in previous:
                data[part] = {
                    **previous[part],
                    "from_run": previous[part].get("from_run") or f"{previous['started']} .. {previous['finished']}",
                }
        with tempfile.TemporaryDirectory() as tmpdir:
            tmp = Path(tmpdir)
            if "timing" not in skip:
                print("timing vs pytest-benchmark", flush=True)
                data["timing"] = timing(args.timing_runs, tmp)
            if "memory" not in skip:
                print("peak memory vs pytest-memray", flush=True)
                data["memory"] = memory(args.memory_pairs, tmp)
            if "energy" not in skip:
                print("energy vs codecarbon and zeus", flush=True)
                data["energy"] = energy(args.energy_reps)
            if "suites" not in skip:
                print("suite throughput", flush=True)
                data["suites"] = suites(args.suite_pairs)
        data["finished"] = time.strftime("%Y-%m-%d %H:%M")
        data["load_end"] = os.getloadavg()[0]
        RAW.write_text(json.dumps(data, indent=1, default=str) + "\n")
    section = render(data)
    if args.no_write:
        print(section)
    else:
        replace_section(SECTION, section)
        print(f"wrote {SECTION!r} in {RESULTS}")


if __name__ == "__main__":
    main()

"""The RESULTS.md section of a GPU check (benchmarks/gpu_check.py), from the files it wrote.

    python benchmarks/gpu_check_report.py OUT_OR_FILES [--out DIR] [--write]

OUT_OR_FILES: the check's work folder, its $OUT folder (holding gpu-check-files.tgz) or that
tarball. Reads phases.json, tests-junit.xml, suites-*.json/.log, cross-aa.md and nvml.md; writes
RESULTS-section.md into --out (default: the folder it read, unpacked where it was a tarball)
and, with --write, the section into benchmarks/RESULTS.md (results_md.replace_section). Every
figure comes from those files; a file that is missing is said to be missing.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_md import replace_section  # noqa: E402
from sampler_cpu import sampler_shares, shares_text  # noqa: E402

from pytest_efficientllm.telemetry.gpu_state import limiters, throttle_reasons  # noqa: E402

GPU_TITLE = "## GPU check: suites, baselines and A/A on {profile} (issue 19)"
CPU_TITLE = "## GPU check script: CPU rehearsal (issue 19)"
AA_METRICS = ("AL", "energy_per_token", "cpu_time_per_round")


def files_dir(path: Path) -> Path:
    """The folder holding phases.json: `path` itself, or the tarball in or at `path` unpacked."""
    if path.is_dir() and (path / "phases.json").exists() and not (path / "gpu-check-files.tgz").exists():
        return path
    tgz = path / "gpu-check-files.tgz" if path.is_dir() else path
    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-report-"))
    with tarfile.open(tgz) as tar:
        try:
            tar.extractall(tmp, filter="data")
        except TypeError:  # Python without extraction filters
            tar.extractall(tmp)
    return tmp


def energy_class(record: dict) -> tuple[str, str]:
    """resolved / flagged / unavailable / estimated / absent, and the note (numbers blanked, so reasons group)."""
    m = record.get("metrics", {}).get("energy")
    if m is None:
        return "absent", ""
    note = re.sub(r"\d+(\.\d+)?", "N", m.get("note") or "")[:110]
    if m.get("source") == "estimated":
        return "estimated", ""
    if m.get("value") is None:
        return "unavailable", note
    return ("flagged", note) if note else ("resolved", "")


def _tally(runs: list[dict], metric: str, names_of: Callable[[str], list[str]]) -> tuple:
    """Over every record carrying `metric`: how many; those above 0 as (value, the record's metrics); the
    names their notes give; why it was unavailable, digits masked so alike reasons count together."""
    windows = 0
    flagged: list[tuple[float, dict]] = []
    names: Counter = Counter()
    unavailable: Counter = Counter()
    for run in runs:
        for rec in run.get("records", []):
            metrics = rec.get("metrics", {})
            m = metrics.get(metric)
            if m is None:
                continue
            windows += 1
            note = m.get("note") or ""
            if m.get("value") is None:
                unavailable[re.sub(r"\d+", "N", note)[:90]] += 1
            elif m["value"] > 0:
                flagged.append((m["value"], metrics))
                names.update(names_of(note))
    return windows, flagged, names, unavailable


def _absent(runs: list[dict], what: str) -> str:
    """Why no record carries `what`, an NVML reading: on the CPU profile there is no GPU to read it
    from (the CPU rehearsal); on a GPU its absence means this build of the plugin does not record it."""
    profiles = {rec.get("profile") for run in runs for rec in run.get("records", [])}
    why = "NVML's; the CPU profile has no GPU" if profiles == {"cpu"} else "not recorded by this build"
    return f"the records carry no {what} ({why})."


def _unavailable(unavailable: Counter) -> str:
    return f"; unavailable in {sum(unavailable.values())}: " + "; ".join(unavailable) if unavailable else ""


def held_by_limiters(runs: list[dict]) -> list[str]:
    """`gpu_throttled_share` (NVML's violation counters over each window) beside `gpu_throttled` (the
    reasons at the window's two edges): how often the counters saw throttling the edge reads missed."""
    windows, held, named, unavailable = _tally(runs, "gpu_throttled_share", limiters)
    if not windows:
        return ["Violation counters: " + _absent(runs, "`gpu_throttled_share`")]
    line = f"Violation counters (`gpu_throttled_share`): {len(held)} of {windows} windows held below application clocks"
    if held:
        missed = sum(1 for _, metrics in held if not (metrics.get("gpu_throttled") or {}).get("value"))
        line += f", at most {max(v for v, _ in held):.1%} of a window: "
        line += "; ".join(f"{n} ({c})" for n, c in named.most_common())
        line += f"; {missed} of them with no throttle reason at the window's open or close"
    return [line + _unavailable(unavailable) + "."]


def sampler_cost(runs: list[dict]) -> list[str]:
    """What the plugin's sampler threads (RSS, and on a GPU NVML memory and utilisation every 20 ms)
    cost each window in CPU, kept out of the workload's `cpu_time` (`sampler_cpu_time`)."""
    shares = sampler_shares([rec for run in runs for rec in run.get("records", [])])
    if not shares:
        return ["Sampler threads' CPU: the records carry no `sampler_cpu_time` (not recorded by this build)."]
    return [
        f"Sampler threads' CPU (`sampler_cpu_time`, kept out of `cpu_time`), share of a window's process CPU "
        f"over {len(shares)} records: {shares_text(shares)}."
    ]


def throttling(runs: list[dict]) -> list[str]:
    """The `gpu_throttled` metric of each record (1 where NVML's clocks event reasons named a slowdown in
    the window, the reasons in its note) and the pre-flight GPU state of the run's fingerprint, where this
    build records them."""
    windows, throttled, reasons, unavailable = _tally(runs, "gpu_throttled", throttle_reasons)
    if not windows:
        out = ["Throttle reasons: " + _absent(runs, "`gpu_throttled` metric")]
    else:
        out = [
            f"Throttling (`gpu_throttled`): {len(throttled)} of {windows} windows throttled"
            + (": " + "; ".join(f"{r} ({c})" for r, c in reasons.most_common()) if reasons else "")
            + _unavailable(unavailable)
            + "."
        ]
    out += held_by_limiters(runs)
    fp = next((r["runs"][0].get("fingerprint", {}) for r in runs if r.get("runs")), {})
    stable = {k: v for k, v in sorted(fp.items()) if k.startswith("gpu_") and k != "gpu_preflight"}
    if stable:
        out.append("GPU state in the fingerprint: " + ", ".join(f"{k} {v}" for k, v in stable.items()) + ".")
    pre = fp.get("gpu_preflight")
    if isinstance(pre, dict) and pre:
        out.append("Pre-flight (first run): " + json.dumps(pre, sort_keys=True)[:600])
    return out


def energy_windows(runs: list[dict]) -> list[str]:
    """What the records say of their energy windows (`settings.energy_window`, where this build records
    it): rounds taken against rounds asked, counter updates spanned, windows capped, reasons not extended."""
    wins = [
        r["settings"]["energy_window"]
        for run in runs
        for r in run.get("records", [])
        if isinstance(r.get("settings", {}).get("energy_window"), dict) and r["settings"]["energy_window"]
    ]
    if not wins:
        return ["Energy windows: " + _absent(runs, "`energy_window` setting")]

    def nums(key: str) -> list[float]:
        return [float(w[key]) for w in wins if isinstance(w.get(key), (int, float)) and not isinstance(w[key], bool)]

    def spread(xs: list[float], fmt: str) -> str:
        return f"{min(xs):{fmt}} / {statistics.median(xs):{fmt}} / {max(xs):{fmt}}" if xs else "not recorded"

    extended = sum(
        1
        for w in wins
        if isinstance(w.get("rounds"), int)
        and isinstance(w.get("rounds_asked"), int)
        and w["rounds"] > w["rounds_asked"]
    )
    not_ext = Counter(str(w["not_extended"]) for w in wins if w.get("not_extended"))
    out = [
        f"Energy windows ({len(wins)} with an `energy_window` record): {extended} extended beyond the rounds asked; "
        f"rounds min / median / max {spread(nums('rounds'), '.0f')}; counter updates spanned "
        f"{spread(nums('updates_spanned'), '.1f')}; {sum(1 for w in wins if w.get('capped_s'))} capped at the "
        f"per-test limit; counter period {spread([x * 1e3 for x in nums('counter_period_s')], '.0f')} ms."
    ]
    if not_ext:
        out.append("Not extended: " + "; ".join(f"{r} ({c})" for r, c in not_ext.most_common(4)))
    return out


def aa_tally(run: dict) -> dict[str, Counter]:
    """Per gated metric: baseline comparisons by status ("would fail" = a warning beyond tolerance and noise)."""
    per: dict[str, Counter] = {}
    for record in run.get("records", []):
        for v in record.get("verdicts", []):
            if v.get("kind") != "baseline" or v.get("metric") == "*":
                continue
            status = v["status"]
            if status == "warn" and v.get("reason") == "beyond_noise":
                status = "would fail"
            elif v.get("reason") == "within_resolution":
                status = "within resolution"
            per.setdefault(v["metric"], Counter())[status] += 1
    return per


def pytest_summary(log: Path) -> str:
    if not log.exists():
        return "no log"
    lines = [ln.strip("= ") for ln in log.read_text(errors="replace").splitlines()]
    hits = [
        ln for ln in lines if re.search(r"\d+ (passed|failed|skipped|error|errors|deselected)\b", ln) and " in " in ln
    ]
    return hits[-1] if hits else (lines[-1][:120] if lines else "empty log")


def junit(path: Path) -> list[str]:
    if not path.exists():
        return ["No junit file (the tests phase did not write one)."]
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    n = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failed, skipped = [], Counter()
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        for child in case:
            if child.tag in ("failure", "error"):
                failed.append(name)
            elif child.tag == "skipped":
                skipped[re.sub(r"\d+", "N", (child.get("message") or "")[:90])] += 1
    gpu_skips = sum(c for msg, c in skipped.items() if re.search(r"cuda|gpu|nvml|nvidia", msg, re.I))
    out = [
        f"Plugin tests: {n['tests']} run, {n['tests'] - n['failures'] - n['errors'] - n['skipped']} passed, "
        f"{n['failures']} failed, {n['errors']} errors, {n['skipped']} skipped ({gpu_skips} of the skips name "
        "CUDA, a GPU or NVML)."
    ]
    if failed:
        out.append("Failed: " + "; ".join(f"`{f}`" for f in failed[:12]) + (" …" if len(failed) > 12 else ""))
    if skipped:
        out.append("Skip reasons: " + "; ".join(f"{m} ({c})" for m, c in skipped.most_common(6)))
    return out


def suite_run_files(d: Path, phases: list[dict]) -> list[Path]:
    """The suite run files (`suites-*.json`) in `d`, in the order the check's `phases` ran them."""
    order = [p["phase"] for p in phases if p["phase"].startswith("suites-")]
    return sorted(d.glob("suites-*.json"), key=lambda f: (order + [f.stem]).index(f.stem))


def section(d: Path) -> tuple[str, str]:
    info = json.loads((d / "phases.json").read_text())
    cpu = info["mode"] == "cpu"
    title = CPU_TITLE if cpu else GPU_TITLE.format(profile=info.get("profile"))
    files = suite_run_files(d, info["phases"])
    runs = {p.stem.removeprefix("suites-"): json.loads(p.read_text()) for p in files}
    fp = next((r["runs"][0]["fingerprint"] for r in runs.values() if r.get("runs")), {})
    pk = fp.get("packages", {})
    where = fp.get("gpu_name") or fp.get("device") or fp.get("cpu_model") or "?"
    smi = d / "nvidia-smi.csv"
    if smi.exists():
        rows = [ln for ln in smi.read_text().splitlines()[1:] if ln and not ln.startswith("$")]
        where = rows[-1] if rows else where
    argv: list[str] = []
    for a in info.get("argv", ["--cpu"] if cpu else []):
        if argv[-1:] == ["--out"]:
            argv.pop()  # where its files went on that machine says nothing here
        elif not a.startswith("--out="):
            argv.append(a)
    cmd = " ".join(["bash benchmarks/gpu_check.sh", *argv])
    lines = [
        title,
        "",
        f"Command: `{cmd}` ({info['started']}; {where}; python {fp.get('python', '?')}, torch {pk.get('torch', '?')}, "
        f"transformers {pk.get('transformers', '?')}); profile `{info.get('profile')}`, `--scale={info['scale']}`, "
        f"budget {info['budget_s']:.0f} s, {info['elapsed_s']:.0f} s in all.",
        "",
    ]
    if cpu:
        lines += [
            "A rehearsal of the GPU check on a CPU, so that device time is not spent on its typos: every phase "
            "runs, the GPU-only ones down their failure paths (no nvidia-smi; `gpu_energy_check.py` exits 2 "
            "without CUDA; energy is the CPU estimate, so no energy window is resolved or flagged), the wheelhouse "
            "installs offline into a scratch folder instead of this environment, and the baselines go to a "
            "temporary folder. Its timings are this CPU's, not a forecast of the GPU's.",
            "",
        ]
    lines += [
        "| phase | exit | wall | timeout | note |",
        "|---|---|---|---|---|",
    ]
    for p in info["phases"]:
        rc = "skipped" if p["rc"] is None else f"{p['rc']}{' (timed out)' if p['timed_out'] else ''}"
        lines.append(f"| {p['phase']} | {rc} | {p['wall_s']:.0f} s | {p['timeout_s']} s | {p['note']} |")
    lines += ["", *junit(d / "tests-junit.xml"), ""]
    if not runs:
        lines.append("No suite run files.")
    else:
        lines += [
            "| suite run | pytest | records | energy resolved / flagged / unavailable / estimated / none |",
            "|---|---|---|---|",
        ]
        reasons: Counter = Counter()
        for name, run in runs.items():
            cls = Counter()
            for rec in run.get("records", []):
                c, note = energy_class(rec)
                cls[c] += 1
                if note:
                    reasons[f"{c}: {note}"] += 1
            lines.append(
                f"| {name} | {pytest_summary(d / f'suites-{name}.log')} | {len(run.get('records', []))} | "
                f"{cls['resolved']} / {cls['flagged']} / {cls['unavailable']} / {cls['estimated']} / {cls['absent']} |"
            )
        lines.append("")
        if reasons:
            lines.append(
                "Energy notes (numbers blanked): " + "; ".join(f"{r} ({c})" for r, c in reasons.most_common(5))
            )
        lines += energy_windows(list(runs.values()))
        lines += throttling(list(runs.values()))
        lines += sampler_cost(list(runs.values()))
        aa = runs.get("aa")
        if aa is not None:
            per = aa_tally(aa)
            total = sum((c for c in per.values()), Counter())
            lines += [
                "",
                f"A/A (the last run against the baselines of the {len(runs) - 1} update run(s) before it; unchanged "
                "code, so every failure is a false alarm):",
                "",
                "| metric | comparisons | failed | would fail (warned beyond tolerance and noise) | other warnings "
                "| improved | beyond tolerance, inside the energy counter's resolution |",
                "|---|---|---|---|---|---|---|",
            ]
            for metric, c in [(m, per.get(m, Counter())) for m in AA_METRICS] + [("all gated", total)]:
                n = sum(c.values())
                rate = f" ({c['fail'] / n:.1%})" if n else ""
                lines.append(
                    f"| {metric} | {n} | {c['fail']}{rate} | {c['would fail']} | {c['warn']} | {c['improved']} "
                    f"| {c['within resolution']} |"
                )
    cross = d / "cross-aa.md"
    if cross.exists():
        lines += ["", cross.read_text(errors="replace").strip()]
    nvml = d / "nvml.md"
    text = nvml.read_text(errors="replace") if nvml.exists() else ""
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and "figure" not in ln]
    lines.append("")
    if rows:
        lines += ["Energy counter vs power integration (`benchmarks/gpu_energy_check.py`):", "", "| figure | value |"]
        lines += ["|---|---|", *rows]
    else:
        body = [ln for ln in text.splitlines() if ln and not ln.startswith("$")]
        lines.append(f"Energy counter vs power integration: not measured ({body[-1] if body else 'no nvml.md'}).")
    return title, "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--write", action="store_true", help="replace the section in benchmarks/RESULTS.md")
    args = parser.parse_args()
    d = files_dir(args.path)
    title, text = section(d)
    out = args.out or d  # the input may be read-only (files fetched from a GPU machine)
    (out / "RESULTS-section.md").write_text(text)
    print(text)
    if args.write:
        replace_section(title, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

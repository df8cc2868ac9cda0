"""Comparison rules: one test's record against its stored baseline, as `Verdict`s.

    verdicts = compare_record(baseline, current, limits=spec.limits, mode="fail")

Pure functions over two `Record`s (the `compare` command compares run files with the
same function). The rules, by the metric's source (docs/gate.md):

* **counted** (bytes, FLOPs, parameters, MCR): exact. Integer counts must be equal; a
  non-integer count (a ratio, a quality score) may differ by `COUNTED_RTOL` (1 ppm), the
  size of float reduction-order differences between thread counts. Checked by default
  for every counted metric with a better-direction; a tolerance on the marker replaces
  exactness ("peak_memory='+1%'"). A count that varies run to run (`core.metrics.varies`:
  its counting runs disagreed, data-dependent shapes) is not checked by default; a
  tolerance gates it. When a counted byte or FLOP metric changes, the message names the
  dtype shift behind it where the `bytes_share:*`/`flops_share:*` metrics show one
  ("bf16 -> fp32: 100% of bytes were bf16, now 0%").
* **measured**: noise-aware. A regression fails only when the change is beyond the
  tolerance *and* the rank-based interval over both runs' raw rounds (`stats`) excludes
  "no change", i.e. it is larger than the noise seen in both runs. A measured metric
  with no per-round samples (a peak, an average) has no noise estimate: its tolerance
  alone decides, and the message says so. The rounds of one run do not show how far a
  run's median moves between processes; a baseline recorded over several runs
  (`Metric.history`) does: the change is then read against the centre of the faster
  half of its runs, and a regression must also fall beyond their prediction bound, the
  jitter moderated across the baseline file's tests (`run_noise`). Checked by
  default at `DEFAULT_MEASURED_TOLERANCE`: on a GPU the latency family (CUDA event
  times); on the CPU the process CPU time per round, because wall-clock time on a shared
  CPU measures the neighbours as much as the work (benchmarks/RESULTS.md). On the CPU
  profile (`GROSS_ONLY`) that default check fails only a **gross** slowdown: one that
  fails by the rule above (put to the vote like any measured failure) and is at least
  the test's gross floor (`gross_floor`): its own 99.9% run-to-run prediction bound,
  and never below `GROSS_MIN`. A smaller one warns. A tolerance from the
  marker, ini or command line (`cpu_time_per_round="+10%"`, `latency="+5%"`) makes
  any slowdown beyond it fail, noise-aware as above.
* **estimated**: never fails; beyond the tolerance it warns.
* A different source on the two sides is never compared; the mismatch is reported.

Fingerprints (docs/gate.md): a different profile or accelerator model is an error (the
numbers belong to other hardware); any other difference (driver, torch, CPU model,
threads) is a warning, and then time-based metrics are compared relative to the
calibration workload each run measured (`calibration`), and the verdict says so.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_efficientllm.core.limits import Limit
from pytest_efficientllm.core.metrics import varies
from pytest_efficientllm.core.record import Metric, Record
from pytest_efficientllm.core.units import format_change, format_value
from pytest_efficientllm.judging.run_noise import (
    PREDICTION,
    RunPrior,
    centre,
    gate_level,
    predict,
    run_medians,
)
from pytest_efficientllm.judging.stats import RatioInterval, ratio_interval, summarize
from pytest_efficientllm.judging.verdicts import Verdict, soften

COUNTED_RTOL = 1e-6
# Counted metrics whose change the dtype mix can explain, and the share family that shows it.
SHARES = {
    "bytes_accessed": ("bytes_share:", "bytes"),
    "allocated_bytes": ("bytes_share:", "bytes"),
    "tensor_peak_bytes": ("bytes_share:", "bytes"),
    "flops": ("flops_share:", "FLOPs"),
}
# The total each share family divides.
TOTALS = {"bytes_share:": "bytes_accessed", "flops_share:": "flops"}
# The least move of a dtype's share (absolute) that a message names as a shift.
SHIFT_MIN = 0.05
DEFAULT_MEASURED_TOLERANCE = 0.05
# Measured peak memory is not among them: on the CPU, VmHWM of the whole process moved -3% to
# +12% between unchanged suite runs (what is resident when a window opens depends on what ran
# before), and the GPU allocator's steadiness is unmeasured (benchmarks/RESULTS.md).
DEFAULT_MEASURED = {"cpu": ("cpu_time_per_round",), "*": ("AL", "TTFT", "TPOT")}
# Profiles whose default-checked times fail only gross slowdowns unless a tolerance is given:
# on a shared 2-core CPU VM a run's median moves by up to +30-70% between processes for
# millisecond workloads, for minutes at a time (benchmarks/RESULTS.md), so across a
# ~100-metric suite a default that failed every confirmed +5% would fail unchanged code in a
# large share of runs.
GROSS_ONLY = ("cpu",)
# The least gross floor. A test's own runs, recorded back to back, do not show how far it
# moves over an hour: unchanged suite tests were confirmed slower by three processes 20 s
# apart at +8% .. +106% (RESULTS.md), and test_prefill[mla] ran +70-81% slower for over
# 20 minutes, in every fresh process, 10 minutes after five baseline runs that agreed
# within 15%. A slowdown of nearly 2x is what this machine's drift has not reached.
GROSS_MIN = 0.90
CONFIDENCE = 0.95
MODES = ("fail", "warn", "off")

# Fingerprint keys (flattened with '.') whose difference means the baseline is for
# other hardware. On the `cpu` profile the CPU *is* the device, but CI runners of one
# kind vary in CPU SKU and calibration corrects for it, so there it is a warning.
DEVICE_KEYS = ("profile", "device_name", "gpu_name", "device_model", "cuda_device_name")
# Not the kind of hardware or software, but which unit of it, or a value measured at
# start-up: two GPUs of one model differ here, and so do two runs on one GPU.
IGNORED_KEYS = (
    "calibration",
    "created",
    "gpu_uuids",
    "cuda_visible_devices",
    "cuda_ordinal",
    "gpu_idle_power_w",
    "nvml_energy_step_mj",
    "nvml_energy_period_s",
    # The GPU's state of the moment at start-up (telemetry.gpu_state): temperature, current
    # clocks, other processes. Its stable facts (locked clocks, power limit, modes) are compared.
    "gpu_preflight",
)


@dataclass(frozen=True)
class FingerprintDiff:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def differs(self) -> bool:
        return bool(self.errors or self.warnings)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if name.split(".")[0] in IGNORED_KEYS:
            continue
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def fingerprint_diff(baseline: dict[str, Any], current: dict[str, Any]) -> FingerprintDiff:
    """Which fingerprint fields differ, split into errors (other hardware) and warnings."""
    b, c = _flatten(baseline), _flatten(current)
    errors: list[str] = []
    warnings: list[str] = []
    for key in sorted(set(b) | set(c)):
        if key not in b or key not in c:
            continue  # a field one version records and the other does not: not a difference
        if b[key] == c[key]:
            continue
        text = f"{key}: {b[key]!r} -> {c[key]!r}"
        (errors if key.rsplit(".", 1)[-1] in DEVICE_KEYS else warnings).append(text)
    return FingerprintDiff(errors, warnings)


def default_measured(profile: str) -> tuple[str, ...]:
    return DEFAULT_MEASURED.get(profile, DEFAULT_MEASURED["*"])


def calibration_key(metric: str) -> str:
    """CPU-time metrics are calibrated by the calibration's CPU time, the rest by its wall time."""
    return "cpu_index_s" if metric.startswith("cpu_time") else "index_s"


def calibration_factor(baseline: Record, current: Record, key: str = "index_s") -> float | None:
    """How much slower this run's machine was than the baseline's (current / baseline), or None."""
    try:
        b = float(baseline.fingerprint["calibration"][key])
        c = float(current.fingerprint["calibration"][key])
    except (KeyError, TypeError, ValueError):
        return None
    return c / b if b > 0 and c > 0 else None


def _time_scaling(unit: str) -> int:
    """+1 for a time (divide by the machine factor), -1 for a rate per second, 0 otherwise."""
    if unit == "s":
        return 1
    if unit.endswith("/s"):
        return -1
    return 0


def tolerances(limits: Iterable[Limit]) -> dict[str, float]:
    # The sign of "+5%" is informative only: a tolerance always applies in the metric's
    # worse direction (slower, bigger, lower throughput).
    return {limit.metric: abs(limit.relative) for limit in limits if limit.kind == "tolerance"}


def _shown(metric: Metric, value: float, n: int | None = None) -> str:
    text = format_value(value, metric.unit)
    return f"{text} n={n}" if n else text


def beyond_tolerance(change: float, direction: str, tol: float) -> tuple[bool, bool]:
    """(worse, better): is the ratio current/baseline = 1 + change beyond the tolerance?

    Judged on the ratio's logarithm, so swapping the two runs mirrors the verdict: "+5%"
    means a ratio above 1.05 is worse and one below 1/1.05 is better (lower-is-better
    metrics; the other way round for higher-is-better).
    """
    ratio = 1 + change
    bound = 1 + tol
    up = ratio > bound
    down = ratio < 1 / bound if ratio > 0 else True
    return (up, down) if direction == "lower" else (down, up)


def dtype_shift(baseline: Record, current: Record, name: str) -> str:
    """The dtype shift behind a change of a counted byte or FLOP metric, from the share metrics of
    both records: "bf16 -> fp32: 97% of bytes were bf16, now 0%"; "" when none shows one."""
    if name not in SHARES:
        return ""
    prefix, what = SHARES[name]

    def shares(record: Record) -> dict[str, float]:
        return {
            n[len(prefix) :]: float(m.value)
            for n, m in record.metrics.items()
            if n.startswith(prefix) and m.value is not None
        }

    b, c = shares(baseline), shares(current)
    if not b or not c:
        return ""
    moved = {d: c.get(d, 0.0) - b.get(d, 0.0) for d in sorted(set(b) | set(c))}
    lost = min(moved, key=lambda d: moved[d])
    gained = max(moved, key=lambda d: moved[d])
    if moved[lost] > -SHIFT_MIN or moved[gained] < SHIFT_MIN:
        return ""
    # A share also falls when other dtypes' work grows around it (an fp32 adapter path, a
    # recomputation in fp32): a shift is the cause only where the lost dtype's own work fell.
    total = TOTALS[prefix]
    b_total, c_total = baseline.metrics.get(total), current.metrics.get(total)
    if b_total is None or c_total is None or b_total.value is None or c_total.value is None:
        return ""
    if c.get(lost, 0.0) * float(c_total.value) >= b.get(lost, 0.0) * float(b_total.value):
        return ""
    return f"{lost} -> {gained}: {b.get(lost, 0.0):.0%} of {what} were {lost}, now {c.get(lost, 0.0):.0%}"


def compare_counted(name: str, base: Metric, cur: Metric, tol: float | None, shift: str = "") -> Verdict:
    b, c = float(base.value), float(cur.value)  # type: ignore[arg-type]
    change = c / b - 1 if b else (0.0 if c == b else float("inf"))
    sign = 1 if cur.direction == "lower" else -1
    if tol is None:
        integral = b.is_integer() and c.is_integer()
        same = b == c if integral else abs(c - b) <= COUNTED_RTOL * max(abs(b), abs(c))
        rule = "exact" if integral else f"within {COUNTED_RTOL:g} relative"
        worse, better = (not same and change * sign > 0), (not same and change * sign < 0)
    else:
        rule = f"tolerance {tol * 100:+.4g}%"
        worse, better = beyond_tolerance(change, cur.direction, tol)
    numbers = f"{_shown(cur, c)} vs baseline {_shown(base, b)} ({format_change(change)}; counted, {rule})"
    why = f" ({shift})" if shift and c != b else ""
    if worse:
        return Verdict(name, "fail", f"{numbers}: regression{why}", "baseline", change)
    if better:
        return Verdict(name, "improved", f"{numbers}: better{why}; refresh with --update-baselines", "baseline", change)
    return Verdict(name, "pass", numbers + why, "baseline", change)


def _compare_measured(
    name: str,
    base: Metric,
    cur: Metric,
    tol: float,
    factor: float | None,
    prior: RunPrior | None = None,
    level: float = PREDICTION,
    rounds_may_be_few: bool = False,
) -> Verdict:
    """`rounds_may_be_few`: when the rounds are too few for the rank interval, judge by the
    run-to-run bound alone instead of warning (the gross check, which a floor and the vote guard)."""
    scale = _time_scaling(cur.unit)
    # Calibrated: the current run's values as if measured on the baseline's machine.
    adjust = factor ** (-scale) if factor is not None and scale else 1.0
    calibrated = " calibrated" if adjust != 1.0 else ""
    b_samples = [x for x in base.samples if x > 0]
    c_samples = [x * adjust for x in cur.samples if x > 0]
    word = "slower" if cur.unit == "s" else "worse"
    better_word = "faster" if cur.unit == "s" else "better"
    runs = run_medians(base) if b_samples else []
    if b_samples and c_samples:
        # The baseline's rounds moved to the centre of its runs: they tell the spread of one
        # run's rounds, the runs tell where unchanged code lands (`run_noise`).
        b_med, c_med = centre(runs, base.direction), summarize(c_samples).median
        shift = b_med / summarize(b_samples).median
        iv: RatioInterval | None = ratio_interval([x * shift for x in b_samples], c_samples, CONFIDENCE)
    else:
        b_med, c_med, iv = float(base.value), float(cur.value) * adjust, None  # type: ignore[arg-type]
    change = c_med / b_med - 1 if b_med else 0.0
    of_runs = f", centre of {len(runs)} runs" if len(runs) > 1 else ""
    numbers = (
        f"{_shown(cur, c_med, len(c_samples))}{calibrated} vs baseline {_shown(base, b_med, len(b_samples))}"
        f"{of_runs} ({format_change(change)}"
    )
    if iv is not None and iv.resolved:
        numbers += f", {iv.confidence:.0%} interval {format_change(iv.low - 1)} .. {format_change(iv.high - 1)}"  # type: ignore[operator]
    numbers += f"; tolerance {tol * 100:+.4g}%)"
    worse, better = beyond_tolerance(change, cur.direction, tol)
    if not (worse or better):
        return Verdict(name, "pass", numbers, "baseline", change)
    if iv is None:
        # A single value per run: no spread to estimate noise from, so the tolerance decides.
        if worse:
            return Verdict(
                name,
                "fail",
                f"{numbers}: {word} beyond tolerance (one value per run: no noise estimate)",
                "baseline",
                change,
            )
        return Verdict(
            name,
            "improved",
            f"{numbers}: {better_word} by {abs(change):.0%}; refresh with --update-baselines",
            "baseline",
            change,
        )
    if not iv.resolved and not (rounds_may_be_few and worse):
        return Verdict(name, "warn", f"{numbers}: beyond tolerance, but {iv.why}", "baseline", change)
    if not iv.resolved:
        numbers += f" (rounds too few for an interval: {iv.n_baseline} and {iv.n_current}; judged by the runs)"
    beyond_noise = not iv.resolved or ((iv.low > 1.0) if change > 0 else (iv.high < 1.0))  # type: ignore[operator]
    if not beyond_noise:
        return Verdict(
            name, "pass", f"{numbers}: beyond tolerance but within the noise of the two runs", "baseline", change
        )
    if worse:
        prediction = predict(runs, prior, base.unit, base.direction, level)
        bound = prediction.bound(base.direction) if prediction is not None else None
        within = bound is not None and not (c_med > bound if base.direction == "lower" else c_med < bound)
        if prediction is not None and within:
            return Verdict(
                name,
                "pass",
                f"{numbers}: beyond tolerance but within the run-to-run noise of {prediction.describe(base.direction)}",
                "baseline",
                change,
            )
        how = (
            f" and the run-to-run noise of {prediction.describe(base.direction)}"
            if prediction is not None
            else f" (baseline of {len(runs)} run{'s' if len(runs) != 1 else ''}: run-to-run noise unknown; record it "
            "again with --update-baselines to learn it)"
        )
        return Verdict(name, "fail", f"{numbers}: {word} beyond tolerance and noise{how}", "baseline", change)
    return Verdict(
        name,
        "improved",
        f"{numbers}: {better_word} by {abs(change):.0%}; refresh with --update-baselines",
        "baseline",
        change,
    )


def gross_floor(base: Metric, prior: RunPrior | None = None) -> tuple[float, str]:
    """The least slowdown (ratio - 1) the CPU profile's default check fails, and how it was set.

    The test's own 99.9% prediction bound for one more run of unchanged code (`run_noise`),
    relative to the centre of its runs (what its own noise lets through once in a thousand
    processes), and never below `GROSS_MIN` (what the machine's drift reached).
    """
    prediction = predict(run_medians(base), prior, base.unit, base.direction, PREDICTION)
    if prediction is None:
        return GROSS_MIN, f"{GROSS_MIN:+.0%}: the baseline's runs show no run-to-run noise of the test's own"
    bound = prediction.bound(base.direction)
    own = bound / prediction.centre - 1 if base.direction == "lower" else prediction.centre / bound - 1
    if own >= GROSS_MIN:
        return own, f"this test's 99.9% run-to-run bound, {own * 100:+.0f}%"
    return GROSS_MIN, f"this test's 99.9% run-to-run bound, {own * 100:+.0f}%, raised to the least, {GROSS_MIN:+.0%}"


def _gross_or_warn(verdict: Verdict, base: Metric, prior: RunPrior | None, profile: str) -> Verdict:
    """A failing default check on a `GROSS_ONLY` profile: it stays a failure only when gross."""
    floor, how = gross_floor(base, prior)
    change = verdict.change or 0.0
    if base.direction == "lower":
        worse = change
    else:
        worse = 1 / (1 + change) - 1 if change > -1 else math.inf
    if worse >= floor:
        gross = f"{verdict.message}; gross: at least the floor of +{floor:.0%} ({how})"
        return dataclasses.replace(verdict, message=gross)
    return Verdict(
        verdict.metric,
        "warn",
        f"{verdict.message} (default check on the {profile} profile: below the gross floor of +{floor:.0%} "
        f"({how}), so it warns; give {verdict.metric} a tolerance to fail on smaller slowdowns)",
        "baseline",
        verdict.change,
    )


def compare_record(
    baseline: Record,
    current: Record,
    limits: Iterable[Limit] = (),
    mode: str = "fail",
    run_priors: Mapping[str, RunPrior] | None = None,
    processes: int = 1,
) -> list[Verdict]:
    """Verdicts of `current` against `baseline` under the tolerances in `limits`.

    `limits` may hold budgets too (checked elsewhere, `verdicts.check_budgets`); only the
    tolerances are read here. `mode`: `fail` (regressions fail), `warn` (they warn),
    `off` (no comparison). `run_priors`: the run-to-run spread the baseline's file shares
    per metric (`run_noise.pool`, `BaselineStore.run_priors`). `processes`: how many
    processes must all find a measured regression before it fails (`confirm`); each one's
    run-to-run bound is drawn at `run_noise.gate_level(processes)`.
    """
    if mode not in MODES:
        raise ValueError(f"gate mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "off":
        return []
    verdicts = _compare(baseline, current, tolerances(limits), run_priors or {}, gate_level(processes))
    return soften(verdicts) if mode == "warn" else verdicts


def _compare(
    baseline: Record,
    current: Record,
    tolerances: dict[str, float],
    run_priors: Mapping[str, RunPrior],
    voted_level: float,
) -> list[Verdict]:
    fp = fingerprint_diff(baseline.fingerprint, current.fingerprint)
    if baseline.profile != current.profile:
        fp.errors.insert(0, f"profile: {baseline.profile!r} -> {current.profile!r}")
    if fp.errors:
        return [
            Verdict(
                "*",
                "error",
                "baseline was measured on other hardware ("
                + "; ".join(fp.errors)
                + "): record one for this hardware with --update-baselines, or point --baselines-dir elsewhere",
                "fingerprint",
            )
        ]
    out: list[Verdict] = []
    calibrate = False
    factor = None
    if fp.warnings:
        calibrate = True
        factor = calibration_factor(baseline, current)
        how = (
            f"times compared relative to the calibration workload (this machine x{factor:.3f} the baseline's)"
            if factor is not None
            else "no calibration on both sides, times compared raw"
        )
        out.append(
            Verdict(
                "*",
                "warn",
                "fingerprint differs from the baseline's (" + "; ".join(fp.warnings) + f"); {how}",
                "fingerprint",
            )
        )
    for name in sorted(set(current.metrics) | set(tolerances)):
        cur = current.metrics.get(name)
        base = baseline.metrics.get(name)
        tol = tolerances.get(name)
        if cur is None:
            assert tol is not None  # a name this test did not record comes from the tolerances
            out.append(
                Verdict(
                    name, "skipped", f"tolerance {tol * 100:+.4g}% not checked: not recorded by this test", "baseline"
                )
            )
            continue
        default_gated = (cur.source == "counted" and cur.direction != "info") or (
            cur.source == "measured" and name in default_measured(current.profile)
        )
        if tol is None and not default_gated:
            continue
        if base is None:
            out.append(Verdict(name, "new", "no baseline value for this metric yet", "baseline"))
            continue
        if base.value is None or cur.value is None:
            side = "baseline" if base.value is None else "this run"
            note = (base.note if base.value is None else cur.note) or "unavailable"
            out.append(Verdict(name, "skipped", f"not compared: unavailable in the {side} ({note})", "baseline"))
            continue
        if base.source != cur.source:
            out.append(
                Verdict(
                    name,
                    "warn",
                    f"not compared: baseline is {base.source} ({base.method}), this run is {cur.source} ({cur.method})",
                    "source",
                )
            )
            continue
        metric_factor = calibration_factor(baseline, current, calibration_key(name)) if calibrate else None
        if cur.source == "counted" and tol is None and (varies(cur) or varies(base)):
            where, runs = ("this run", cur) if varies(cur) else ("the baseline", base)
            values = ", ".join(format_value(v, runs.unit) for v in runs.samples)
            out.append(
                Verdict(
                    name,
                    "skipped",
                    f"not gated exactly: the count varies run to run ({values} in the counting runs of {where}); "
                    f"give {name} a tolerance to gate it",
                    "baseline",
                )
            )
            continue
        if cur.source == "counted":
            out.append(compare_counted(name, base, cur, tol, dtype_shift(baseline, current, name)))
        elif cur.source == "measured":
            gross_only = tol is None and current.profile in GROSS_ONLY
            verdict = _compare_measured(
                name,
                base,
                cur,
                DEFAULT_MEASURED_TOLERANCE if tol is None else tol,
                metric_factor,
                run_priors.get(name),
                voted_level,
                rounds_may_be_few=gross_only,
            )
            if gross_only and verdict.failed:
                verdict = _gross_or_warn(verdict, base, run_priors.get(name), current.profile)
            out.append(verdict)
        else:
            verdict = _compare_measured(name, base, cur, tol, metric_factor, run_priors.get(name))  # type: ignore[arg-type]
            if verdict.status == "fail":
                verdict = Verdict(
                    name, "warn", verdict.message + " (estimated: never fails)", "baseline", verdict.change
                )
            out.append(verdict)
    return out

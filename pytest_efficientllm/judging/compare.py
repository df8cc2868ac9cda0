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
  dtype shift behind it (`dtype_shift`): "bf16 -> fp32: 100% of bytes were bf16, now 0%".
* **measured**: noise-aware. A regression fails only when the change is beyond the
  tolerance *and* the rank-based interval over both runs' raw rounds (`stats`) excludes
  "no change", i.e. it is larger than the noise seen in both runs. A measured metric
  with no per-round samples (a peak, an average) has no noise estimate: its tolerance
  alone decides, and the message says so. The rounds of one run do not show how far a
  run's median moves between processes; a baseline recorded over several runs
  (`Metric.history`) does: the change is then read against the centre of the faster
  half of its runs, and a regression must also fall beyond their prediction bound, the
  jitter moderated across the baseline file's tests (`run_noise`). An energy value from
  a counter that advances in steps (NVML's) is also no evidence of a change inside what two
  windows of its recorded quantisation can read with nothing changed (`energy_resolution`). Checked by
  default at `DEFAULT_MEASURED_TOLERANCE`: on a GPU the latency family (CUDA event
  times); on the CPU the process CPU time per round, because wall-clock time on a shared
  CPU measures the neighbours as much as the work (benchmarks/RESULTS.md). On the CPU
  profile that default check fails only a **gross** slowdown (`gross`); a smaller one
  warns. A tolerance from the marker, ini or command line (`cpu_time_per_round="+10%"`,
  `latency="+5%"`) makes any slowdown beyond it fail, noise-aware as above.
* **estimated**: never fails; beyond the tolerance it warns.
* A different source on the two sides is never compared; the mismatch is reported.

Before any metric, the fingerprints (`fingerprint`): a baseline of other hardware is an
error; any other difference a warning, with times then compared through the calibration.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence

from pytest_efficientllm.core.limits import Limit
from pytest_efficientllm.core.metrics import varies
from pytest_efficientllm.core.record import Metric, Record
from pytest_efficientllm.core.units import format_change, format_value
from pytest_efficientllm.judging.dtype_shift import dtype_shift
from pytest_efficientllm.judging.energy_resolution import UnchangedRange, unchanged_range
from pytest_efficientllm.judging.fingerprint import calibrates, calibration_factor, calibration_key, fingerprint_diff
from pytest_efficientllm.judging.gross import GROSS_ONLY, gross_or_warn
from pytest_efficientllm.judging.run_noise import (
    PREDICTION,
    RunPrior,
    centre,
    gate_level,
    predict,
    run_medians,
)
from pytest_efficientllm.judging.stats import RatioInterval, ratio_interval, summarize
from pytest_efficientllm.judging.verdicts import FingerprintFinding, Reason, Status, Verdict, soften
from pytest_efficientllm.judging.workload import workload_changes

COUNTED_RTOL = 1e-6
DEFAULT_MEASURED_TOLERANCE = 0.05
# Measured peak memory is not among them: on the CPU, VmHWM of the whole process moved -3% to
# +12% between unchanged suite runs (what is resident when a window opens depends on what ran
# before), and the GPU allocator's steadiness is unmeasured (benchmarks/RESULTS.md).
DEFAULT_MEASURED = {"cpu": ("cpu_time_per_round",), "*": ("AL", "TTFT", "TPOT")}
CONFIDENCE = 0.95
MODES = ("fail", "warn", "off")


def default_measured(profile: str) -> tuple[str, ...]:
    return DEFAULT_MEASURED.get(profile, DEFAULT_MEASURED["*"])


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


def _counted_numbers(
    base: Metric, cur: Metric, b: float, c: float, change: float, integral: bool
) -> tuple[str, str, str]:
    """The two values and their change, as the message shows them.

    Rounded for display, two different counts can read alike ("3.020e+08 FLOP vs baseline
    3.020e+08 FLOP"), which hides what failed: then they are shown whole, with their difference."""
    cur_text, base_text, change_text = _shown(cur, c), _shown(base, b), format_change(change)
    if c == b or math.isinf(change) or cur_text != base_text:
        return cur_text, base_text, change_text

    def whole(text: str) -> str:
        return f"{text} {cur.unit}".rstrip()  # a count may have no unit

    if integral:
        return whole(f"{c:,.0f}"), whole(f"{b:,.0f}"), f"{whole(f'{c - b:+,.0f}')}, {change_text}"
    return whole(f"{c:.7g}"), whole(f"{b:.7g}"), change_text


def compare_counted(
    name: str,
    base: Metric,
    cur: Metric,
    tol: float | None,
    shift: str = "",
    packages: Sequence[str] = (),
    settings: Sequence[str] = (),
    *,
    against: str = "baseline",
    cpu: str = "",
) -> Verdict:
    """The counted rule. `shift`: the dtype shift the two records show; `packages`: the package
    versions that differ between the two fingerprints ("torch 2.13.0 -> 2.11.0"), named with a
    changed count because a library upgrade changes what a model counts; `settings`: the test's
    declared settings that differ ("hidden 64 -> 256", `workload.workload_changes`), named because
    another workload counts otherwise. `against`: what `base` is, "baseline" (a stored one, which
    --update-baselines refreshes) or another run's side, such as `ab`'s "base". `cpu`: the CPU
    models, where the figure was computed on the CPU and they differ ("AMD EPYC -> Intel Xeon")."""
    b, c = float(base.value), float(cur.value)  # type: ignore[arg-type]
    change = c / b - 1 if b else (0.0 if c == b else float("inf"))
    sign = 1 if cur.direction == "lower" else -1
    integral = b.is_integer() and c.is_integer()
    if tol is None:
        same = b == c if integral else abs(c - b) <= COUNTED_RTOL * max(abs(b), abs(c))
        rule = "exact" if integral else f"within {COUNTED_RTOL:g} relative"
        worse, better = (not same and change * sign > 0), (not same and change * sign < 0)
    else:
        rule = f"tolerance {tol * 100:+.4g}%"
        worse, better = beyond_tolerance(change, cur.direction, tol)
    cur_text, base_text, change_text = _counted_numbers(base, cur, b, c, change, integral)
    numbers = f"{cur_text} vs {against} {base_text} ({change_text}; counted, {rule})"
    if cpu and tol is None and not integral and (worse or better):
        # A perplexity or a loss is exact on one CPU, but another CPU's kernels (AMX against
        # AVX-512, another blocking) round otherwise: AMD EPYC -> Intel Xeon moved perplexities
        # by 0.09% and one KL by 1.4% (benchmarks/RESULTS.md). Hosted runners of one kind mix
        # both, so neither a failure nor an improvement can be told from that.
        return Verdict(
            name,
            "warn",
            f"{numbers}: not gated exactly: computed on another CPU ({cpu}), whose floating-point kernels "
            f"round otherwise; give it a tolerance to gate it across CPUs (e.g. --efficiency-limit {name}=+1%), "
            "or record baselines on this CPU",
            "baseline",
            change,
            reason="other_cpu",
        )
    why = f" ({shift})" if shift and c != b else ""
    causes = []
    if settings:
        causes.append(f"the test's settings differ from the baseline's ({', '.join(settings)})")
    if packages:
        causes.append(f"package versions differ from the baseline's ({', '.join(packages)})")
    noted = "".join(f"; {cause}" for cause in causes)
    if worse:
        if noted:
            why += f"{noted}: if that change is meant, record the baselines again with --update-baselines"
        return Verdict(name, "fail", f"{numbers}: regression{why}", "baseline", change, reason="counted_regression")
    if better:
        why += noted
        refresh = "; refresh with --update-baselines" if against == "baseline" else ""
        return Verdict(
            name, "improved", f"{numbers}: better{why}{refresh}", "baseline", change, reason="counted_better"
        )
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
    resolution: UnchangedRange | None = None,
) -> Verdict:
    """`rounds_may_be_few`: when the rounds are too few for the rank interval, judge by the
    run-to-run bound alone instead of warning (the gross check, which a floor and the vote guard).
    `resolution`: the ratios current / baseline the instrument can read with nothing changed
    (`energy_resolution`); a change inside them is no evidence of one."""
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
    interval = (iv.low - 1, iv.high - 1) if iv is not None and iv.resolved else None  # type: ignore[operator]

    def judged(status: Status, message: str, reason: Reason = "") -> Verdict:
        return Verdict(name, status, message, "baseline", change, interval, reason=reason)

    worse, better = beyond_tolerance(change, cur.direction, tol)
    if not (worse or better):
        return judged("pass", numbers)
    if resolution is not None and resolution.holds(1 + change):
        return judged(
            "pass",
            f"{numbers}: beyond tolerance but within the energy counter's resolution ({resolution.why}: "
            f"{format_change(resolution.low - 1)} .. {format_change(resolution.high - 1)} with nothing changed)",
            "within_resolution",
        )
    if iv is None:
        # A single value per run: no spread to estimate noise from, so the tolerance decides.
        if worse:
            return judged(
                "fail",
                f"{numbers}: {word} beyond tolerance (one value per run: no noise estimate)",
                "one_value",
            )
        return judged(
            "improved",
            f"{numbers}: {better_word} by {abs(change):.0%}; refresh with --update-baselines",
            "better",
        )
    if not iv.resolved and not (rounds_may_be_few and worse):
        return judged("warn", f"{numbers}: beyond tolerance, but {iv.why}", "too_few_rounds")
    if not iv.resolved:
        numbers += f" (rounds too few for an interval: {iv.n_baseline} and {iv.n_current}; judged by the runs)"
    beyond_noise = not iv.resolved or ((iv.low > 1.0) if change > 0 else (iv.high < 1.0))  # type: ignore[operator]
    if not beyond_noise:
        return judged("pass", f"{numbers}: beyond tolerance but within the noise of the two runs", "within_noise")
    if worse:
        prediction = predict(runs, prior, base.unit, base.direction, level)
        bound = prediction.bound(base.direction) if prediction is not None else None
        within = bound is not None and not (c_med > bound if base.direction == "lower" else c_med < bound)
        if prediction is not None and within:
            return judged(
                "pass",
                f"{numbers}: beyond tolerance but within the run-to-run noise of {prediction.describe(base.direction)}",
                "within_noise",
            )
        how = (
            f" and the run-to-run noise of {prediction.describe(base.direction)}"
            if prediction is not None
            else f" (baseline of {len(runs)} run{'s' if len(runs) != 1 else ''}: run-to-run noise unknown; record it "
            "again with --update-baselines to learn it)"
        )
        return judged("fail", f"{numbers}: {word} beyond tolerance and noise{how}", "beyond_noise")
    return judged(
        "improved",
        f"{numbers}: {better_word} by {abs(change):.0%}; refresh with --update-baselines",
        "better",
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


def times_compared(on_cpu: bool, calibrate: bool, ratio: str | None) -> str:
    """How a test's times were compared where its fingerprint differs. `ratio`: this machine's
    calibration time against the baseline's, as shown ("x1.020 the baseline's"), or None where
    either side has no calibration."""
    if not calibrate:
        return f"times compared raw (the {'CPU' if on_cpu else 'host CPU'} is the baseline's)"
    if ratio is None:
        return "no calibration on both sides, times compared raw"
    what = "times" if on_cpu else "the host's CPU times (the GPU's raw)"
    return f"{what} compared relative to the calibration workload (this machine {ratio})"


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
                reason="other_hardware",
                fingerprint=FingerprintFinding(tuple(fp.errors)),
            )
        ]
    settings_changed = workload_changes(baseline.settings, current.settings)
    out: list[Verdict] = []
    calibrate = fp.calibrate
    if fp.warnings:
        on_cpu = current.profile == "cpu"
        factor = calibration_factor(baseline, current, "index_s" if on_cpu else "cpu_index_s") if calibrate else None
        how = times_compared(on_cpu, calibrate, None if factor is None else f"x{factor:.3f} the baseline's")
        out.append(
            Verdict(
                "*",
                "warn",
                "fingerprint differs from the baseline's (" + "; ".join(fp.warnings) + f"); {how}",
                "fingerprint",
                reason="fingerprint_differs",
                fingerprint=FingerprintFinding(tuple(fp.warnings), how, factor),
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
            side = "the baseline" if base.value is None else "this run"
            note = (base.note if base.value is None else cur.note) or "unavailable"
            out.append(Verdict(name, "skipped", f"not compared: unavailable in {side} ({note})", "baseline"))
            continue
        if base.source != cur.source:
            out.append(
                Verdict(
                    name,
                    "warn",
                    f"not compared: baseline is {base.source} ({base.method}), this run is {cur.source} ({cur.method})",
                    "source",
                    reason="source_differs",
                )
            )
            continue
        calibrated = calibrate and calibrates(current.profile, name)
        metric_factor = calibration_factor(baseline, current, calibration_key(name)) if calibrated else None
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
            shift = dtype_shift(baseline, current, name)
            cpu = fp.cpu if current.profile == "cpu" else ""  # on a GPU profile the GPU computed it
            out.append(compare_counted(name, base, cur, tol, shift, fp.packages, settings_changed, cpu=cpu))
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
                resolution=unchanged_range(baseline, current, name),
            )
            if gross_only and verdict.failed:
                verdict = gross_or_warn(verdict, base, run_priors.get(name), current.profile)
            out.append(verdict)
        else:
            verdict = _compare_measured(name, base, cur, tol, metric_factor, run_priors.get(name))  # type: ignore[arg-type]
            if verdict.status == "fail":
                never = verdict.message + " (estimated: never fails)"
                verdict = dataclasses.replace(verdict, status="warn", message=never, softened="estimate")
            out.append(verdict)
    return out

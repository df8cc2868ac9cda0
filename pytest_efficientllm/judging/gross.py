"""The CPU profile's default time check fails only gross slowdowns; a smaller one warns.

On a shared CPU a run's median moves between processes by tens of percent for minutes at a
time, so failing every confirmed +5% would fail unchanged code in a large share of runs. A
slowdown that fails the measured rule (`compare`) stays a failure on a `GROSS_ONLY` profile
only when it reaches the test's gross floor (`gross_floor`); a tolerance given on the
marker, ini or command line bypasses this and fails any slowdown beyond it. A gross
failure that every process of the vote confirmed becomes a warning where the drift of the
run as a whole explains every process's reading (`apart_from_run`, with the run's shift
from `run_shift`): a test that moved with the machine, not on its own.
"""

from __future__ import annotations

import dataclasses
import math

from pytest_efficientllm.core.record import Metric
from pytest_efficientllm.judging.run_noise import PREDICTION, RunPrior, predict, run_medians
from pytest_efficientllm.judging.run_shift import RunShift
from pytest_efficientllm.judging.verdicts import Verdict

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
# The most gross floor. A test's own bound from a few runs alone lies tens of standard
# deviations out (three runs: Student's t at 99.9% is 22.3), so a test whose three runs lay
# within 10% of each other read a floor of +308% and a tripled time only warned. No unchanged
# run on this machine came near a tripling: over the 85 A/A suite runs whose every reading was
# kept, the largest first-process reading was +144% (RESULTS.md), and the vote asks every
# fresh process too.
GROSS_MAX = 2.0


def gross_floor(base: Metric, prior: RunPrior | None = None) -> tuple[float, str]:
    """The least slowdown (ratio - 1) the CPU profile's default check fails, and how it was set.

    The test's own 99.9% prediction bound for one more run of unchanged code (`run_noise`),
    relative to the centre of its runs (what its own noise lets through once in a thousand
    processes), never below `GROSS_MIN` (what the machine's drift reached) and never above
    `GROSS_MAX` (what no unchanged run came near).
    """
    prediction = predict(run_medians(base), prior, base.unit, base.direction, PREDICTION)
    if prediction is None:
        return GROSS_MIN, f"{GROSS_MIN:+.0%}: the baseline's runs show no run-to-run noise of the test's own"
    bound = prediction.bound(base.direction)
    own = bound / prediction.centre - 1 if base.direction == "lower" else prediction.centre / bound - 1
    shown = f"{own * 100:+.0f}%" if math.isfinite(own) else "unbounded"
    if own >= GROSS_MIN:
        floor = min(own, GROSS_MAX)
        held = f", held to the most, {GROSS_MAX:+.0%}" if own > GROSS_MAX else ""
        if not prediction.pooled:
            # A few runs' spread alone sits tens of standard deviations out at 99.9%: say what narrows it.
            return floor, (
                f"this test's 99.9% run-to-run bound from its {prediction.runs} baseline runs alone, "
                f"{shown}{held}: more --update-baselines runs, or 3 or more tests whose baselines "
                "share the spread, narrow it"
            )
        return floor, f"this test's 99.9% run-to-run bound, {shown}{held}"
    return GROSS_MIN, f"this test's 99.9% run-to-run bound, {shown}, raised to the least, {GROSS_MIN:+.0%}"


def _worse(change: float, direction: str) -> float:
    """A change as a slowdown (ratio - 1, above 0 when worse), whichever way the metric is better."""
    if direction == "lower":
        return change
    return 1 / (1 + change) - 1 if change > -1 else math.inf


def gross_or_warn(verdict: Verdict, base: Metric, prior: RunPrior | None, profile: str) -> Verdict:
    """A failing default check on a `GROSS_ONLY` profile: it stays a failure only when gross."""
    floor, how = gross_floor(base, prior)
    worse = _worse(verdict.change or 0.0, base.direction)
    if worse >= floor:
        gross = f"{verdict.message}; gross: at least the floor of +{floor:.0%} ({how})"
        return dataclasses.replace(verdict, message=gross)
    return dataclasses.replace(
        verdict,
        status="warn",
        softened="gross_floor",
        message=f"{verdict.message} (default check on the {profile} profile: below the gross floor of "
        f"+{floor:.0%} ({how}), so it warns; give {verdict.metric} a tolerance to fail on smaller slowdowns)",
    )


def apart_from_run(verdict: Verdict, base: Metric, prior: RunPrior | None, shift: RunShift, profile: str) -> Verdict:
    """A gross failure of the default check that every process of the vote confirmed (its
    `readings`: each one's change, this process's first), judged once more against the run's own `shift`.

    It becomes a warning only where the run's drift explains every reading: each one within the
    floor of the shift. One process beyond that keeps the failure: the shift is the run's, and a
    process in which this test drifted less than the run (a quick spell for it here, or a fresh
    process) reads its slowdown too low once divided by it. Requiring every reading beyond
    instead cleared 3 to 5 of 16 tests slowed x2 in a drifting run (benchmarks/RESULTS.md). A
    run that did not slow down, or whose quartile is itself at the floor or beyond (every test
    gross: no drift this machine has shown), takes nothing out.
    """
    floor, how = gross_floor(base, prior)
    run = _worse(shift.change, base.direction)
    if not 0 < run < floor or not verdict.readings:
        return verdict
    own = max((1 + _worse(c, base.direction)) / (1 + run) - 1 for c in verdict.readings)
    said = f"the run as a whole moved too ({shift.describe()}): {own * 100:+.0f}% of the test's own at the most"
    if own >= floor:
        return dataclasses.replace(verdict, message=f"{verdict.message}; {said}, still gross")
    return dataclasses.replace(
        verdict,
        status="warn",
        softened="run_moved",
        message=f"{verdict.message}; {said}, below the gross floor of +{floor:.0%} ({how}), so it warns "
        f"(default check on the {profile} profile; give {verdict.metric} a tolerance to fail on smaller slowdowns)",
    )

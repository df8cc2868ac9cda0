"""How far a run's median moves between processes, learnt from a baseline's runs.

The rounds of one run cannot show it: on a shared VM a process's tests run at the
machine's speed most of the time, with slow spells of 10-100% that last seconds and hit
some tests of some processes (benchmarks/RESULTS.md). A baseline recorded over several
runs keeps each run's median (`Metric.history` plus its own rounds' median). The noise
model is a floor plus slow spells: nothing on a shared machine makes the work faster
than the machine can do it, so the faster runs describe the code and the slow ones the
neighbours. Hence, from the **faster half** of the runs (the fastest k//2 + 1 of k):

* **the centre**: their median. Up to half the runs in a slow spell do not move it (in
  one recording here, 3 of a test's 5 runs ran 20% slow: the median of all five read a
  +20% regression as -0.2%); for runs that only jitter it lies ~0.3-0.5 standard
  deviations below the mean (`FASTER_HALF`), which the bound accounts for.
* **the jitter**: their variance, scaled to the variance of all runs had they only
  jittered (normal jitter; the factors of `FASTER_HALF`, checked by simulation in the
  tests), so slow spells do not inflate it. Three to five runs give a variance with
  1-2 degrees of freedom, and a 99.9% Student-t bound on it sits tens of standard
  deviations out; so the variances of the measured metrics of one name in one baseline
  file (or, where too few of its tests have runs, in the profile's files) are moderated
  by the empirical-Bayes method of Smyth (2004, "Linear models and empirical Bayes
  methods for assessing differential expression", limma's `squeezeVar`):
  a prior variance s0² with d0 degrees of freedom is estimated from the spread of the
  tests' log-variances, and each test's variance is shrunk towards it,
  s̃² = (d0·s0² + d·s²)/(d0 + d) with d0 + d degrees of freedom. A test whose runs
  truly jitter more than its file's keeps most of its own variance.
* **the prediction bound** for one more run of unchanged code on the log scale: the new
  run minus the centre has mean -b·s̃ and standard deviation s̃·sqrt(1 + c²) (b, c: the
  centre's mean and spread in jitter units, `FASTER_HALF`), so the bounds are
  centre · exp(s̃ · (-b ± t·sqrt(1 + c²))), t from Student's t at a one-sided level
  with the moderated degrees of freedom.
* **the level**: `PREDICTION` (99.9%) is the share of unchanged metrics the gate must
  pass. A regression fails only when every one of m processes finds it (the run that
  measured it and the fresh ones that confirm it, `confirm`), so each process's bound
  is drawn at 1 - (1 - PREDICTION)^(1/m) (`gate_level`; 90% for m = 3): were the
  processes independent draws, the m of them together would pass unchanged code as
  often as one process at 99.9%. They are spaced apart in time so that they come closer
  to that. Where one process decides alone (no confirmation, a check that only warns,
  a baseline update) the level is `PREDICTION` itself.

Slow spells themselves are the business of the vote in fresh processes (`confirm`), not
of the bound.

Plain functions over `Metric`s and floats; no pytest.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from pytest_efficientllm.core.record import Metric, Record
from pytest_efficientllm.core.units import format_value
from pytest_efficientllm.judging.stats import summarize

# A suite gates ~100 metrics per run, so the per-metric false-alarm level must be far below
# 1% for the run as a whole to stay green on unchanged code.
PREDICTION = 0.999
# Runs a baseline needs before its own jitter is used without a pooled prior.
MIN_RUNS = 3
# Tests (metrics of one name in one file, each with 2+ runs) needed to estimate a prior.
MIN_POOL = 3
# Degrees of freedom a bound needs. Below one, Student's t has no mean and its 99.9% quantile
# runs to 10^6 and beyond: a one-run baseline under a prior whose tests' variances disagree
# (d0 = 0.47) put its bound at exp(10^3) and overflowed, where it should say "unknown".
MIN_DF = 1.0
# For k runs of normal jitter with unit standard deviation, the fastest k//2 + 1 of them:
# (factor that makes their sample variance unbiased for the variance, the degrees of freedom
# of a chi-square with the same relative spread, their median's mean, its standard deviation).
# From 10^6 simulated sets per k (tests/judging/test_run_noise.py checks them with 2*10^5).
FASTER_HALF = {
    1: (1.0, 0.0, 0.0, 1.0),
    2: (1.0, 1.0, 0.0, 0.707),
    3: (1.704, 0.87, -0.424, 0.624),
    4: (1.579, 1.75, -0.297, 0.601),
    5: (2.019, 1.61, -0.496, 0.558),
    6: (1.877, 2.45, -0.421, 0.475),
    7: (2.187, 2.30, -0.555, 0.454),
    8: (2.054, 3.11, -0.473, 0.448),
    9: (2.294, 2.96, -0.572, 0.432),
    10: (2.172, 3.76, -0.516, 0.387),
}


@dataclass(frozen=True)
class RunPrior:
    """The run-to-run variance shared by one metric's tests in one baseline file.

    `variance`: s0², of the log of run medians (unit-free); `df`: d0, its degrees of
    freedom (math.inf when the tests' variances differ no more than sampling explains);
    `tests`: how many tests it was learnt from; `scope`: which tests those were, as the
    verdict names them.
    """

    variance: float
    df: float
    tests: int
    scope: str = "the file's tests"


@dataclass(frozen=True)
class Prediction:
    """Where one more run of unchanged code lands, from a baseline's runs.

    `low`/`high`: the one-sided bounds at `level` (same units as the metric);
    `pooled`: which tests' `RunPrior` moderated the spread ("" for none); `centre`: `centre` of the runs.
    """

    runs: int
    centre: float
    low: float
    high: float
    df: float
    pooled: str
    unit: str = ""
    level: float = PREDICTION

    def bound(self, direction: str) -> float:
        """The bound on the worse side: the highest value for lower-is-better metrics."""
        return self.high if direction == "lower" else self.low

    def describe(self, direction: str) -> str:
        pooled = f", spread pooled with {self.pooled}" if self.pooled else ""
        return (
            f"{self.runs} baseline run{'s' if self.runs != 1 else ''} ({self.level:.1%} prediction bound "
            f"{format_value(self.bound(direction), self.unit)}{pooled})"
        )


def gate_level(processes: int = 1) -> float:
    """The one-sided level of each process's bound when `processes` must all find a regression."""
    if processes < 1:
        raise ValueError(f"processes must be 1 or more, got {processes}")
    return 1 - (1 - PREDICTION) ** (1 / processes)


def run_medians(metric: Metric) -> list[float]:
    """The medians of a baseline metric's runs, oldest first: its history, then its own rounds'."""
    own = [x for x in metric.samples if x > 0]
    medians = [m for m in metric.history if m > 0]
    if own:
        medians.append(summarize(own).median)
    return medians


def faster_half(medians: Sequence[float]) -> list[float]:
    """The fastest k//2 + 1 of k run medians (all of them for k <= 2), lowest first.

    Fastest means lowest: the run-to-run rule reads times and other lower-is-better
    metrics; for a higher-is-better rate the caller passes reciprocals (`predict`).
    """
    ordered = sorted(medians)
    return ordered if len(ordered) <= 2 else ordered[: len(ordered) // 2 + 1]


def centre(medians: Sequence[float], direction: str = "lower") -> float:
    """The baseline's location: the median of the faster half of its runs."""
    mid = float(np.median(faster_half(_slow_side_up(medians, direction))))
    return 1 / mid if direction == "higher" else mid


def _table(k: int) -> tuple[float, float, float, float]:
    return FASTER_HALF[min(k, max(FASTER_HALF))]


def _trigamma_inverse(y: float) -> float:
    """x with trigamma(x) = y (y > 0): Newton's iteration on 1/x as in limma's trigammaInverse."""
    from scipy.special import polygamma

    if y > 1e7:
        return 1.0 / math.sqrt(y)
    if y < 1e-6:
        return 1.0 / y
    x = 0.5 + 1.0 / y
    for _ in range(50):
        tri = float(polygamma(1, x))
        step = tri * (1 - tri / y) / float(polygamma(2, x))
        x += step
        if -step / x < 1e-8:
            break
    return x


def moderate(log_variances: Sequence[tuple[float, float]]) -> RunPrior | None:
    """The prior (s0², d0) of Smyth's moderation from (variance, degrees of freedom) pairs.

    Moment estimates on the log scale: E[log s²] = log s0² + digamma(d/2) - log(d/2), and the
    spread of log s² beyond trigamma(d/2) (what sampling alone gives) is trigamma(d0/2).
    None with fewer than `MIN_POOL` positive variances.
    """
    from scipy.special import digamma, polygamma

    pairs = [(v, d) for v, d in log_variances if v > 0 and d > 0]
    if len(pairs) < MIN_POOL:
        return None
    d = np.array([p[1] for p in pairs], dtype=float)
    e = np.log([p[0] for p in pairs]) - digamma(d / 2) + np.log(d / 2)
    mean_e = float(np.mean(e))
    extra = float(np.var(e, ddof=1) - np.mean(polygamma(1, d / 2)))
    if extra <= 0:
        return RunPrior(float(math.exp(mean_e)), math.inf, len(pairs))
    d0 = 2 * _trigamma_inverse(extra)
    s0_squared = math.exp(mean_e + float(digamma(d0 / 2)) - math.log(d0 / 2))
    return RunPrior(s0_squared, d0, len(pairs))


def _log_variance(medians: Sequence[float]) -> tuple[float, float]:
    """The jitter variance of the log run medians from their faster half, and its degrees of freedom."""
    factor, df, _, _ = _table(len(medians))
    logs = np.log(faster_half(medians))
    return float(np.var(logs, ddof=1)) * factor, df


def pool(records: Iterable[Record]) -> dict[str, RunPrior]:
    """The run-to-run prior of each measured metric name over `records` (one baseline file)."""
    by_name: dict[str, list[tuple[float, float]]] = {}
    for record in records:
        for name, metric in record.metrics.items():
            if metric.source != "measured":
                continue
            medians = run_medians(metric)
            if len(medians) >= 2:
                by_name.setdefault(name, []).append(_log_variance(_slow_side_up(medians, metric.direction)))
    priors = {name: moderate(pairs) for name, pairs in by_name.items()}
    return {name: prior for name, prior in priors.items() if prior is not None}


def _slow_side_up(medians: Sequence[float], direction: str) -> list[float]:
    # Slow spells lower a rate: its reciprocal is a time, whose slow side is up.
    return [1 / m for m in medians] if direction == "higher" else list(medians)


def predict(
    medians: Sequence[float],
    prior: RunPrior | None = None,
    unit: str = "",
    direction: str = "lower",
    level: float = PREDICTION,
) -> Prediction | None:
    """The one-sided `level` bounds for one more run, from the runs' medians and the file's prior.

    Without a prior, `MIN_RUNS` runs are needed (the variance of all of them); with one, a
    single run suffices (the prior's jitter around it). None otherwise, and None where the
    degrees of freedom fall below `MIN_DF`.
    """
    from scipy.stats import t as student_t

    values = _slow_side_up([m for m in medians if m > 0], direction)
    k = len(values)
    if k == 0 or (prior is None and k < MIN_RUNS):
        return None
    if prior is None:
        # Alone, a test's few runs cannot afford the faster half's loss of degrees of freedom
        # (5 runs: 1.6 instead of 4, t from 7 to ~30): all its runs' variance, slow spells
        # included, usually gives the narrower bound.
        variance, df = float(np.var(np.log(values), ddof=1)), float(k - 1)
    else:
        own, d = _log_variance(values) if k >= 2 else (0.0, 0.0)
        if math.isinf(prior.df):
            variance, df = prior.variance, math.inf
        else:
            variance, df = (prior.df * prior.variance + d * own) / (prior.df + d), prior.df + d
    if df < MIN_DF:
        return None
    _, _, centre_mean, centre_sd = _table(k)
    t = float(student_t.ppf(level, min(df, 1e9)))
    sd = math.sqrt(variance)
    mid = centre(values)  # already slow side up
    spread = t * math.sqrt(1 + centre_sd**2)
    low, high = mid * _exp(sd * (-centre_mean - spread)), mid * _exp(sd * (-centre_mean + spread))
    if direction == "higher":  # back from reciprocals
        mid, low, high = 1 / mid, 1 / high, (1 / low if low > 0 else math.inf)
    return Prediction(k, mid, low, high, df, prior.scope if prior is not None else "", unit, level)


def _exp(x: float) -> float:
    # A bound past the largest float is no bound at all: infinite, not an OverflowError.
    return math.exp(x) if x < 700 else math.inf

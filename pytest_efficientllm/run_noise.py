"""How far a run's median moves between processes, learnt from a baseline's runs.

The rounds of one run cannot show it: on a shared VM a whole process runs a few percent
slow or fast for seconds while its rounds agree to 1-2% (benchmarks/RESULTS.md). A
baseline recorded over several runs keeps each run's median (`Metric.history` plus its
own rounds' median), and this module turns those medians into three things the gate uses:

* **the centre**: the median of the runs' medians. One run that ran off (a baseline
  process 30% slow) moves it little, where the newest run alone would move every
  comparison by 30%.
* **the run-to-run spread**, moderated across tests. Three to five runs give a spread
  with 2-4 degrees of freedom, and a 99.9% Student-t bound on it sits ~8-26 standard
  deviations out, where no 10% regression can reach. The measured metrics of one name in
  one baseline file (one suite module, one kind of workload) share most of their
  run-to-run noise, so their variances are pooled by the empirical-Bayes moderation of
  Smyth (2004, "Linear models and empirical Bayes methods for assessing differential
  expression", limma's `squeezeVar`): a prior variance s0² with d0 degrees of freedom is
  estimated from the spread of the tests' log-variances, and each test's variance is
  shrunk towards it, s̃² = (d0·s0² + d·s²)/(d0 + d) with d0 + d degrees of freedom. A test
  whose runs are truly noisier than its file's keeps most of its own variance (d is
  small, but its s² is large); tests that agree share strength. Chosen over a plain
  pooled variance, which would let quiet tests borrow the noise of loud ones and the
  other way round.
* **the prediction bound** for one more run of unchanged code: centre · exp(±t · s̃ ·
  sqrt(1 + v/k)) on the log scale, v = π/2 for the median of k ≥ 3 runs (its asymptotic
  variance relative to the mean's), 1 below that; t from Student's t at `PREDICTION`
  (one-sided) with the moderated degrees of freedom.

Plain functions over `Metric`s and floats; no pytest.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .record import Metric, Record
from .stats import summarize
from .units import format_value

# A suite gates ~100 metrics per run, so the per-metric false-alarm level must be far below
# 1% for the run as a whole to stay green on unchanged code.
PREDICTION = 0.999
# Runs a baseline needs before its own spread is used without a pooled prior.
MIN_RUNS = 3
# Tests (metrics of one name in one file, each with 2+ runs) needed to estimate a prior.
MIN_POOL = 3


@dataclass(frozen=True)
class RunPrior:
    """The run-to-run variance shared by one metric's tests in one baseline file.

    `variance`: s0², of the log of run medians (unit-free); `df`: d0, its degrees of
    freedom (math.inf when the tests' variances differ no more than sampling explains);
    `tests`: how many tests it was learnt from.
    """

    variance: float
    df: float
    tests: int


@dataclass(frozen=True)
class Prediction:
    """Where one more run of unchanged code lands, from a baseline's runs.

    `low`/`high`: the one-sided `PREDICTION` bounds (same units as the metric);
    `pooled`: whether a `RunPrior` moderated the spread.
    """

    runs: int
    centre: float
    low: float
    high: float
    df: float
    pooled: bool
    unit: str = ""

    def bound(self, direction: str) -> float:
        """The bound on the worse side: the highest value for lower-is-better metrics."""
        return self.high if direction == "lower" else self.low

    def describe(self, direction: str) -> str:
        pooled = ", spread pooled with the file's tests" if self.pooled else ""
        return (f"{self.runs} baseline run{'s' if self.runs != 1 else ''} ({PREDICTION:.1%} prediction bound "
                f"{format_value(self.bound(direction), self.unit)}{pooled})")


def run_medians(metric: Metric) -> list[float]:
    """The medians of a baseline metric's runs, oldest first: its history, then its own rounds'."""
    own = [x for x in metric.samples if x > 0]
    medians = [m for m in metric.history if m > 0]
    if own:
        medians.append(summarize(own).median)
    return medians


def centre(medians: Sequence[float]) -> float:
    """The baseline's location: the median of its runs' medians."""
    return float(np.median(medians))


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


def moderate(log_variances: Sequence[tuple[float, int]]) -> RunPrior | None:
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


def _log_variance(medians: Sequence[float]) -> tuple[float, int]:
    logs = np.log(medians)
    return float(np.var(logs, ddof=1)), len(logs) - 1


def pool(records: Iterable[Record]) -> dict[str, RunPrior]:
    """The run-to-run prior of each measured metric name over `records` (one baseline file)."""
    by_name: dict[str, list[tuple[float, int]]] = {}
    for record in records:
        for name, metric in record.metrics.items():
            if metric.source != "measured":
                continue
            medians = run_medians(metric)
            if len(medians) >= 2:
                by_name.setdefault(name, []).append(_log_variance(medians))
    priors = {name: moderate(pairs) for name, pairs in by_name.items()}
    return {name: prior for name, prior in priors.items() if prior is not None}


def predict(medians: Sequence[float], prior: RunPrior | None = None, unit: str = "") -> Prediction | None:
    """The prediction bounds for one more run, from the runs' medians and the file's prior.

    Without a prior, `MIN_RUNS` runs are needed (their own spread alone); with one, a single
    run suffices (the prior's spread around it). None otherwise.
    """
    from scipy.stats import t as student_t

    medians = [m for m in medians if m > 0]
    k = len(medians)
    if k == 0 or (prior is None and k < MIN_RUNS):
        return None
    own, d = _log_variance(medians) if k >= 2 else (0.0, 0)
    if prior is None:
        variance, df = own, float(d)
    elif math.isinf(prior.df):
        variance, df = prior.variance, math.inf
    else:
        variance, df = (prior.df * prior.variance + d * own) / (prior.df + d), prior.df + d
    spread_of_centre = (math.pi / 2 if k >= 3 else 1.0) / k
    t = float(student_t.ppf(PREDICTION, df)) if math.isfinite(df) else float(student_t.ppf(PREDICTION, 1e9))
    half = t * math.sqrt(variance * (1 + spread_of_centre))
    mid = centre(medians)
    return Prediction(k, mid, mid * math.exp(-half), mid * math.exp(half), df, prior is not None, unit)

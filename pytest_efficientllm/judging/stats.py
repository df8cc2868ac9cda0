"""Robust statistics over raw rounds, and the intervals that tell change from noise: the gate's
two-sample interval (a run's rounds against its baseline's, `ratio_interval`), and `ab`'s
one-sample interval over the log ratios of its pairs (`shift_interval`, with `hodges_lehmann`
and the exact signed-rank test `signed_rank_p`).

Plain functions over sequences of floats; no pytest, no torch.

Why a rank-based interval (Hodges-Lehmann estimate with the Moses / Mann-Whitney
confidence interval) on the log of the samples, and not a bootstrap or a t-interval:

* Latency rounds are skewed with a right tail (preemption, page faults, noisy
  neighbours). A t-interval assumes normality; the rank interval assumes only that the
  two runs' distributions differ by a shift — on the log scale, a *multiplicative*
  slowdown, which is exactly the model "10% slower" means.
* Tests run few rounds (5 by default). The rank interval has exact coverage at any
  sample size (from the exact null distribution of the Mann-Whitney U statistic); a
  percentile bootstrap of a median from 5 rounds has only 5 distinct values and
  under-covers badly.
* It is deterministic: the same samples give the same verdict, with no random seed, so a
  serial run, an xdist run and a rerun of the comparison all agree.
* It is robust: one wild round moves neither the estimate nor the interval much.

When the sizes are too small for the asked confidence (e.g. 3 rounds against 3 at 95%:
the smallest two-sided p-value is 0.1), `ratio_interval` says so instead of returning
a misleadingly narrow interval; the gate then refuses to fail on that metric.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

# Above this many samples per side, the interval is formed from evenly spaced order
# statistics of each side (the samples' own quantiles), keeping the m x n pairwise
# differences bounded; the approximation is far below timing noise at that size.
MAX_SAMPLES_PER_SIDE = 400
# Up to this m*n the exact U distribution is enumerated; above it, the normal approximation.
EXACT_LIMIT = 10_000
# Log-ratio differences smaller than this are the rounding of the floats, not a change: exp()
# rounds +1e-16 to exactly 1.0 but -1e-16 to just below it, so a pair of runs 1 ulp apart had
# read as an improvement one way round and as no change the other.
LOG_ROUNDING = 1e-12


@dataclass(frozen=True)
class Summary:
    """Summary statistics of one metric's raw rounds. Units: those of the samples.

    `mad` is the raw median absolute deviation (not scaled to a normal sigma);
    `iqr` the interquartile range (numpy's linear interpolation).
    """

    n: int
    median: float
    mad: float
    iqr: float
    minimum: float
    maximum: float


def summarize(samples: Sequence[float]) -> Summary:
    """Median, MAD, IQR, min, max of the samples; ValueError when there are none."""
    x = np.asarray(samples, dtype=float)
    if x.size == 0:
        raise ValueError("summarize: no samples")
    if not np.all(np.isfinite(x)):
        raise ValueError("summarize: samples must be finite numbers")
    med = float(np.median(x))
    q1, q3 = np.percentile(x, [25, 75])
    return Summary(int(x.size), med, float(np.median(np.abs(x - med))), float(q3 - q1), float(x.min()), float(x.max()))


@dataclass(frozen=True)
class RatioInterval:
    """How `current` compares with `baseline` as a ratio of locations (current / baseline).

    `ratio` is the ratio of medians (what a user reads: "the median got 14% slower");
    `estimate` is the Hodges-Lehmann ratio (median of pairwise ratios); `low`/`high`
    the distribution-free confidence interval on the ratio, or None when the sizes are
    too small to reach `confidence` (then `why` says so).
    """

    ratio: float
    estimate: float
    low: float | None
    high: float | None
    confidence: float
    n_baseline: int
    n_current: int
    why: str = ""

    @property
    def resolved(self) -> bool:
        return self.low is not None and self.high is not None


def _u_null_cdf(m: int, n: int) -> np.ndarray:
    """Exact CDF of the Mann-Whitney U statistic under H0 for sizes m and n (no ties).

    The count of arrangements with U = u is the coefficient of q^u in the Gaussian
    binomial [m+n choose m]_q, built with the recursion f(m, n) = f(m-1, n) shifted by n
    plus f(m, n-1).
    """
    # f[j] holds the coefficient vector for (i, j) as i grows row by row.
    prev = [np.ones(1) for _ in range(n + 1)]  # i = 0: one arrangement, U = 0
    for i in range(1, m + 1):
        cur = [np.ones(1)]  # j = 0: U = 0 only
        for j in range(1, n + 1):
            a = prev[j]  # (i-1, j): last element from the first sample adds j
            b = cur[j - 1]  # (i, j-1)
            out = np.zeros(i * j + 1)
            out[j : j + a.size] += a
            out[: b.size] += b
            cur.append(out)
        prev = cur
    counts = prev[n]
    return np.cumsum(counts) / counts.sum()


def _rank_k(m: int, n: int, alpha: float) -> int | None:
    """Largest k with P(U <= k - 1) <= alpha/2: the interval is [D_(k), D_(mn+1-k)].

    None when even k = 1 does not reach the confidence (sizes too small).
    """
    if m * n <= EXACT_LIMIT:
        cdf = _u_null_cdf(m, n)
        ok = np.nonzero(cdf <= alpha / 2 + 1e-12)[0]
        return int(ok[-1]) + 1 if ok.size else None
    z = NormalDist().inv_cdf(1 - alpha / 2)
    k = int(math.floor(m * n / 2 - z * math.sqrt(m * n * (m + n + 1) / 12)))
    return k if k >= 1 else None


def _thin(x: np.ndarray) -> np.ndarray:
    if x.size <= MAX_SAMPLES_PER_SIDE:
        return x
    idx = np.round(np.linspace(0, x.size - 1, MAX_SAMPLES_PER_SIDE)).astype(int)
    return np.sort(x)[idx]


def ratio_interval(baseline: Sequence[float], current: Sequence[float], confidence: float = 0.95) -> RatioInterval:
    """Interval on current / baseline from raw rounds of each (all values must be > 0).

    Hodges-Lehmann shift of log(current) against log(baseline) with the Moses interval:
    the k-th smallest and k-th largest of the m x n pairwise differences, k from the exact
    Mann-Whitney null distribution. Exponentiated back, it is a ratio.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    b = np.asarray(baseline, dtype=float)
    c = np.asarray(current, dtype=float)
    if b.size == 0 or c.size == 0:
        raise ValueError("ratio_interval: both sides need at least one sample")
    if np.any(b <= 0) or np.any(c <= 0) or not (np.all(np.isfinite(b)) and np.all(np.isfinite(c))):
        raise ValueError("ratio_interval: samples must be finite and positive (a ratio of locations)")
    ratio = float(np.median(c) / np.median(b))
    lb, lc = _thin(np.log(b)), _thin(np.log(c))
    diffs = np.sort((lc[:, None] - lb[None, :]).ravel())
    diffs[np.abs(diffs) < LOG_ROUNDING] = 0.0
    estimate = float(math.exp(float(np.median(diffs))))
    m, n = lb.size, lc.size
    k = _rank_k(m, n, 1.0 - confidence)
    if k is None:
        why = (
            f"{b.size} baseline and {c.size} current rounds cannot separate change from noise at "
            f"{confidence:.0%} confidence; run at least 5 rounds on each side"
        )
        return RatioInterval(ratio, estimate, None, None, confidence, int(b.size), int(c.size), why)
    low = float(math.exp(diffs[k - 1]))
    high = float(math.exp(diffs[diffs.size - k]))
    return RatioInterval(ratio, estimate, low, high, confidence, int(b.size), int(c.size))


# -- paired: one sample of differences (log ratios of pairs), its estimate and exact interval --


def _walsh_averages(values: Sequence[float]) -> list[float]:
    """(x_i + x_j) / 2 for every i <= j: the averages the signed-rank test's estimate and interval
    are read from."""
    return [(values[i] + values[j]) / 2 for i in range(len(values)) for j in range(i, len(values))]


def hodges_lehmann(values: Sequence[float]) -> float:
    """The median of the Walsh averages: the signed-rank test's estimate."""
    return float(statistics.median(_walsh_averages(values)))


def signed_rank_p(shifted: Sequence[float]) -> float:
    """One-sided exact signed-rank p-value of "centred at 0" against "centred above 0"."""
    if all(x == 0 for x in shifted):
        return 1.0
    # Imported here: scipy.stats costs ~0.5 s, and the plugin loads this module in every pytest run.
    from scipy import stats as scipy_stats

    return float(scipy_stats.wilcoxon(shifted, alternative="greater", method="exact", zero_method="zsplit").pvalue)


def shift_interval(values: Sequence[float], alpha: float) -> tuple[float, float]:
    """The exact signed-rank confidence interval of the shift of `values`: every shift d that
    neither one-sided test at `alpha` on `values - d` rejects (so its level is 1 - 2 `alpha`
    or more), the interval that goes with the Hodges-Lehmann estimate.

    Its ends are Walsh averages: the test's statistic changes only where d crosses one. scipy has
    the exact test but not its interval, so each end is found by bisection over the Walsh
    averages, testing at a point between two neighbours (~2 log2(n^2/2) exact tests).
    """
    walsh = sorted(set(_walsh_averages(values)))

    def point(k: int) -> float:  # a shift between walsh[k - 1] and walsh[k]
        if k == 0:
            return walsh[0] - 1.0
        if k == len(walsh):
            return walsh[-1] + 1.0
        return (walsh[k - 1] + walsh[k]) / 2

    def p_above(k: int) -> float:  # "centred above point(k)": rises with k
        return signed_rank_p([v - point(k) for v in values])

    def p_below(k: int) -> float:  # "centred below point(k)": falls with k
        return signed_rank_p([point(k) - v for v in values])

    # Of the regions 0..len(walsh), first_kept .. after_kept - 1 are kept; with too few values to
    # reach `alpha` (fewer than 5 at 5%) an outer region is kept too: no shift is ruled out there.
    regions = range(len(walsh) + 1)
    first_kept = bisect.bisect_left(regions, True, key=lambda k: p_above(k) >= alpha)
    after_kept = bisect.bisect_left(regions, True, key=lambda k: p_below(k) < alpha)
    low = walsh[first_kept - 1] if first_kept > 0 else -math.inf
    high = walsh[after_kept - 1] if after_kept <= len(walsh) else math.inf
    return low, high

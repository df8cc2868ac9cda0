"""Paired verdicts: one test measured in alternating fresh processes of two versions, BASE and HEAD.

    verdicts = paired_verdicts(base_records, head_records, limits)

`base_records[i]` and `head_records[i]` are pair i: two processes that ran back to back
(`ab.schedule`), so a slow spell of the machine falls on both members of a pair and cancels
in their ratio. That is what a stored baseline cannot give: its processes ran in other
minutes of the machine (docs/gate.md). The rules are the gate's, read on the pairs:

* **counted** metrics (bytes, FLOPs, parameters) gate exactly, as against a baseline: the
  same count on every process of a side, and HEAD's worse than BASE's fails. A count that
  differs between processes of one side is reported as varying and not compared exactly.
* **measured** metrics with a tolerance (the marker's, ini or command line), and the
  profile's default ones (`compare.DEFAULT_MEASURED`) at `compare.DEFAULT_MEASURED_TOLERANCE`:
  each pair gives a log ratio HEAD/BASE of the process's median round; a regression fails
  when, as against a stored baseline, the change is beyond the tolerance *and* beyond the
  noise: the Hodges-Lehmann estimate of the shift exceeds the tolerance, and a one-sided
  exact Wilcoxon signed-rank test over the pairs rejects "no change" at `ALPHA`.
  The CPU's default check fails here on any slowdown beyond its tolerance, where against a
  stored baseline it fails only a gross one: pairing removes the drift that made it lenient.
  Each change carries its exact signed-rank interval (`stats.shift_interval`); a pass whose interval
  reaches beyond the tolerance says it cannot rule out that slowdown (`UNRESOLVED`): too few
  pairs for the machine's noise, not evidence that nothing regressed.
* **budgets** are checked on HEAD's pooled record (each metric's median over processes).
* **estimated** metrics never fail.

A timing the pairs alone do not fail can still fail **against the other tests of its pairs**
(`relative_change`), where each pair holds `MIN_OTHERS` of them: the tests of one pair ran in the
same minutes, so a slow spell of the machine moves them together, and dividing each pair's ratio by
the median ratio of the others removes it. It fails when that relative change is beyond the
tolerance and the noise (the same estimate and test as above), and the others as a whole did not
get better beyond the tolerance: where they did, a slow BASE and a HEAD that sped them up cannot be
told apart (against those, a test left as it was would read slower), and only the pairs judge.
Where the others got slower, a test slower still is slower whichever made them so. A HEAD that
slows every test alike is judged on the pairs, as before.

A measured metric that fails or improves also says how a control moved in the same pairs:
the other tests of the comparison (`others_moved`, where each pair holds `MIN_OTHERS` of them),
else the calibration workload of the same processes (`fingerprint["calibration"]`, measured
before the first test; it runs the plugin's code, the same on both sides). Where the control
moved as much, the machine (or the side's processes as a whole) was slower, not the test's
code alone. Said, never used to excuse: a HEAD that starts a busy thread slows the control too.

Plain functions over records; no processes, no pytest.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from pytest_efficientllm.core.limits import Limit
from pytest_efficientllm.core.metrics import like
from pytest_efficientllm.core.record import Metric, Record
from pytest_efficientllm.core.units import format_change
from pytest_efficientllm.judging.compare import DEFAULT_MEASURED_TOLERANCE, compare_counted, default_measured
from pytest_efficientllm.judging.dtype_shift import dtype_shift
from pytest_efficientllm.judging.fingerprint import calibrates, calibration_factor, calibration_key
from pytest_efficientllm.judging.stats import hodges_lehmann, shift_interval, signed_rank_p
from pytest_efficientllm.judging.verdicts import Reason, Softened, Status, Verdict, check_budgets

# One-sided level of the signed-rank test. With 6 pairs the smallest p-value is 1/64.
ALPHA = 0.05
# Fewer pairs cannot reach ALPHA at all (5 pairs: 1/32 at best).
MIN_PAIRS = 5
# How a passing timing says that its pairs could not rule out a slowdown beyond its tolerance.
UNRESOLVED = "cannot rule out"
# The confidence of `shift_interval`: each end is one one-sided test at ALPHA. The signed-rank
# statistic is discrete, so the interval's coverage is this or more (5 pairs: 93.8%, 6 pairs: 90.6%).
INTERVAL_LEVEL = 1 - 2 * ALPHA
INTERVAL = f"{INTERVAL_LEVEL:.0%} interval"  # how a paired change names it
# Fewest other tests each pair must hold for them to stand as a control: named beside a failure
# (`others_moved`) and judged against (`relative_change`).
MIN_OTHERS = 3


@dataclass(frozen=True)
class PairedChange:
    """HEAD against BASE over the pairs of one metric; `ratios` per pair (head / base, as recorded)."""

    metric: str
    ratios: tuple[float, ...]
    estimate: float  # Hodges-Lehmann estimate of the ratio (geometric, from the log ratios)
    p_worse: float  # one-sided p-value of "no change" against HEAD worse than BASE
    p_better: float  # one-sided p-value of "no change" against HEAD better than BASE

    @property
    def change(self) -> float:
        return self.estimate - 1.0

    @functools.cached_property
    def interval(self) -> tuple[float, float]:
        """The ratio's confidence interval (`shift_interval` of the log ratios), as ratios. Derived
        when asked: a control's change (`others_moved`, `calibration_moved`) never shows it."""
        low, high = shift_interval([math.log(r) for r in self.ratios], ALPHA)
        return math.exp(low), math.exp(high)

    def describe(self, interval: bool = True) -> str:
        low, high = min(self.ratios) - 1.0, max(self.ratios) - 1.0
        pairs = f"pairs {format_change(low)} .. {format_change(high)}"
        if interval:
            pairs += f"; {INTERVAL} {format_change(self.interval[0] - 1.0)} .. {format_change(self.interval[1] - 1.0)}"
        return f"{format_change(self.change)} over {len(self.ratios)} pairs ({pairs})"

    def worst(self, direction: str) -> float:
        """The worst change the interval leaves possible, read in the metric's direction."""
        low, high = self.interval
        return (high if direction == "lower" else low) - 1.0


def _process_value(metric: Metric) -> float | None:
    """One process's figure for a metric: the median of its rounds where it kept them."""
    if metric.samples:
        return float(statistics.median(metric.samples))
    return metric.value


def _pair(base: Metric, head: Metric) -> tuple[float, float] | None:
    """The two processes' figures of one pair, or None where either has none or one not above 0
    (no ratio to take)."""
    b, h = _process_value(base), _process_value(head)
    return (b, h) if b is not None and h is not None and b > 0 and h > 0 else None


def paired_change(metric: str, base: Sequence[float], head: Sequence[float], direction: str) -> PairedChange:
    """The change of `head` against `base` over their pairs, worse read in the metric's direction."""
    ratios = tuple(h / b for b, h in zip(base, head))
    logs = [math.log(r) for r in ratios]
    worse = logs if direction == "lower" else [-x for x in logs]
    estimate = math.exp(hodges_lehmann(logs))
    return PairedChange(metric, ratios, estimate, signed_rank_p(worse), signed_rank_p([-x for x in worse]))


def pooled(records: Sequence[Record]) -> Record:
    """One record standing for a side: the first process's, each metric's value the median over processes."""
    first = records[0]
    out = Record(first.nodeid, first.profile, fingerprint=dict(first.fingerprint), settings=dict(first.settings))
    for name, metric in first.metrics.items():
        values = [v for r in records if name in r.metrics and (v := r.metrics[name].value) is not None]
        if len(values) != len(records) or metric.value is None:
            out.add(metric)
            continue
        out.add(
            like(metric, float(statistics.median(values)), f"median over {len(records)} processes; {metric.method}")
        )
    return out


def _counted_verdict(name: str, base: list[Metric], head: list[Metric], shift: str) -> Verdict | None:
    """The gate's exact rule (`compare.compare_counted`) when each side counted one value."""
    if any(m.value is None for m in [*base, *head]):
        return None
    base_values = {m.value for m in base}
    head_values = {m.value for m in head}
    if len(base_values) > 1 or len(head_values) > 1:
        shown = f"base {sorted(base_values)}, head {sorted(head_values)}"  # type: ignore[type-var]
        return Verdict(
            name, "warn", f"varies between processes of one side ({shown} {head[0].unit}): not compared", "baseline"
        )
    return compare_counted(name, base[0], head[0], None, shift, against="base")


def _worse(change: float, direction: str) -> float:
    """A change signed so that above 0 is worse, in a metric's direction."""
    return change if direction == "lower" else -change


def relative_change(
    change: PairedChange, others: Sequence[Sequence[float]]
) -> tuple[PairedChange, PairedChange] | None:
    """`change` against the other tests of its pairs (`others[i]`: their HEAD/BASE ratios in pair i),
    and how they moved themselves (each pair's median): None where a pair holds fewer than
    `MIN_OTHERS` of them."""
    theirs = _others_change(change.metric, others) if len(others) == len(change.ratios) else None
    if theirs is None:
        return None
    # Direction "lower" for both: `_measured_verdict` reads them in the metric's direction itself.
    return paired_change(change.metric, theirs.ratios, change.ratios, "lower"), theirs


def _others_change(metric: str, others: Sequence[Sequence[float]]) -> PairedChange | None:
    """How the other tests moved over the pairs, each pair's median of their ratios standing for it:
    None where there are no pairs or a pair holds fewer than `MIN_OTHERS` of them."""
    if not others or any(len(r) < MIN_OTHERS for r in others):
        return None
    medians = [float(statistics.median(r)) for r in others]
    return paired_change(metric, [1.0] * len(medians), medians, "lower")


def _measured_verdict(
    name: str,
    base: list[Metric],
    head: list[Metric],
    tolerance: float,
    defaulted: bool,
    others: Sequence[Sequence[float]] = (),
) -> Verdict:
    source = head[0].source
    direction = head[0].direction
    kept = [(pair, i) for i, (b, h) in enumerate(zip(base, head)) if (pair := _pair(b, h)) is not None]
    pairs = [pair for pair, _ in kept]
    told = f"tolerance {tolerance * 100:+.4g}%" + (" (default)" if defaulted else "")
    if len(pairs) < MIN_PAIRS:
        return Verdict(name, "warn", f"{len(pairs)} complete pairs, fewer than {MIN_PAIRS}: not judged", "baseline")
    change = paired_change(name, [b for b, _ in pairs], [h for _, h in pairs], direction)
    text = f"{change.describe()}; {told}"
    interval = (change.interval[0] - 1.0, change.interval[1] - 1.0)

    def judged(
        status: Status, message: str, unresolved: float | None = None, reason: Reason = "", softened: Softened = ""
    ) -> Verdict:
        return Verdict(name, status, message, "baseline", change.change, interval, unresolved, reason, softened)

    beyond = abs(change.change) > tolerance
    if change.p_worse < ALPHA and beyond:
        if source == "estimated":
            return judged(
                "warn", f"{text}: worse, but an estimate never fails", reason="beyond_noise", softened="estimate"
            )
        return judged("fail", f"{text}: worse in the pairs (p={change.p_worse:.3g})", reason="beyond_noise")
    rows = [others[i] for _, i in kept] if len(others) == len(base) else []
    relative = relative_change(change, rows)
    if relative is not None and source == "measured":
        against, theirs = relative
        p_worse = against.p_worse if direction == "lower" else against.p_better
        if (
            p_worse < ALPHA
            and _worse(against.change, direction) > tolerance
            and _worse(theirs.change, direction) >= -tolerance
        ):
            return judged(
                "fail",
                f"{text}: worse than the other tests of its pairs: {against.describe()} against each pair's "
                f"median of the other {_how_many(rows)} (p={p_worse:.3g}), which moved "
                f"{format_change(theirs.change)} themselves",
                reason="beyond_others",
            )
    if change.p_better < ALPHA and beyond:
        return judged("improved", f"{text}: better (p={change.p_better:.3g})", reason="better")
    # A pass shows its reading against the other tests too: where the pairs swing, it is the
    # narrower one. Whether the pass is resolved stays the pairs' to say, since a change that
    # slowed every test alike leaves no trace against the others.
    against_others = ""
    if relative is not None and source == "measured":
        against, theirs = relative
        against_others = (
            f"; against the other tests of its pairs {against.describe()}, which moved "
            f"{format_change(theirs.change)} themselves"
        )
    worst = change.worst(direction)
    if abs(worst) > tolerance and (worst > 0) == (direction == "lower"):
        # A pass, but not evidence that nothing regressed: the pairs were too few for their noise.
        text += f"; {UNRESOLVED} {format_change(worst)} with {len(pairs)} pairs (more pairs narrow the interval)"
        return judged("pass", text + against_others, worst)
    return judged("pass", text + against_others)


def calibration_moved(metric: str, base: Sequence[Record], head: Sequence[Record]) -> str:
    """How the calibration workload moved between the pairs' processes, for `metric`'s kind of
    time (CPU or wall), as a clause for a verdict's message; "" where a process has none."""
    factors = [calibration_factor(b, h, calibration_key(metric)) for b, h in zip(base, head)]
    if not factors or any(f is None for f in factors):
        return ""
    change = paired_change("calibration", [1.0] * len(factors), [f for f in factors if f is not None], "lower")
    return f"; the calibration workload in the same processes: {change.describe(interval=False)}"


def pair_ratios(
    pairs: Mapping[int, tuple[Mapping[str, Record], Mapping[str, Record]]],
) -> dict[str, dict[str, dict[int, float]]]:
    """HEAD/BASE of every test's measured metrics in every pair, by test, metric and pair: each
    process's figure is its median round. `pairs[i]` holds pair i's BASE and HEAD records by test."""
    out: dict[str, dict[str, dict[int, float]]] = {}
    for pair, (base, head) in pairs.items():
        for nodeid, b in base.items():
            h = head.get(nodeid)
            if h is None:
                continue
            for name, bm in b.metrics.items():
                hm = h.metrics.get(name)
                if hm is None or bm.source != "measured" or hm.source != "measured":
                    continue
                values = _pair(bm, hm)
                if values is not None:
                    out.setdefault(nodeid, {}).setdefault(name, {})[pair] = values[1] / values[0]
    return out


def others_in_pairs(
    ratios: Mapping[str, Mapping[str, Mapping[int, float]]], nodeid: str, pairs: Sequence[int]
) -> dict[str, list[list[float]]]:
    """For each metric, the ratios of every test but `nodeid` in each of `pairs` (`pair_ratios`)."""
    out: dict[str, list[list[float]]] = {}
    for name in ratios.get(nodeid, {}):
        rows = [by_pair for other, metrics in ratios.items() if other != nodeid and (by_pair := metrics.get(name))]
        out[name] = [[row[p] for row in rows if p in row] for p in pairs]
    return out


def others_moved(metric: str, others: Sequence[Sequence[float]]) -> str:
    """How the other tests of the same pairs moved on `metric` (`others[i]`: their HEAD/BASE ratios
    in pair i), as a clause for a verdict's message; "" where a pair holds fewer than `MIN_OTHERS`.

    Where the comparison has tests to spare, they are a better control than the calibration: on
    a noisy machine the tests of one pair move together (their processes ran in the same
    seconds), which a separate workload timed before the first test did not follow
    (benchmarks/RESULTS.md). Said, never used to excuse: a HEAD that slows every test alike is a
    regression of every test.
    """
    change = _others_change(metric, others)
    if change is None:
        return ""
    tests = _how_many(others).removesuffix(" tests")
    return f"; the other tests in the same pairs ({tests}, each pair's median): {change.describe(interval=False)}"


def _how_many(others: Sequence[Sequence[float]]) -> str:
    """How many other tests the pairs held: "3 tests", or "12 to 15 tests" where pairs differ."""
    counts = sorted({len(r) for r in others})
    return (f"{counts[0]}" if len(counts) == 1 else f"{counts[0]} to {counts[-1]}") + " tests"


def paired_verdicts(
    base: Sequence[Record],
    head: Sequence[Record],
    limits: Iterable[Limit] = (),
    others: Mapping[str, Sequence[Sequence[float]]] | None = None,
) -> list[Verdict]:
    """Every verdict of one test measured as pairs (`base[i]` beside `head[i]`); `others` (by metric,
    per pair: the other tests' ratios, `others_in_pairs`) is the control a failure names, where it
    has enough of them, and the calibration where not."""
    if not base or not head:
        missing = "BASE" if not base else "HEAD"
        return [Verdict("*", "error", f"no measurement on {missing}: incomplete", "baseline")]
    pairs = min(len(base), len(head))
    base, head = list(base[:pairs]), list(head[:pairs])
    limits = tuple(limits)
    verdicts = check_budgets(pooled(head), limits)
    tolerances = {lim.metric: lim.relative for lim in limits if lim.kind == "tolerance"}
    defaults = set(default_measured(head[0].profile))
    for name in sorted(head[0].metrics):
        base_m = [r.metrics.get(name) for r in base]
        head_m = [r.metrics.get(name) for r in head]
        if any(m is None for m in base_m) or any(m is None for m in head_m):
            if name in tolerances or name in defaults:
                verdicts.append(Verdict(name, "new", "not recorded on both sides: not compared", "baseline"))
            continue
        b_list = [m for m in base_m if m is not None]
        h_list = [m for m in head_m if m is not None]
        if b_list[0].source != h_list[0].source:
            verdicts.append(
                Verdict(
                    name,
                    "warn",
                    f"source {b_list[0].source} on BASE, {h_list[0].source} on HEAD",
                    "source",
                    reason="source_differs",
                )
            )
            continue
        source = h_list[0].source
        if source == "counted" and name not in tolerances:
            if h_list[0].direction == "info":
                continue
            verdict = _counted_verdict(name, b_list, h_list, dtype_shift(base[0], head[0], name))
            if verdict is not None:
                verdicts.append(verdict)
        elif name in tolerances or (source == "measured" and name in defaults):
            tolerance = tolerances.get(name, DEFAULT_MEASURED_TOLERANCE)
            control_rows = (others or {}).get(name, ())
            verdict = _measured_verdict(name, b_list, h_list, tolerance, name not in tolerances, control_rows)
            if verdict.status in ("fail", "improved") and verdict.reason != "beyond_others":
                control = others_moved(name, control_rows)
                if not control and calibrates(head[0].profile, name):
                    control = calibration_moved(name, base, head)
                verdict = replace(verdict, message=verdict.message + control)
            verdicts.append(verdict)
    return verdicts

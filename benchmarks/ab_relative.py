"""Would `ab` resolve more if each test were judged against the other tests of its pairs?

An offline re-judging of `ab` output folders (`--output`: each process's run file, `base-<pair>.json`
and `head-<pair>.json`). For every test's CPU time it takes the log ratio HEAD/BASE of each pair
three ways: raw (as `ab` judges now), relative to the median of all other tests in the same pair,
and relative to the median of the other tests of the same test function (its other parameters).
For each way it reports the median width of the 90% signed-rank interval, how many A/A timings
fail by `ab`'s own verdict (`paired_verdicts`: estimate beyond +5% and one-sided p < 5%), and how
many would fail had the test alone been 10% slower (+10% added to its HEAD log ratios; the other
tests left as they ran). A last line does the same with `ab`'s whole verdict as built, the other
tests of each pair given to it as its control: it fails a test on its pairs, or against those
tests where they did not get better beyond the tolerance (`judging.paired.relative_change`). Given two or more
folders it also reads each comparison as the first pairs and the next one (the first after the
last) as the confirming pairs, as `ab` does by default: a test fails when both find it, by the
pairs alone (`ab` before it judged against the other tests) and by `ab` as built. The confirming
pairs of a real run hold only the 8 quickest other tests beside the suspect; here they hold all.

    python benchmarks/ab_relative.py efficiency-ab/ [more folders...]

For each folder it first prints how much of the noise the tests of a pair share: the standard
deviation (over the pairs) of each pair's median log ratio, and that of each test's log ratio around
its pair's median. Only the shared part is what judging against the other tests removes.

Folders of an A/A (the same code on both sides) are what it is for: every failure is false.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_efficientllm.core.metrics import measured  # noqa: E402
from pytest_efficientllm.core.record import Record  # noqa: E402
from pytest_efficientllm.judging.paired import pair_ratios, paired_change, paired_verdicts  # noqa: E402
from pytest_efficientllm.storage.runfile import read_run  # noqa: E402

METRIC = "cpu_time_per_round"  # judged at the CPU profile's default tolerance, +5%
SLOWER = math.log(1.10)
WAYS = ("raw", "relative to the other tests", "relative to the same function's")


def log_ratios(folder: Path) -> dict[str, list[float]]:
    """Each test's log ratio HEAD/BASE per pair, over the pairs every test has (the first ones: the
    confirming pairs hold only the suspects)."""
    pairs = {}
    for pair in range(10_000):
        base, head = folder / f"base-{pair}.json", folder / f"head-{pair}.json"
        if not (base.exists() and head.exists()):
            break
        pairs[pair] = ({r.nodeid: r for r in read_run(base).records}, {r.nodeid: r for r in read_run(head).records})
    ratios = {test: by[METRIC] for test, by in pair_ratios(pairs).items() if METRIC in by}
    shared = sorted(set.intersection(*(set(r) for r in ratios.values()))) if ratios else []
    return {test: [math.log(r[p]) for p in shared] for test, r in ratios.items()}


def _record(ratio: float) -> Record:
    record = Record("re-judged", "cpu")
    record.add(measured(METRIC, ratio, "HEAD/BASE of one pair, re-judged offline"))
    return record


def fails(logs: list[float], others: list[list[float]] | None = None) -> bool:
    """`ab`'s own verdict (`paired_verdicts`) on pairs whose HEAD/BASE log ratios are `logs`, with
    the other tests' log ratios in each pair (`others[i]`) as its control where given."""
    control = {METRIC: [[math.exp(x) for x in row] for row in others]} if others is not None else None
    verdicts = paired_verdicts([_record(1.0)] * len(logs), [_record(math.exp(x)) for x in logs], (), control)
    return any(v.metric == METRIC and v.status == "fail" for v in verdicts)


def shared_and_own(folder: Path, logs: dict[str, list[float]]) -> str:
    """How much of a comparison's noise its tests share: the standard deviation of each pair's
    median log ratio, against that of each test's log ratio around its pair's median."""
    pairs = range(len(next(iter(logs.values()), [])))
    medians = [statistics.median(own[p] for own in logs.values()) for p in pairs]
    own = [row[p] - medians[p] for row in logs.values() for p in pairs]
    if len(medians) < 2:
        return f"{folder}: too few pairs to tell shared noise from a test's own"
    return (
        f"{folder}: {len(logs)} tests, {len(medians)} pairs; each pair's median spread "
        f"{100 * statistics.pstdev(medians):.1f}%, each test around it {100 * statistics.pstdev(own):.1f}%"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args()
    widths: dict[str, list[float]] = {w: [] for w in WAYS}
    false_alarms = dict.fromkeys(WAYS, 0)
    caught = dict.fromkeys(WAYS, 0)
    timings = 0
    built = {"A/A failed": 0, "caught": 0}
    # Per folder, per test: (A/A, +10%) verdicts by the pairs alone and by ab as built.
    verdicts: list[dict[str, tuple[bool, bool, bool, bool]]] = []
    for folder in args.folders:
        logs = log_ratios(folder)
        print(shared_and_own(folder, logs))
        verdicts.append({})
        for test, own in logs.items():
            others = [o for o in logs if o != test]
            rows = [[logs[o][p] for o in others] for p in range(len(own))]
            slower = [x + SLOWER for x in own]
            verdicts[-1][test] = (fails(own), fails(slower), fails(own, rows), fails(slower, rows))
            built["A/A failed"] += verdicts[-1][test][2]
            built["caught"] += verdicts[-1][test][3]
            same = [o for o in others if o.split("[")[0] == test.split("[")[0]]
            for way, group in zip(WAYS, (None, others, same)):
                if group == []:
                    continue
                controls = [statistics.median(logs[o][p] for o in group) if group else 0.0 for p in range(len(own))]
                a_a = [x - c for x, c in zip(own, controls)]
                low, high = paired_change(METRIC, [1.0] * len(a_a), [math.exp(x) for x in a_a], "lower").interval
                widths[way].append((high - low) * 100)
                false_alarms[way] += fails(a_a)
                caught[way] += fails([x + SLOWER for x in a_a])
            timings += 1
    print(f"{timings} CPU-time timings in {len(args.folders)} comparison(s)")
    for way in WAYS:
        if widths[way]:
            n = len(widths[way])
            print(
                f"{way:32s} median interval width {statistics.median(widths[way]):5.1f} points; A/A failed "
                f"{false_alarms[way]} of {n}; a +10% slower test caught in {caught[way]} of {n}"
            )
    print(
        f"{'ab as built (pairs, then others)':32s} A/A failed {built['A/A failed']} of {timings}; "
        f"a +10% slower test caught in {built['caught']} of {timings}"
    )
    if len(verdicts) < 2:
        return
    both = [0, 0, 0, 0]
    judged = 0
    for i, first in enumerate(verdicts):
        again = verdicts[(i + 1) % len(verdicts)]
        for test in first.keys() & again.keys():
            judged += 1
            for k in range(4):
                both[k] += first[test][k] and again[test][k]
    for name, (a_a, caught_) in (("pairs alone", both[:2]), ("ab as built", both[2:])):
        print(
            f"{'after confirmation, ' + name:32s} A/A failed {a_a} of {judged}; "
            f"a +10% slower test caught in {caught_} of {judged}"
        )


if __name__ == "__main__":
    main()

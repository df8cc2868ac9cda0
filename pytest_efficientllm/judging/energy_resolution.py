"""How far two energy values can differ with nothing changed, from the energy counter's resolution.

NVML's energy counter advances in steps, one every ~100 ms, so a window spanning N updates may be
off by up to one update's energy: 1/N of it. The measuring loop records that worst case for each
record as `settings["energy_window"]["quantisation_bound"]` (`Meter.run_window`, where it extends a
window until N is large enough). Two windows of bounds q_b (baseline) and q_c (this run) can then
read a ratio anywhere in [(1 - q_c) / (1 + q_b), (1 + q_c) / (1 - q_b)] for the same energy, so a
change inside that range is no evidence of one, whatever the tolerance says: at the default 5%
resolution (20 updates) that is about -10% .. +11%, at 10% (10 updates) -18% .. +22%.

A net-of-idle value (energy less idle power x wall time) carries the whole window's quantisation
error on a smaller number, so its bound is the gross one scaled by gross / net.

Counters with no known update period (RAPL, the CPU estimate) record no bound: nothing changes for them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pytest_efficientllm.core.record import Record

# The net-of-idle metrics, each with the gross metric of the same window whose error it carries.
NET_OF = {"energy_per_token_net": "energy_per_token", "AEC_net": "AEC"}
# Every metric whose value is a window's counted energy over something exact (tokens, rounds, time).
ENERGY_METRICS = frozenset({"energy", "energy_per_round", "energy_per_token", "energy_per_sample", "AEC", *NET_OF})


def quantisation(record: Record, name: str) -> float | None:
    """The worst-case relative error of `name` in `record` from its energy counter's steps; None where
    the record has no bound (no counter period) or `name` is not a window's energy."""
    window = record.settings.get("energy_window")
    bound = window.get("quantisation_bound") if isinstance(window, dict) else None
    if name not in ENERGY_METRICS or not isinstance(bound, (int, float)) or bound <= 0:
        return None
    gross_name = NET_OF.get(name)
    if gross_name is None:
        return float(bound)
    gross, net = record.metrics.get(gross_name), record.metrics.get(name)
    if gross is None or net is None or gross.value is None or net.value is None:
        return None
    return float(bound) * gross.value / net.value if net.value > 0 else math.inf


@dataclass(frozen=True)
class UnchangedRange:
    """The ratios current / baseline two windows of the same energy can read (`low` .. `high`),
    and `why`: the two windows' bounds, for a verdict's message ("windows of ±5.0% and ±4.8%")."""

    low: float
    high: float
    why: str

    def holds(self, ratio: float) -> bool:
        return self.low <= ratio <= self.high


def unchanged_range(baseline: Record, current: Record, name: str) -> UnchangedRange | None:
    """What two windows of the same energy can read, or None where neither record bounds its quantisation."""
    q_base, q_cur = quantisation(baseline, name), quantisation(current, name)
    if q_base is None and q_cur is None:
        return None

    def shown(q: float | None) -> str:
        return "no bound" if q is None else ("unbounded" if math.isinf(q) else f"±{q:.1%}")

    why = f"windows of {shown(q_base)} and {shown(q_cur)}"
    qb, qc = q_base or 0.0, q_cur or 0.0
    low = (1 - qc) / (1 + qb) if qc < 1 else 0.0
    high = (1 + qc) / (1 - qb) if qb < 1 else math.inf
    return UnchangedRange(low, high, why)

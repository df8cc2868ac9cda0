"""Whether a baseline and a run measured the same workload, from the settings their records keep.

A record's settings hold two kinds of entry: how the plugin measured (the protocol, its evidence
and bookkeeping: `MEASUREMENT_SETTINGS`), and what was measured, which is everything else: what
the test declared with `efficiency.settings(...)` (a model's shape, a technique's rank, a
scale), the shapes `efficiency.generate` ran, the marker's workload kind; and a distributed
test's world size. Two records of different workloads are not a regression of one another: a
suite run at another scale compared with the baseline of the default one read +13,090% FLOPs.
Such a baseline is no baseline for this workload: reported, not compared, and a failure only
under `--efficiency-strict`, as a missing one is (`judging.gate`).
"""

from __future__ import annotations

from typing import Any

from pytest_efficientllm.core.record import Record

# Written by the plugin about how it measured, not what: never a reason to refuse a comparison.
# Rounds and warm-up change the number of samples, not the cost of one; threads and the
# distributed launcher and backend are in the fingerprint, which judges them.
MEASUREMENT_SETTINGS = frozenset(
    {
        "rounds",
        "warmup",
        "min_time_s",
        "min_time_ignored_s",
        "threads",
        "energy_window",
        "counted_cost",
        "limits",
        "confirmation_s",
        "confirmation_spacing_s",
        "launcher",
        "dist_backend",
    }
)
MAX_SHOWN = 4


def _shown(value: Any) -> str:
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else repr(value)


def workload_changes(baseline: Record, current: Record) -> list[str]:
    """'name: old -> new' for the world size and each workload setting both records name with
    different values.

    A setting only one of them names is not a change: a baseline recorded before a test declared
    it still compares."""
    changes = []
    if baseline.world_size != current.world_size:
        changes.append(f"world_size: {baseline.world_size} -> {current.world_size}")
    old, new = baseline.settings, current.settings
    names = sorted(
        name
        for name in set(old) & set(new)
        if name not in MEASUREMENT_SETTINGS and name != "world_size" and old[name] != new[name]
    )
    changes += [f"{name}: {_shown(old[name])} -> {_shown(new[name])}" for name in names]
    if len(changes) > MAX_SHOWN:
        changes[MAX_SHOWN:] = [f"and {len(changes) - MAX_SHOWN} more"]
    return changes


def another_workload(changes: list[str]) -> str:
    """The verdict's text for a baseline of another workload (`workload_changes`)."""
    return (
        "baseline is of another workload ("
        + "; ".join(changes)
        + "): not compared; record one for this workload with --update-baselines, or keep each "
        "workload's baselines in its own --baselines-dir"
    )

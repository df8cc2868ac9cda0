"""What differs between the workloads of a baseline and a run, from the settings their records keep.

A record's settings hold two kinds of entry: how the plugin measured (the protocol, its evidence
and bookkeeping: `MEASUREMENT_SETTINGS`), and what was measured, which is everything else: what
the test declared with `efficiency.settings(...)` (a model's shape, a technique's rank, a dtype),
the shapes `efficiency.generate` ran, the marker's workload kind. A declared setting that
changed is still compared, since a change of the workload is what a change of code can be (an
upcast declares another dtype); but a counted regression names it, as it names package versions
(`compare.compare_counted`): a suite run at `--scale=small` against the `tiny` baseline read
+13,090% FLOPs with nothing saying why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Written by the plugin about how it measured, not what. Rounds and warm-up change the number of
# samples, not the cost of one; threads, the distributed launcher and backend are in the
# fingerprint, which judges them; the rest is evidence or bookkeeping that differs run to run.
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


def workload_changes(baseline: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """'name old -> new' for each workload setting both records' settings name with different values.

    A setting only one of them names is not a change: a baseline recorded before a test declared
    it is not thereby of another workload."""
    names = sorted(
        name
        for name in set(baseline) & set(current)
        if name not in MEASUREMENT_SETTINGS and baseline[name] != current[name]
    )
    changes = [f"{name} {_shown(baseline[name])} -> {_shown(current[name])}" for name in names[:MAX_SHOWN]]
    if len(names) > MAX_SHOWN:
        changes.append(f"{len(names) - MAX_SHOWN} more")
    return changes

"""The regression zoo as pytest tests: one measured test per regression, side from ZOO_SIDE.

    ZOO_SIDE=before pytest benchmarks/zoo/test_zoo.py --update-baselines --baselines-dir=DIR
    ZOO_SIDE=after  pytest benchmarks/zoo/test_zoo.py --baselines-dir=DIR

Both sides have the same node ids and settings, so "after" is judged against the baseline of
"before", as a code change would be in CI. `benchmarks/regression_zoo.py` drives this.
"""

from __future__ import annotations

import os

import pytest

from zoo.workloads import NAMES, SIDES, build

SIDE = os.environ.get("ZOO_SIDE", "before")
if SIDE not in SIDES:
    raise pytest.UsageError(f"ZOO_SIDE={SIDE!r}: expected one of {', '.join(SIDES)}")


@pytest.mark.efficiency(workload="inference")
@pytest.mark.parametrize("name", NAMES)
def test_zoo(efficiency, name):
    work = build(name, SIDE)
    efficiency.measure(work.round, tokens=work.tokens)

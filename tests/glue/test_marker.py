"""`parse_marker` by itself: the protocol rules that the plugin's collection-error tests do not reach."""

from __future__ import annotations

import pytest

from pytest_efficientllm.glue.marker import MarkerError, parse_marker
from pytest_efficientllm.measuring.meter import MeasureProtocol

DEFAULTS = MeasureProtocol(rounds=5, warmup=1, min_time_s=0.0, max_rounds=100)


def test_max_rounds_may_equal_rounds_but_not_fall_below() -> None:
    spec = parse_marker({"rounds": 7, "max_rounds": 7}, (), DEFAULTS)
    assert (spec.protocol.rounds, spec.protocol.max_rounds) == (7, 7)
    with pytest.raises(MarkerError, match=r"max_rounds=6 is below rounds=7"):
        parse_marker({"rounds": 7, "max_rounds": 6}, (), DEFAULTS)


def test_more_rounds_than_the_default_cap_raise_the_cap_with_them() -> None:
    # rounds=500 under a run-wide max of 100 is what the test asked for, not an error.
    assert parse_marker({"rounds": 500}, (), DEFAULTS).protocol.max_rounds == 500

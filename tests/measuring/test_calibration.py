"""Calibration: renewed once older than its interval, never renewed when the interval is off."""

from __future__ import annotations

from pytest_efficientllm.measuring.calibration import Calibrator


def test_calibration_is_renewed_when_older_than_the_interval() -> None:
    now = [0.0]
    cal = Calibrator(every_s=60.0, clock=lambda: now[0])
    first = cal.ensure()
    assert first.matmul_s > 0 and first.copy_s > 0 and cal.ensure() is first
    now[0] = 61.0
    assert cal.ensure() is not first and len(cal.history) == 2
    never = Calibrator(every_s=None, clock=lambda: now[0])
    once = never.ensure()
    now[0] = 1e9
    assert never.ensure() is once

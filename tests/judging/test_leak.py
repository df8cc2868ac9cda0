"""The leak rule (`judging.leak.find_leak`) on records whose growth is chosen: how much memory the
window kept, and how much of it came in the window's second half. The real leaks, measured in
fresh processes, are in tests/faults/test_workload.py."""

from __future__ import annotations

import pytest

from pytest_efficientllm.core.record import Metric
from pytest_efficientllm.judging.leak import LATE_GROWTH_SHARE, MIN_RETAINED_BYTES, find_leak
from pytest_efficientllm.telemetry.retained_memory import LATE_GROWTH, RETAINED
from tests.helpers.record_builders import counted, record

MiB = 2**20


def _grew(retained: float | None, late: float | None = None, rounds: int = 20) -> list[Metric]:
    metrics = [Metric(RETAINED, retained, "B", "lower", "measured", "procfs RSS")]
    if late is not None:
        metrics.append(Metric(LATE_GROWTH, late, "B", "lower", "measured", "procfs RSS"))
    return [*metrics, counted("rounds", rounds, unit="")]


def test_growth_that_goes_on_through_the_window_is_a_leak_with_its_rate() -> None:
    finding = find_leak(record("t.py::a", *_grew(160 * MiB, late=80 * MiB)))
    assert finding is not None and finding.per_round_bytes == 8 * MiB
    assert "a leak across rounds" in finding.message() and "80.00 MiB of it in the window's second half" in (
        finding.message()
    )


@pytest.mark.parametrize(
    ("retained", "late"),
    [
        pytest.param(MIN_RETAINED_BYTES - 1, MIN_RETAINED_BYTES, id="below the allocator's noise"),
        pytest.param(None, None, id="not measured"),
        pytest.param(160 * MiB, LATE_GROWTH_SHARE * 160 * MiB - 1, id="grew early, then stopped: a cache"),
    ],
)
def test_what_is_not_a_leak(retained: float | None, late: float | None) -> None:
    assert find_leak(record("t.py::a", *_grew(retained, late))) is None


def test_growth_of_a_quarter_in_the_second_half_is_a_leak_at_the_threshold() -> None:
    assert find_leak(record("t.py::a", *_grew(160 * MiB, late=LATE_GROWTH_SHARE * 160 * MiB))) is not None
    assert find_leak(record("t.py::a", *_grew(MIN_RETAINED_BYTES, late=MIN_RETAINED_BYTES))) is not None


def test_a_window_too_short_to_see_the_trend_says_so_instead_of_guessing() -> None:
    finding = find_leak(record("t.py::a", *_grew(64 * MiB)))
    assert finding is not None and finding.late_bytes is None
    assert "too short to tell a leak from one-time growth" in finding.message()
    assert "a leak across rounds" not in finding.message()

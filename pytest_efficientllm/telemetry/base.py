"""The probe protocol every telemetry source implements, and the window timer protocol."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from pytest_efficientllm.core.record import Metric


class TelemetryError(RuntimeError):
    """A telemetry source failed in a way the user must hear about (e.g. NVML mid-run)."""


class Probe(ABC):
    """One telemetry source over one measurement window.

    `open()` is called just before the first timed round, `close()` after the last round's
    work has been synchronised; neither is inside a timed round. `readings()` turns what
    was collected into metrics. A probe that cannot read its source reports its metrics
    as unavailable (value None with a note); it does not raise, except for a failure in
    the middle of a window that makes the window's numbers wrong (`TelemetryError`).
    """

    name: str = "probe"

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def readings(self, wall_s: float) -> list[Metric]: ...


class RoundTimer(ABC):
    """Times each round of a workload.

    Units: seconds per round. `run` executes `fn` until both `min_rounds` and `min_time_s`
    are met (at most `max_rounds`) and returns the per-round latencies; any device
    synchronisation happens once, after the last round.
    """

    method: str = ""

    @abstractmethod
    def run(self, fn: Callable[[], Any], min_rounds: int, min_time_s: float, max_rounds: int) -> list[float]: ...

    @abstractmethod
    def time_block(self) -> contextlib.AbstractContextManager[dict[str, float]]:
        """Context manager timing its body as one round; `latency_s` is set in the yielded dict on exit."""

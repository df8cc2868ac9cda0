"""CPU energy when no hardware counter is readable: an estimate, named as one.

Model: energy = process CPU-seconds x a fixed power per busy core. It follows the work
actually done (CPU-seconds are measured), unlike a constant-TDP figure, but the power
per core is an assumption, so the result is `estimated` and never a hard gate.
"""

from __future__ import annotations

from pytest_efficientllm.core.metrics import estimated
from pytest_efficientllm.core.record import Metric

WATTS_PER_BUSY_CORE = 10.0
MODEL_NAME = f"estimate: process CPU-seconds x {WATTS_PER_BUSY_CORE:g} W per busy core (no RAPL counter readable)"


def estimate_energy(cpu_seconds: float) -> Metric:
    """Units: J."""
    return estimated("energy", cpu_seconds * WATTS_PER_BUSY_CORE, MODEL_NAME)

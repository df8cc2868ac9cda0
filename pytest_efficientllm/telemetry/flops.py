"""Exact FLOP counts with torch's own FlopCounterMode, taken once per workload outside timing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def count_flops(fn: Callable[[], Any]) -> tuple[int | None, str]:
    """Run `fn` once under `torch.utils.flop_counter.FlopCounterMode`.

    Returns (FLOPs, "") or (None, reason) when the workload cannot be counted (an op
    the counter rejects, a tensor subclass it cannot trace). Matmul-family ops count
    2·M·N·K; ops torch has no formula for count 0, so the figure is a lower bound for
    workloads dominated by custom kernels.
    """
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError as exc:  # pragma: no cover - torch is a dependency
        return None, f"torch FlopCounterMode unavailable: {exc}"
    try:
        with FlopCounterMode(display=False) as counter:
            fn()
    except Exception as exc:
        return None, f"FlopCounterMode failed on this workload: {type(exc).__name__}: {exc}"
    return int(counter.get_total_flops()), ""

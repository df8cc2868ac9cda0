"""Exact FLOP counts with torch's own FlopCounterMode, taken once per workload outside timing."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

# torch warns when a compiled module is called while global module hooks exist; during a
# counting run the only such hooks are FlopCounterMode's own (its module tracker), so the
# warning named the user's line for something the plugin did.
_OWN_HOOKS_WARNING = r"Using `torch.compile\(module\)` when there are global hooks on modules"


@contextlib.contextmanager
def counters_quiet() -> Iterator[None]:
    """Silence torch's warning about the counters' own global module hooks, and only that one."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_OWN_HOOKS_WARNING, category=UserWarning)
        yield


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
        with counters_quiet(), FlopCounterMode(display=False) as counter:
            fn()
    except Exception as exc:
        return None, f"FlopCounterMode failed on this workload: {type(exc).__name__}: {exc}"
    return int(counter.get_total_flops()), ""

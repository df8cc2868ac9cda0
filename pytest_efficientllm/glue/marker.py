"""`@pytest.mark.efficiency(...)`: its arguments, validated into a `MarkerSpec`.

    @pytest.mark.efficiency(rounds=10, warmup=2, min_time="0.5 s", workload="inference",
                            latency="<= 50 ms", peak_memory="+1%", throughput=">= 1000 tok/s")

Protocol arguments (rounds, warmup, min_time, max_rounds, workload, flops, world_size) set
how the test is measured; `world_size=N` runs the test body in N ranks (see `distributed`).
Every other keyword names a metric (catalog name or alias) and gives either an absolute
budget ("<= 2 GiB", ">= 1000 tok/s") or a signed tolerance against the stored baseline
("+5%"), parsed by `core.limits`. Problems raise `MarkerError` naming the argument and the
expected shape; the plugin adds the test id.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from pytest_efficientllm.core.aliases import ALIASES
from pytest_efficientllm.core.limits import Limit, LimitError, parse_limit
from pytest_efficientllm.core.metrics import lookup
from pytest_efficientllm.core.units import (
    UnitError,
    parse_seconds,
)
from pytest_efficientllm.measuring.meter import WORKLOADS, MeasureProtocol

PROTOCOL_ARGS = ("rounds", "warmup", "min_time", "max_rounds", "workload", "flops", "world_size")


class MarkerError(LimitError):
    """A bad `efficiency` marker argument; the message names the argument."""


@dataclass(frozen=True)
class MarkerSpec:
    protocol: MeasureProtocol
    workload: str = "inference"
    count_flops: bool = True
    limits: tuple[Limit, ...] = field(default_factory=tuple)
    world_size: int = 1  # ranks to spawn (pytest_efficientllm.distributed); 1 = an ordinary test


def _int_arg(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MarkerError(f"{name}={value!r}: expected a whole number >= {minimum}")
    if value < minimum:
        raise MarkerError(f"{name}={value!r}: must be >= {minimum}")
    return value


def parse_marker(kwargs: dict[str, Any], args: tuple[Any, ...], defaults: MeasureProtocol) -> MarkerSpec:
    """Validate the marker's keywords into a spec; `defaults` come from ini/CLI."""
    if args:
        raise MarkerError(f"positional arguments {args!r}: the efficiency marker takes keywords only")
    rounds = _int_arg("rounds", kwargs.get("rounds", defaults.rounds), 1)
    warmup = _int_arg("warmup", kwargs.get("warmup", defaults.warmup), 0)
    max_rounds = _int_arg("max_rounds", kwargs.get("max_rounds", max(defaults.max_rounds, rounds)), 1)
    if max_rounds < rounds:
        raise MarkerError(f"max_rounds={max_rounds} is below rounds={rounds}")
    min_time_raw = kwargs.get("min_time", defaults.min_time_s)
    try:
        min_time = parse_seconds(min_time_raw)
    except UnitError as exc:
        raise MarkerError(f"min_time={min_time_raw!r}: {exc}; expected a duration like '0.5 s'") from None
    if min_time < 0:
        raise MarkerError(f"min_time={min_time_raw!r}: must not be negative")
    workload = kwargs.get("workload", "inference")
    if workload not in WORKLOADS:
        raise MarkerError(f"workload={workload!r}: expected one of {', '.join(WORKLOADS)}")
    flops = kwargs.get("flops", True)
    if not isinstance(flops, bool):
        raise MarkerError(f"flops={flops!r}: expected True or False")
    world_size = _int_arg("world_size", kwargs.get("world_size", 1), 1)
    for key, value in kwargs.items():
        # A misspelt protocol argument would read as an unknown metric; name the argument meant.
        close = difflib.get_close_matches(key, PROTOCOL_ARGS, n=1, cutoff=0.75)
        if key not in PROTOCOL_ARGS and close and lookup(key) is None and key not in ALIASES:
            raise MarkerError(
                f"{key}={value!r}: not an efficiency marker argument (did you mean {close[0]}=?) nor a metric; "
                f"the arguments are {', '.join(PROTOCOL_ARGS)}, and every other keyword names a metric"
            )
    try:
        limits = tuple(parse_limit(k, v) for k, v in kwargs.items() if k not in PROTOCOL_ARGS)
    except LimitError as exc:
        raise MarkerError(str(exc)) from None
    seen: set[tuple[str, str]] = set()
    for limit in limits:
        if (limit.metric, limit.kind) in seen:
            raise MarkerError(f"two {limit.kind}s for metric {limit.metric!r} (an alias and its name?)")
        seen.add((limit.metric, limit.kind))
    return MarkerSpec(MeasureProtocol(rounds, warmup, min_time, max_rounds), workload, flops, limits, world_size)

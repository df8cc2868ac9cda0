"""Limits a test declares on a metric: an absolute budget or a tolerance against its baseline.

    latency="<= 50 ms"       a budget, in the metric's canonical unit once parsed
    peak_memory="+1%"        a tolerance: how much worse than the baseline is allowed

Metric names and units come from the catalog (`core.metrics`); problems raise `LimitError`
naming the argument and the shape expected. The marker, the ini's `efficiency_limits` and
`--efficiency-limit` all parse through here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pytest_efficientllm.core.metrics import resolve_name, spec
from pytest_efficientllm.core.units import UnitError, parse_percent, parse_quantity

if TYPE_CHECKING:
    from pytest_efficientllm.core.record import Record


class LimitError(ValueError):
    """A limit that cannot be parsed; the message names it and the shape expected."""


@dataclass(frozen=True)
class Limit:
    """A budget (`op` and `bound` in the metric's canonical unit) or a tolerance (`relative`)."""

    metric: str
    kind: Literal["budget", "tolerance"]
    text: str
    op: str = ""
    bound: float = 0.0
    relative: float = 0.0


QUALITY = "quality:"


def parse_limit(key: str, value: Any) -> Limit:
    if key.startswith(QUALITY) and len(key) > len(QUALITY):
        # A test's own quality score (`efficiency.quality`): named and directed by the test,
        # unitless, so its budget is a bare number and its tolerance reads its direction then.
        metric, unit = key, ""
    else:
        try:
            metric = resolve_name(key)
        except KeyError as exc:
            raise LimitError(f"{key}={value!r}: {exc.args[0]}") from None
        unit = spec(metric).unit
    example = f"'<= 5 {unit}'" if unit and unit not in ("fraction", "x") else "'>= 0.5'"
    shape = f"expected a budget like {example} or a tolerance like '+5%'"
    if not isinstance(value, str):
        raise LimitError(f"{key}={value!r}: {shape}")
    text = value.strip()
    if text.endswith("%") and text[:1] in "+-":
        try:
            return Limit(metric, "tolerance", text, relative=parse_percent(text))
        except UnitError:
            raise LimitError(f"{key}={value!r}: {shape}") from None
    match = re.fullmatch(r"(<=|>=)\s*(.+)", text)
    if not match:
        raise LimitError(f"{key}={value!r}: {shape}")
    op, rest = match.groups()
    try:
        if unit == "fraction" and rest.strip().endswith("%"):
            bound = float(rest.strip()[:-1]) / 100.0
        else:
            bound = parse_quantity(rest, unit)
    except (UnitError, ValueError) as exc:
        raise LimitError(f"{key}={value!r}: {exc}; {shape}") from None
    return Limit(metric, "budget", text, op=op, bound=bound)


def parse_limit_assignments(items: Iterable[str], where: str) -> tuple[Limit, ...]:
    """'latency=+5%' / 'peak_memory=<= 2 GiB' items into limits; ValueError naming `where`."""
    out = []
    for item in items:
        item = item.strip()
        if not item or item.startswith("#"):
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{where}: {item!r}: expected METRIC=LIMIT, e.g. latency=+5% or peak_memory='<= 2 GiB'")
        try:
            out.append(parse_limit(name.strip(), value.strip()))
        except LimitError as exc:
            raise ValueError(f"{where}: {exc}") from None
    return tuple(out)


def record_limits(record: Record, extra: Iterable[Limit] = ()) -> tuple[Limit, ...]:
    """The limits the test ran under (the gate writes them into the record's settings, ini, marker and
    command line merged), each overridden by one of `extra` on the same metric and kind: what `ab` and
    `compare` judge a record by, as the run that recorded it did."""
    merged: dict[tuple[str, str], Limit] = {}
    for text in record.settings.get("limits", []) or []:
        metric, _, value = str(text).partition("=")
        try:
            limit = parse_limit(metric, value)
        except LimitError:
            continue  # a limit this plugin version cannot read is not ours to judge by
        merged[(limit.metric, limit.kind)] = limit
    for limit in extra:
        merged[(limit.metric, limit.kind)] = limit
    return tuple(merged.values())

"""Parsing and formatting of the quantities users write in markers and options.

Sizes ("2 GiB", "300MB"), durations ("50 ms"), rates ("1000 tok/s"), energies ("0.5 J"),
powers ("300 W") and relative tolerances ("+5%"). Every parser raises `UnitError`
with a message that says what shape was expected, so the marker layer can name the
test and the argument.
"""

from __future__ import annotations

import math
import re

__all__ = [
    "UnitError",
    "parse_bytes",
    "parse_seconds",
    "parse_quantity",
    "parse_percent",
    "format_value",
    "format_change",
    "format_bytes",
    "format_seconds",
]


class UnitError(ValueError):
    """A value that does not parse as the quantity it was meant to be."""


_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"

_BYTE_FACTORS: dict[str, float] = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "k": 2**10,
    "m": 2**20,
    "g": 2**30,
}
_SECOND_FACTORS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "sec": 1.0,
    "min": 60.0,
    "h": 3600.0,
}

_JOULE_FACTORS = {"j": 1.0, "mj": 1e-3, "kj": 1e3}


def _per(unit_names: tuple[str, ...]) -> dict[str, float]:
    # Energy per unit of work: "0.5 J/tok", and "0.5 J" alone, since the metric's own
    # name (energy_per_token) already says what it is per.
    out = dict(_JOULE_FACTORS)
    for energy, factor in _JOULE_FACTORS.items():
        out.update({f"{energy}/{name}": factor for name in unit_names})
    return out


# Canonical unit of each family, and the spellings users write for it.
_FAMILIES: dict[str, tuple[str, dict[str, float]]] = {
    "bytes": ("B", _BYTE_FACTORS),
    "seconds": ("s", _SECOND_FACTORS),
    "joules": ("J", {**_JOULE_FACTORS, "wh": 3600.0, "kwh": 3.6e6}),
    "watts": ("W", {"w": 1.0, "mw": 1e-3, "kw": 1e3}),
    "tokens_per_s": ("tok/s", {"tok/s": 1.0, "tokens/s": 1.0, "ktok/s": 1e3}),
    "samples_per_s": ("samples/s", {"samples/s": 1.0, "sample/s": 1.0}),
    "joules_per_token": ("J/tok", _per(("tok", "token"))),
    "joules_per_sample": ("J/sample", _per(("sample",))),
    "flops_per_s": ("FLOP/s", {"flop/s": 1.0, "gflop/s": 1e9, "tflop/s": 1e12}),
    "ratio": ("x", {"x": 1.0, "": 1.0}),
}


def _split(text: str) -> tuple[float, str]:
    match = re.fullmatch(rf"\s*({_NUMBER})\s*([A-Za-zµ/]*)\s*", text)
    if not match:
        raise UnitError(f"{text!r} is not a number followed by a unit")
    value = float(match.group(1))
    if not math.isfinite(value):
        raise UnitError(f"{text!r} is not a finite number")
    return value, match.group(2)


def _parse_family(text: str | int | float, family: str) -> float:
    canonical, factors = _FAMILIES[family]
    if isinstance(text, bool):
        raise UnitError(f"{text!r} is not a quantity in {canonical}")
    if isinstance(text, (int, float)):
        return float(text)
    value, unit = _split(text)
    factor = factors.get(unit.lower())
    if factor is None:
        known = ", ".join(sorted({u for u in factors if u}))
        if not unit:  # "5" could mean seconds or milliseconds: a string says which
            raise UnitError(f"{text!r} has no unit: write one, like '{value:g} {canonical}' (units: {known})")
        raise UnitError(f"{text!r}: unknown unit {unit!r}; expected one of {known}")
    if not math.isfinite(value * factor):
        raise UnitError(f"{text!r} is too large to represent")
    return value * factor


def parse_bytes(text: str | int | float) -> float:
    """Bytes from "2 GiB", "300MB", "512 KiB" or a bare number of bytes.

    Decimal prefixes are decimal (1 GB = 10**9 B); "G"/"M"/"K" alone are binary.
    """
    return _parse_family(text, "bytes")


def parse_seconds(text: str | int | float) -> float:
    """Seconds from "50 ms", "2 s", "1.5min" or a bare number of seconds."""
    return _parse_family(text, "seconds")


def parse_quantity(text: str | int | float, canonical_unit: str) -> float:
    """A quantity in the family whose canonical unit is `canonical_unit` (e.g. "B", "s", "J")."""
    for family, (unit, _) in _FAMILIES.items():
        if unit == canonical_unit:
            return _parse_family(text, family)
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    value, unit = _split(str(text))
    if unit and unit.lower() != canonical_unit.lower():
        raise UnitError(f"{text!r}: expected a value in {canonical_unit}")
    return value


def parse_percent(text: str) -> float:
    """A signed relative tolerance: "+5%" -> 0.05, "-10 %" -> -0.10."""
    match = re.fullmatch(rf"\s*({_NUMBER})\s*%\s*", text)
    if not match or match.group(1)[0] not in "+-":
        raise UnitError(f"{text!r} is not a signed percentage like '+5%'")
    return float(match.group(1)) / 100.0


def format_bytes(value: float) -> str:
    """Binary-prefixed size, e.g. 1536 -> '1.50 KiB'."""
    sign = "-" if value < 0 else ""
    value = abs(value)
    for unit, factor in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= factor:
            return f"{sign}{value / factor:.2f} {unit}"
    return f"{sign}{value:.0f} B"


def format_seconds(value: float) -> str:
    for unit, factor in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {unit}"
    return f"{value / 1e-9:.3g} ns"


def format_change(change: float) -> str:
    """A relative change, current / baseline - 1, as "+12.3%".

    A change from zero has no ratio (it is stored as +inf); it reads "from 0". A change too small
    for one decimal keeps two significant digits ("+0.0021%"): a counted metric that moved by a few
    parts per million must not read "+0.0%", as if it had not moved.
    """
    if math.isinf(change):
        return "from 0"
    percent = change * 100
    if percent == 0 or abs(percent) >= 0.05:
        return f"{percent:+.1f}%"
    decimals = 1 - math.floor(math.log10(abs(percent)))
    return f"{percent:+.{decimals}f}%"


def format_value(value: float | None, unit: str) -> str:
    """Human form of a metric value in its canonical unit; 'n/a' when unavailable."""
    if value is None:
        return "n/a"
    if unit == "B":
        return format_bytes(value)
    if unit == "s":
        return format_seconds(value)
    if unit in ("fraction",):
        return f"{value * 100:.1f}%"
    if abs(value) >= 1e6 or (0 < abs(value) < 1e-3):
        return f"{value:.3e} {unit}"
    return f"{value:.4g} {unit}"

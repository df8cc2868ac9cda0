"""Property tests of the unit parsers: what is formatted parses back; bad input is a UnitError."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_efficientllm.core.units import (
    UnitError,
    format_bytes,
    format_change,
    format_seconds,
    format_value,
    parse_bytes,
    parse_percent,
    parse_quantity,
    parse_seconds,
)

FAST = settings(max_examples=150, deadline=None)

BINARY = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
DECIMAL = {"kB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0}

sizes = st.floats(min_value=0, max_value=2.0**60, allow_nan=False)
durations = st.floats(min_value=1e-12, max_value=1e6, allow_nan=False)


@FAST
@given(sizes)
def test_format_bytes_parses_back_to_within_its_printed_precision(n: float) -> None:
    text = format_bytes(n)
    # Two decimals of the chosen binary unit (or whole bytes): half a unit in the last place.
    unit = text.split()[-1]
    assert parse_bytes(text) == pytest.approx(n, abs=0.5 * 0.01 * BINARY[unit] + 0.5)


@FAST
@given(durations)
def test_format_seconds_parses_back_to_three_significant_digits(s: float) -> None:
    text = format_seconds(s)
    assert parse_seconds(text) == pytest.approx(s, rel=5e-3), text


@FAST
@given(st.one_of(sizes.map(lambda v: (v, "B")), durations.map(lambda v: (v, "s"))))
def test_format_value_parses_back_through_parse_quantity(pair: tuple[float, str]) -> None:
    value, unit = pair
    text = format_value(value, unit)
    assert parse_quantity(text, unit) == pytest.approx(value, rel=5e-3, abs=0.5 * 0.01 * 2**40)


@FAST
@given(
    st.integers(min_value=0, max_value=10**6),
    st.sampled_from(sorted({**BINARY, **DECIMAL})),
    st.sampled_from(["", " ", "  "]),
    st.booleans(),
)
def test_whole_sizes_parse_exactly_in_any_case_and_spacing(n: int, unit: str, space: str, upper: bool) -> None:
    spelled = unit.upper() if upper else unit.lower()
    assert parse_bytes(f"{n}{space}{spelled}") == n * {**BINARY, **DECIMAL}[unit]


@FAST
@given(st.decimals(min_value=0, max_value=10**6, places=3), st.sampled_from(sorted(SECONDS)))
def test_decimal_durations_parse_to_the_same_seconds(d, unit: str) -> None:
    assert parse_seconds(f"{d} {unit}") == pytest.approx(float(d) * SECONDS[unit], rel=1e-12)


@FAST
@given(st.decimals(min_value=-1000, max_value=1000, places=2).filter(lambda d: d != 0))
def test_signed_percentages_round_trip(d) -> None:
    text = f"{d:+}%"
    assert parse_percent(text) == pytest.approx(float(d) / 100, rel=1e-12)
    assert math.copysign(1, parse_percent(text)) == math.copysign(1, float(d))


@FAST
@given(st.decimals(min_value=0, max_value=1000, places=2))
def test_unsigned_percentages_are_refused(d) -> None:
    # A tolerance must say which way: "5%" is ambiguous, "+5%" is not.
    with pytest.raises(UnitError, match="signed percentage"):
        parse_percent(f"{d}%")


@FAST
@given(st.text(max_size=24))
def test_any_text_is_a_finite_size_or_a_unit_error(text: str) -> None:
    try:
        value = parse_bytes(text)
    except UnitError:
        return
    assert math.isfinite(value)


# Found by this test (then fixed in units._parse_family): "1e300 TiB" was accepted as an
# infinite budget because the finiteness check ran before the unit's factor was applied.
@FAST
@given(st.floats(min_value=1e300, max_value=1.7e308), st.sampled_from(["TiB", "TB", "h"]))
def test_a_huge_number_times_its_unit_is_refused_not_infinite(value: float, unit: str) -> None:
    parse = parse_seconds if unit == "h" else parse_bytes
    text = f"{value!r} {unit}"
    try:
        result = parse(text)
    except UnitError:
        return
    assert math.isfinite(result), f"{text!r} parsed to {result}"


@FAST
@given(st.floats(min_value=-1.0, max_value=1e6, allow_nan=False, allow_infinity=False))
def test_format_change_parses_back_as_the_signed_percentage_it_shows(change: float) -> None:
    assert parse_percent(format_change(change)) == pytest.approx(change, abs=0.0005)


@FAST
@given(st.floats(min_value=-1.0, max_value=1e6, allow_nan=False, allow_infinity=False).filter(lambda x: x != 0))
def test_a_change_never_reads_as_none(change: float) -> None:
    # A counted metric that moved by parts per million once read "+0.0%" in the summary.
    assert format_change(change) not in ("+0.0%", "-0.0%")


def test_a_small_change_keeps_two_significant_digits() -> None:
    assert [format_change(x) for x in (0.0, 0.123, 0.0004, -0.000021, 1.2e-9)] == [
        "+0.0%",
        "+12.3%",
        "+0.040%",
        "-0.0021%",
        "+0.00000012%",
    ]


def test_a_change_from_zero_reads_from_0_not_inf() -> None:
    assert format_change(math.inf) == "from 0"


@pytest.mark.parametrize(
    ("parse", "text", "shown"), [(parse_seconds, "5", "'5 s'"), (parse_bytes, " 1024 ", "'1024 B'")]
)
def test_a_bare_number_in_text_is_refused_saying_it_lacks_a_unit(parse, text: str, shown: str) -> None:
    # A number (not text) is the canonical unit; text with no unit could mean any of them.
    with pytest.raises(UnitError, match=rf"^{text!r} has no unit: write one, like {shown} \(units: "):
        parse(text)
    assert parse(float(text)) == float(text)

"""Limits and quantities as users write them (markers, `--efficiency-limit`, the ini): which text
is a budget, which a tolerance, which a quantity of the metric's unit, and what a wrong one is told."""

from __future__ import annotations

import pytest

from pytest_efficientllm.core.limits import LimitError, parse_limit, parse_limit_assignments
from pytest_efficientllm.core.units import UnitError, parse_quantity


def test_a_budget_on_a_share_takes_a_percentage() -> None:
    limit = parse_limit("MFU", ">= 40%")
    assert (limit.kind, limit.op, limit.bound) == ("budget", ">=", pytest.approx(0.4))
    # A share's budget may be the plain fraction too.
    assert parse_limit("MFU", ">= 0.4").bound == pytest.approx(0.4)


@pytest.mark.parametrize("text", ["5%", "%", "+5"])
def test_a_tolerance_needs_its_sign_and_its_percent(text: str) -> None:
    with pytest.raises(LimitError, match="expected a budget like '<= 5 s' or a tolerance like '\\+5%'"):
        parse_limit("latency", text)


def test_the_error_shows_a_budget_in_the_metric_s_own_unit() -> None:
    with pytest.raises(LimitError, match="peak_memory='5': expected a budget like '<= 5 B'"):
        parse_limit("peak_memory", "5")
    # A share or a ratio has no unit to write after the number.
    for metric in ("MFU", "MCR"):
        with pytest.raises(LimitError, match="expected a budget like '>= 0.5'"):
            parse_limit(metric, "5")


def test_blank_lines_and_comments_of_an_ini_list_are_not_limits() -> None:
    limits = parse_limit_assignments(["", "  # the default for every test", "latency=+5%"], "ini")
    assert [(limit.metric, limit.text) for limit in limits] == [("AL", "+5%")]


@pytest.mark.parametrize("text", ["3 FLOP/B", "3 flop/b", "3", 3, 3.0])
def test_a_quantity_of_a_unit_without_prefixes_is_its_number(text: str | float) -> None:
    assert parse_quantity(text, "FLOP/B") == 3.0


@pytest.mark.parametrize(("text", "why"), [("5 J", "expected a value in FLOP/B"), (True, "not a number")])
def test_a_quantity_in_another_unit_or_a_flag_is_refused(text: str | bool, why: str) -> None:
    with pytest.raises(UnitError, match=why):
        parse_quantity(text, "FLOP/B")

"""How `compare` pairs the records of two run files (`report.comparison.pair`): by node id and
profile, else by a node id that is unique on both sides, so a test measured on other hardware is
compared (and said to be) rather than called new; and what it prints of tests it could not compare."""

from __future__ import annotations

import pytest

from pytest_efficientllm.core.record import Record
from pytest_efficientllm.report import comparison
from pytest_efficientllm.report.comparison import pair, render_comparison
from pytest_efficientllm.storage.runfile import Run
from tests.helpers.report_records import make_record

A = "t.py::test_a"


def at(*profiles: str) -> list[Record]:
    return [make_record(A, profile=p) for p in profiles]


def profile(record: Record | None) -> str | None:
    return record.profile if record is not None else None


def shown(pairs: list, missing: list[Record]) -> tuple[list, list]:
    return [(profile(old), profile(new)) for old, new in pairs], [r.profile for r in missing]


@pytest.mark.parametrize(
    ("old", "new", "pairs", "missing"),
    [
        # The same profile pairs, and another profile's record of the test is left over.
        (["cpu", "h100"], ["h100"], [("h100", "h100")], ["cpu"]),
        # One record each side under different profiles: paired, for the rules to say "other hardware".
        (["cpu"], ["h100"], [("cpu", "h100")], []),
        # Ambiguous on either side: nothing is guessed.
        (["cpu", "h200"], ["h100"], [(None, "h100")], ["cpu", "h200"]),
        (["cpu"], ["h100", "h200"], [(None, "h100"), (None, "h200")], ["cpu"]),
    ],
)
def test_records_pair_by_profile_else_by_a_node_id_unique_on_both_sides(
    old: list[str], new: list[str], pairs: list, missing: list[str]
) -> None:
    assert shown(*pair(Run(at(*old)), Run(at(*new)))) == (pairs, missing)


def test_a_test_on_one_side_only_or_with_nothing_in_common_is_said_so_and_counts_no_verdict() -> None:
    results = [
        comparison.TestComparison("t.py::test_gone", "cpu", only_in="old"),
        comparison.TestComparison("t.py::test_new", "cpu", only_in="new"),
        comparison.TestComparison("t.py::test_bare", "cpu"),
    ]
    assert render_comparison(results, "base.json", "head.json") == [
        "t.py::test_gone [cpu]",
        "  missing   only in base.json: not measured in head.json",
        "t.py::test_new [cpu]",
        "  new       only in head.json: no baseline to compare with",
        "t.py::test_bare [cpu]",
        "  (no gated metric in common)",
        "verdicts: none",
        "no regression: 1 test(s) compared",
    ]

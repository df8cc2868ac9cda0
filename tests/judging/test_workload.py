"""A declared setting that differs from the baseline's is named beside a counted regression, which still fails."""

from __future__ import annotations

from pytest_efficientllm.core.record import Record
from pytest_efficientllm.judging.compare import compare_record
from pytest_efficientllm.judging.workload import workload_changes
from tests.helpers.record_builders import counted, record

TINY = {"hidden": 64, "layers": 2, "dtype": "bfloat16", "rounds": 5, "warmup": 1, "threads": 1}


def with_settings(flops: float = 8.6e7, **settings: object) -> Record:
    r = record("suites/t.py::test_prefill[mqa]", counted("flops", flops, "FLOP"))
    r.settings = dict(settings)
    return r


def test_declared_settings_that_differ_are_named_with_both_values() -> None:
    assert workload_changes(TINY, {**TINY, "hidden": 256, "layers": 4, "dtype": "float32"}) == [
        "dtype 'bfloat16' -> 'float32'",
        "hidden 64 -> 256",
        "layers 2 -> 4",
    ]


def test_how_the_plugin_measured_and_one_sided_settings_are_not_a_change() -> None:
    # More rounds, other threads, other limits or evidence: the same workload measured otherwise.
    other = {**TINY, "rounds": 20, "warmup": 3, "threads": 2, "limits": ["AL=+5%"], "counted_cost": {"runs": 2}}
    assert workload_changes(TINY, other) == []
    # A baseline recorded before the test declared `scale` is not thereby of another workload.
    assert workload_changes(TINY, {**TINY, "scale": "tiny"}) == []


def test_a_long_list_of_changes_is_cut_with_a_count() -> None:
    base = {f"s{i}": i for i in range(7)}
    assert workload_changes(base, {k: v + 1 for k, v in base.items()})[-1] == "3 more"


def test_a_counted_regression_under_other_declared_settings_still_fails_and_names_them() -> None:
    # An upcast declares another dtype: it is the regression the gate exists for, so it fails;
    # the note says which settings moved, so a run at another scale reads as what it is.
    (v,) = compare_record(with_settings(**TINY), with_settings(1.13e10, **{**TINY, "dtype": "float32"}))
    assert v.status == "fail" and v.metric == "flops"
    assert "regression; the test's settings differ from the baseline's (dtype 'bfloat16' -> 'float32'): " in v.message
    assert v.message.endswith("if that change is meant, record the baselines again with --update-baselines")


def test_no_note_where_the_count_holds_or_the_settings_agree() -> None:
    (same_count,) = compare_record(with_settings(**TINY), with_settings(**{**TINY, "hidden": 256}))
    assert same_count.status == "pass" and "settings" not in same_count.message
    (more_rounds,) = compare_record(with_settings(**TINY), with_settings(9e7, **{**TINY, "rounds": 9}))
    assert more_rounds.status == "fail" and "settings" not in more_rounds.message

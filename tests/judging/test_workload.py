"""A baseline of another workload (declared settings or world size that differ) is reported, not compared."""

from __future__ import annotations

from pytest_efficientllm.core.record import Record
from pytest_efficientllm.judging.compare import compare_record
from pytest_efficientllm.judging.gate import GateOptions, judge
from pytest_efficientllm.judging.workload import workload_changes
from tests.helpers.record_builders import counted, record

TINY = {"hidden": 64, "layers": 2, "dtype": "float32", "rounds": 5, "warmup": 1, "threads": 1}


def with_settings(flops: float = 8.6e7, world_size: int = 1, **settings: object) -> Record:
    r = record("suites/t.py::test_prefill[mqa]", counted("flops", flops, "FLOP"))
    r.settings = dict(settings)
    r.world_size = world_size
    return r


def test_declared_settings_that_differ_are_named_with_both_values() -> None:
    small = with_settings(**{**TINY, "hidden": 256, "layers": 4, "dtype": "bfloat16"})
    assert workload_changes(with_settings(**TINY), small) == [
        "dtype: 'float32' -> 'bfloat16'",
        "hidden: 64 -> 256",
        "layers: 2 -> 4",
    ]


def test_another_world_size_is_another_workload_and_named_first() -> None:
    three_layers = {**TINY, "layers": 3}
    changes = workload_changes(with_settings(world_size=2, **TINY), with_settings(world_size=4, **three_layers))
    assert changes == ["world_size: 2 -> 4", "layers: 2 -> 3"]


def test_how_the_plugin_measured_and_one_sided_settings_are_not_a_change() -> None:
    # More rounds, other threads, other limits or evidence: the same workload measured otherwise.
    other = {**TINY, "rounds": 20, "warmup": 3, "threads": 2, "limits": ["AL=+5%"], "counted_cost": {"runs": 2}}
    assert workload_changes(with_settings(**TINY), with_settings(**other)) == []
    # A baseline recorded before the test declared `scale` still compares.
    assert workload_changes(with_settings(**TINY), with_settings(**TINY, scale="tiny")) == []


def test_a_long_list_of_changes_is_cut_with_a_count() -> None:
    base = {f"s{i}": i for i in range(7)}
    changes = workload_changes(with_settings(**base), with_settings(**{k: v + 1 for k, v in base.items()}))
    assert changes[-1] == "and 3 more" and len(changes) == 5


def test_a_baseline_of_another_workload_is_reported_not_a_thousandfold_regression() -> None:
    base = with_settings(**TINY)
    cur = with_settings(1.13e10, **{**TINY, "hidden": 256, "layers": 4})
    (v,) = compare_record(base, cur)
    assert (v.status, v.kind, v.change) == ("warn", "workload", None)
    assert "another workload (hidden: 64 -> 256; layers: 2 -> 4): not compared" in v.message
    assert "--update-baselines" in v.message
    # The same workload measured with more rounds compares as usual.
    (same,) = compare_record(base, with_settings(**{**TINY, "rounds": 9}))
    assert (same.metric, same.status) == ("flops", "pass")


def test_strict_fails_a_baseline_of_another_workload_as_it_fails_a_missing_one() -> None:
    base, cur = with_settings(**TINY), with_settings(1.13e10, **{**TINY, "hidden": 256})
    (v,) = judge(cur, (), base, "", GateOptions(strict=True))
    assert v.failed and v.kind == "workload" and "--efficiency-strict" in v.message
    # Being replaced, it is not a failure even then.
    (v,) = judge(cur, (), base, "", GateOptions(strict=True, update=True))
    assert v.status == "warn"

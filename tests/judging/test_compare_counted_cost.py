"""The gate on the counted cost (bytes_accessed, allocations, the dtype shares...).

What must hold: a change of a counted byte or FLOP metric names the dtype shift behind it; a
baseline recorded before these metrics existed reports each of them `new`, never a failure;
a count that varies run to run is not gated exactly unless a tolerance asks for it.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from pytest_efficientllm.core.limits import parse_limit
from pytest_efficientllm.core.metrics import counted
from pytest_efficientllm.core.record import Metric
from pytest_efficientllm.judging.compare import compare_record
from pytest_efficientllm.judging.dtype_shift import dtype_shift
from pytest_efficientllm.measuring.backends import cpu_backend
from pytest_efficientllm.measuring.meter import Meter, Work
from tests.helpers.record_builders import record


def by_metric(verdicts):
    return {v.metric: v for v in verdicts}


def mlp_record(dtype: torch.dtype):
    """The counted cost of `(x @ w1).relu() @ w2` in one dtype, as a record."""
    torch.manual_seed(0)
    x, w1, w2 = (torch.randn(*shape).to(dtype) for shape in ((8, 32), (32, 64), (64, 16)))
    cost = Meter(cpu_backend(threads=1)).count(lambda: (x @ w1).relu() @ w2, Work())
    return record("t.py::mlp", cost.flops, *cost.metrics.values())


def test_an_upcast_from_bf16_to_fp32_doubles_the_bytes_and_the_message_names_it() -> None:
    bf16, fp32 = mlp_record(torch.bfloat16), mlp_record(torch.float32)
    assert fp32["bytes_accessed"].value == 2 * bf16["bytes_accessed"].value
    assert fp32["flops"].value == bf16["flops"].value
    verdicts = by_metric(compare_record(bf16, fp32))
    v = verdicts["bytes_accessed"]
    assert v.status == "fail" and v.change == pytest.approx(1.0)
    assert "bf16 -> fp32: 100% of bytes were bf16, now 0%" in v.message, v.message
    assert "bf16 -> fp32" in verdicts["allocated_bytes"].message
    assert verdicts["flops"].status == "pass" and "->" not in verdicts["flops"].message
    assert verdicts["operators"].status == "pass"
    assert not {"bytes_share:bf16", "bytes_share:fp32", "arithmetic_intensity"} & set(verdicts)  # info: not gated
    back = by_metric(compare_record(fp32, bf16))["bytes_accessed"]
    assert back.status == "improved" and "fp32 -> bf16: 100% of bytes were fp32, now 0%" in back.message


def test_a_shift_is_named_only_when_a_share_moved_by_five_points_or_more() -> None:
    def shares(total=1000.0, **values):
        return record(
            "t.py::a",
            counted("bytes_accessed", total, "m"),
            *(counted(f"bytes_share:{d}", v, "m") for d, v in values.items()),
        )

    assert dtype_shift(shares(bf16=0.97, int64=0.03), shares(fp32=0.97, int64=0.03), "bytes_accessed") == (
        "bf16 -> fp32: 97% of bytes were bf16, now 0%"
    )
    assert dtype_shift(shares(bf16=0.97, int64=0.03), shares(bf16=0.95, int64=0.05), "bytes_accessed") == ""
    assert dtype_shift(shares(bf16=1.0), record("t.py::a"), "bytes_accessed") == ""  # nothing to compare
    assert dtype_shift(shares(bf16=1.0), shares(fp32=1.0), "operators") == ""  # not a byte or FLOP count
    assert dtype_shift(record("t.py::a"), shares(bf16=1.0), "bytes_accessed") == ""  # nor the other way round
    # Six points lost, spread over two dtypes that gained three each: no dtype took the work over.
    spread = shares(bf16=0.44, fp32=0.33, int8=0.23)
    assert dtype_shift(shares(bf16=0.5, fp32=0.3, int8=0.2), spread, "bytes_accessed") == ""
    # Shares without the total they divide: whether the lost dtype's own work fell is unknown.
    no_total = [
        record("t.py::a", *(m for n, m in r.metrics.items() if n != "bytes_accessed"))
        for r in (
            shares(bf16=0.97, int64=0.03),
            shares(fp32=0.97, int64=0.03),
        )
    ]
    assert dtype_shift(*no_total, "bytes_accessed") == ""


def test_a_share_that_fell_because_other_work_grew_around_it_is_not_named_as_a_shift() -> None:
    # bf16 work stayed (900 B -> 900 B) while fp32 work was added (an adapter path, a
    # recomputation): bf16's share fell from 90% to 45% but nothing was upcast.
    def shares(total, **values):
        return record(
            "t.py::a",
            counted("bytes_accessed", total, "m"),
            *(counted(f"bytes_share:{d}", v, "m") for d, v in values.items()),
        )

    grew = shares(2000.0, bf16=0.45, fp32=0.55)
    assert dtype_shift(shares(1000.0, bf16=0.9, fp32=0.1), grew, "bytes_accessed") == ""
    # The same shares where bf16's own bytes fell (1000 B in all): an upcast, named.
    assert dtype_shift(shares(1000.0, bf16=0.9, fp32=0.1), shares(1000.0, bf16=0.45, fp32=0.55), "bytes_accessed")


def test_a_baseline_without_the_counted_cost_reports_each_new_metric_new_and_fails_nothing() -> None:
    current = mlp_record(torch.bfloat16)
    old = record("t.py::mlp", current["flops"])
    verdicts = compare_record(old, current)
    statuses = {v.metric: v.status for v in verdicts}
    assert statuses == {
        "flops": "pass",
        "bytes_accessed": "new",
        "tensor_peak_bytes": "new",
        "retained_tensor_bytes": "new",
        "allocations": "new",
        "allocated_bytes": "new",
        "operators": "new",
    }
    assert not any(v.failed for v in verdicts)


def test_a_count_that_varies_is_not_gated_exactly_but_a_tolerance_gates_it() -> None:
    base = record("t.py::a", counted("bytes_accessed", 1000.0, "m"))
    varying = record("t.py::a", counted("bytes_accessed", 1500.0, "m", samples=(1500.0, 1200.0)))
    v = by_metric(compare_record(base, varying))["bytes_accessed"]
    assert v.status == "skipped" and "varies run to run" in v.message and "tolerance" in v.message
    v = by_metric(compare_record(varying, base))["bytes_accessed"]
    assert v.status == "skipped" and "the baseline" in v.message
    gated = by_metric(compare_record(base, varying, [parse_limit("bytes_accessed", "+10%")]))["bytes_accessed"]
    assert gated.status == "fail" and gated.change == pytest.approx(0.5)
    loose = by_metric(compare_record(base, varying, [parse_limit("bytes_accessed", "+60%")]))["bytes_accessed"]
    assert loose.status == "pass"


def test_a_count_that_grows_from_zero_fails_reads_from_0_and_stays_valid_json() -> None:
    base = record("t.py::leak", counted("retained_tensor_bytes", 0.0, "m"))
    leaking = record("t.py::leak", counted("retained_tensor_bytes", 131072.0, "m"))
    v = by_metric(compare_record(base, leaking))["retained_tensor_bytes"]
    assert v.status == "fail" and v.change == math.inf
    assert "128.00 KiB vs baseline 0 B (from 0;" in v.message and "inf" not in v.message, v.message
    leaking.verdicts = [v.to_dict()]
    stored = json.loads(json.dumps(leaking.to_dict(), allow_nan=False))
    assert stored["verdicts"][0]["change"] is None and stored["verdicts"][0]["status"] == "fail"


def test_two_counts_that_read_alike_when_rounded_are_shown_whole_with_their_difference() -> None:
    # Under torch 2.11 and transformers 5.17, test_attention.py::test_train_step[mha] counted 1,024
    # FLOPs more than its baseline's 301,989,888: rounded to four digits both read "3.020e+08 FLOP
    # (+0.0%)", a failure that showed no difference at all.
    base = record("t.py::a", counted("flops", 301_989_888, "FLOP"), counted("operators", 171, "count"))
    cur = record("t.py::a", counted("flops", 301_990_912, "FLOP"), counted("operators", 178, "count"))
    verdicts = by_metric(compare_record(base, cur))
    assert verdicts["flops"].status == "fail"
    assert "301,990,912 FLOP vs baseline 301,989,888 FLOP (+1,024 FLOP, +0.00034%; counted, exact)" in (
        verdicts["flops"].message
    )
    # A difference the rounded form shows keeps it.
    assert "178 count vs baseline 171 count (+4.1%; counted, exact)" in verdicts["operators"].message
    # A non-integral count (a quality score) beyond its 1 ppm: more digits, no absolute difference.
    q_base = record("t.py::a", Metric("quality:loss", 3.8230, "nats", "lower", "counted", "test builder"))
    q_cur = record("t.py::a", Metric("quality:loss", 3.8231, "nats", "lower", "counted", "test builder"))
    (v,) = compare_record(q_base, q_cur)
    assert v.status == "fail" and "3.8231 nats vs baseline 3.823 nats (+0.0026%;" in v.message, v.message


def test_a_count_that_moved_under_other_package_versions_names_them() -> None:
    old = {"packages": {"torch": "2.13.0", "transformers": "5.25.0"}}
    new = {"packages": {"torch": "2.13.0", "transformers": "5.17.0"}}
    base = record("t.py::a", counted("operators", 171, "count"), counted("flops", 100, "FLOP"), fingerprint=old)
    cur = record("t.py::a", counted("operators", 178, "count"), counted("flops", 100, "FLOP"), fingerprint=new)
    verdicts = by_metric(compare_record(base, cur))
    moved = verdicts["operators"]
    assert moved.status == "fail"
    assert moved.message.endswith(
        "regression; package versions differ from the baseline's (transformers 5.25.0 -> 5.17.0): "
        "if that change is meant, record the baselines again with --update-baselines"
    ), moved.message
    assert "package" not in verdicts["flops"].message  # an unchanged count says nothing of versions
    back = by_metric(compare_record(cur, base))["operators"]
    assert (
        back.status == "improved"
        and "better; package versions differ from the baseline's (transformers 5.17.0 -> 5.25.0); refresh"
        in back.message
    )
    # Under the same versions a changed count is the code's: no package is named.
    same = record("t.py::a", counted("operators", 178, "count"), fingerprint=old)
    assert "package" not in by_metric(compare_record(base, same))["operators"].message

"""The roofline estimate (measuring/roofline.py) against values computed by hand from the
datasheet table: time = max(FLOPs / dense peak of the dominant dtype, bytes / HBM bandwidth)."""

from __future__ import annotations

import pytest

from pytest_efficientllm.core.devices import profile_device
from pytest_efficientllm.core.record import Metric
from pytest_efficientllm.measuring.roofline import (
    dominant_dtype,
    is_input,
    roofline_metric,
    roofline_metrics,
)

H100 = profile_device("h100")
A100 = profile_device("a100")


def counts(flops: float | None = None, bytes_accessed: float | None = None, **shares: float) -> dict[str, Metric]:
    """A record's metrics as the counting branch records them (built directly: its names are the catalog's)."""
    out = {}
    if flops is not None:
        out["flops"] = Metric("flops", flops, "FLOP", "lower", "counted", "given by the test")
    if bytes_accessed is not None:
        out["bytes_accessed"] = Metric("bytes_accessed", bytes_accessed, "B", "lower", "counted", "counted")
    for dtype, share in shares.items():
        name = f"flops_share:{dtype}"
        out[name] = Metric(name, share, "fraction", "info", "counted", "FLOPs by dtype")
    return out


def test_a_memory_bound_round_takes_bytes_over_bandwidth() -> None:
    m = roofline_metric("roofline_time", counts(1e9, 1e9, bf16=1.0), H100, "")
    assert m.value == pytest.approx(1e9 / 3.35e12)  # 298.5 us; FLOPs alone: 1e9 / 989e12 = 1.01 us
    assert (m.unit, m.direction, m.source) == ("s", "lower", "estimated")
    assert m.method.startswith(
        "estimate: roofline max(FLOPs / 989 TFLOP/s bf16 peak of H100 SXM 80GB (dominant dtype bf16), "
        "bytes / 3.35 TB/s of H100 SXM 80GB); memory-bound"
    )


def test_a_compute_bound_round_takes_flops_over_peak() -> None:
    m = roofline_metric("roofline_time:h100", counts(1e15, 1e9, bf16=1.0), H100, "")
    assert m.value == pytest.approx(1e15 / 989e12)  # 1.011 s; bytes alone: 298.5 us
    assert m.name == "roofline_time:h100"
    assert "compute-bound" in m.method


def test_the_dominant_dtype_is_the_one_with_the_largest_flops_share() -> None:
    mostly_fp32 = counts(67e12, 0.0, bf16=0.4, fp32=0.6)
    assert dominant_dtype(mostly_fp32) == "fp32"
    m = roofline_metric("roofline_time", mostly_fp32, H100, "")
    assert m.value == pytest.approx(1.0)  # 67 TFLOP / 67 TFLOP/s non-tensor fp32
    assert "67 TFLOP/s fp32 peak" in m.method
    mostly_bf16 = counts(989e12, 0.0, bf16=0.7, fp32=0.3)
    assert roofline_metric("roofline_time", mostly_bf16, H100, "").value == pytest.approx(1.0)
    assert dominant_dtype(counts(1.0, 1.0, fp16=0.5, bf16=0.5)) == "bf16"  # a tie goes to the first name


def test_without_a_dtype_mix_the_bf16_peak_is_assumed_and_said() -> None:
    m = roofline_metric("roofline_time", counts(989e12, 0.0), H100, "")
    assert m.value == pytest.approx(1.0)
    assert "no flops_share recorded: bf16 assumed" in m.method


@pytest.mark.parametrize("dtype", ["int8", "int4", "uint8"])
def test_integer_work_runs_at_the_int8_peak(dtype: str) -> None:
    m = roofline_metric("roofline_time", counts(1979e12, 0.0, **{dtype: 0.9, "bf16": 0.1}), H100, "")
    assert m.value == pytest.approx(1.0)
    assert "1979 TOP/s int8 peak" in m.method
    if dtype != "int8":
        assert f"dominant dtype {dtype}, at the int8 peak" in m.method


def test_a_dtype_the_table_has_no_peak_for_uses_bf16_labelled() -> None:
    m = roofline_metric("roofline_time:a100", counts(312e12, 0.0, fp8=1.0), A100, "")
    assert m.value == pytest.approx(1.0)
    assert "312 TFLOP/s bf16 peak of A100 SXM 80GB" in m.method
    assert "no fp8 peak for A100 SXM 80GB in the table, bf16 peak used" in m.method
    fp64 = roofline_metric("roofline_time", counts(989e12, 0.0, fp64=1.0), H100, "")
    assert fp64.value == pytest.approx(1.0) and "no fp64 peak" in fp64.method


def test_a100_bandwidth() -> None:
    m = roofline_metric("roofline_time:a100", counts(0.0, 2.039e12), A100, "")
    assert m.value == pytest.approx(1.0)
    assert "bytes / 2.039 TB/s of A100 SXM 80GB" in m.method


@pytest.mark.parametrize(
    ("metrics", "why"),
    [
        (counts(1e9), "bytes_accessed not recorded"),
        (counts(bytes_accessed=1e9), "flops not recorded"),
        (
            {
                "flops": Metric("flops", None, "FLOP", "lower", "counted", "FlopCounterMode", note="no torch"),
                **counts(bytes_accessed=1e9),
            },
            "flops unavailable (no torch)",
        ),
    ],
)
def test_missing_inputs_make_it_unavailable_with_the_reason(metrics: dict[str, Metric], why: str) -> None:
    m = roofline_metric("roofline_time:h100", metrics, H100, "")
    assert m.value is None and m.source == "estimated"
    assert why in m.note and "the roofline needs the FLOPs and the bytes accessed" in m.note
    assert m.method.startswith("estimate: roofline")


def test_the_run_profile_and_the_named_ones() -> None:
    record = counts(1e9, 1e9, bf16=1.0)
    on_cpu = roofline_metrics(record, "cpu", ("h200", "h100"))
    assert sorted(on_cpu) == ["roofline_time:h100", "roofline_time:h200"]  # no roofline_time on the CPU
    assert on_cpu["roofline_time:h200"].value == pytest.approx(1e9 / 4.8e12)
    assert on_cpu["roofline_time:h100"].value == pytest.approx(1e9 / 3.35e12)  # h100 stands for the SXM
    pcie = roofline_metrics(record, "h100", cuda_name="NVIDIA H100 PCIe")
    assert pcie["roofline_time"].value == pytest.approx(1e9 / 2.0e12)  # the detected device
    assert roofline_metrics(record, "gh200")["roofline_time"].value == pytest.approx(1e9 / 4.0e12)
    unlisted = roofline_metrics(record, "nvidia-l4", cuda_name="NVIDIA L4")["roofline_time"]
    assert unlisted.value is None and "no datasheet peaks for 'NVIDIA L4'" in unlisted.note


def test_a_record_without_flops_or_bytes_gets_none() -> None:
    assert roofline_metrics({}, "h100", ("a100",)) == {}
    assert roofline_metrics(counts(1e9), "cpu") == {}  # the CPU profile, nothing named


def test_which_names_are_inputs() -> None:
    assert is_input("flops") and is_input("bytes_accessed") and is_input("flops_share:int8")
    assert not is_input("bytes_share:int8") and not is_input("AL")

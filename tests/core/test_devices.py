"""The datasheet table (core/devices.py): dense peaks per dtype and HBM bandwidth, looked up
by CUDA device name or by profile."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_efficientllm.core.devices import (
    DEVICE_TABLE,
    GPU_PROFILES,
    ProfileError,
    cpu_isa,
    cpu_peak_estimate,
    lookup_device,
    machine_lock,
    peak_dtype,
    profile_device,
    resolve_profile,
)

T = 1e12


@pytest.mark.parametrize(
    ("name", "model", "bf16", "fp8", "int8", "fp32", "bandwidth"),
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM 80GB", 989, 1979, 1979, 67, 3.35),
        ("NVIDIA H100 PCIe", "H100 PCIe", 756, 1513, 1513, 51, 2.0),
        ("NVIDIA H200", "H200 SXM 141GB", 989, 1979, 1979, 67, 4.8),
        ("NVIDIA GH200 480GB", "GH200", 989, 1979, 1979, 67, 4.0),
        ("NVIDIA A100-SXM4-80GB", "A100 SXM 80GB", 312, None, 624, 19.5, 2.039),
    ],
)
def test_the_table_holds_the_dense_datasheet_figures(
    name: str, model: str, bf16: float, fp8: float | None, int8: float, fp32: float, bandwidth: float
) -> None:
    peak = lookup_device(name)
    assert peak is not None and peak.model == model
    assert peak.dtype_peak("bf16") == peak.dtype_peak("fp16") == peak.bf16_flops_per_s == bf16 * T
    assert peak.dtype_peak("fp8") == (fp8 * T if fp8 is not None else None)
    assert peak.dtype_peak("int8") == peak.int8_ops_per_s == int8 * T
    assert peak.dtype_peak("fp32") == pytest.approx(fp32 * T)
    assert peak.hbm_bytes_per_s == pytest.approx(bandwidth * T)


def test_every_entry_has_fp32_and_a_memory_generation() -> None:
    for _, peak in DEVICE_TABLE:
        assert peak.fp32_flops_per_s is not None and peak.fp32_flops_per_s < peak.bf16_flops_per_s
        assert peak.memory.startswith("HBM")


@pytest.mark.parametrize(
    ("dtype", "column"),
    [
        ("bf16", "bf16"),
        ("bfloat16", "bf16"),
        ("float16", "fp16"),
        ("FP32", "fp32"),
        ("float8_e4m3fn", "fp8"),
        ("fp8_e5m2", "fp8"),
        ("int8", "int8"),
        ("int4", "int8"),
        ("uint8", "int8"),
        ("fp64", "fp64"),
    ],
)
def test_a_dtype_maps_to_its_column(dtype: str, column: str) -> None:
    assert peak_dtype(dtype) == column


def test_a_dtype_without_a_column_has_no_peak() -> None:
    a100 = profile_device("a100")
    assert a100 is not None
    assert a100.dtype_peak("fp8") is None  # Ampere has no fp8
    assert a100.dtype_peak("fp64") is None
    assert a100.dtype_peak("int4") == 624 * T


def test_a_profile_stands_for_its_sxm_model() -> None:
    assert GPU_PROFILES == ("h100", "h200", "gh200", "a100")
    models = {p: profile_device(p).model for p in GPU_PROFILES}  # type: ignore[union-attr]
    assert models == {"h100": "H100 SXM 80GB", "h200": "H200 SXM 141GB", "gh200": "GH200", "a100": "A100 SXM 80GB"}
    assert profile_device("cpu") is None
    assert profile_device("nvidia-l4") is None


def test_cpu_isa_names_the_kernel_relevant_extensions_in_a_fixed_order() -> None:
    info = "processor\t: 0\nflags\t\t: fpu sse2 amx_int8 avx2 fma avx512f amx_tile amx_bf16 avx512_bf16\n"
    assert cpu_isa(info) == "avx2 fma avx512f avx512_bf16 amx_bf16 amx_int8"
    assert cpu_isa("processor\t: 0\n") == ""  # no flags line (another architecture): nothing claimed


def test_the_machine_wide_lock_is_one_file_whatever_the_temp_directory(tmp_path: Path) -> None:
    # tox gives each environment its own TMPDIR; two of them on one GPU must take the same lock.
    probe = "from pytest_efficientllm.core.devices import machine_lock; print(machine_lock('device-0').lock_file)"
    paths = set()
    for name in ("env-a", "env-b"):
        (tmp_path / name).mkdir()
        env = {**os.environ, "TMPDIR": str(tmp_path / name)}
        paths.add(
            subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
        )
    assert paths == {machine_lock("device-0").lock_file + "\n"}
    assert str(tmp_path) not in paths.pop()


@pytest.mark.parametrize(
    ("flags", "per_cycle", "isa"),
    [
        ("fpu sse sse2 avx avx2 fma avx512f", 32, "avx512"),
        ("fpu sse sse2 avx avx2 fma", 32, "avx2+fma"),
        ("fpu sse sse2 avx avx2", 8, "sse"),  # AVX2 without FMA: no fused multiply-add pipes
        ("fpu sse sse2 fma", 8, "sse"),
        ("fpu sse sse2", 8, "sse"),
    ],
)
def test_the_cpu_peak_estimate_is_threads_times_clock_times_the_isas_flops_per_cycle(
    flags: str, per_cycle: int, isa: str
) -> None:
    info = f"processor\t: 0\ncpu MHz\t\t: 2500.000\nflags\t\t: {flags}\n"
    est = cpu_peak_estimate(4, info)
    assert est.flops_per_s == pytest.approx(4 * 2.5e9 * per_cycle)
    assert est.method == f"estimate: 4 threads x 2.50 GHz x {per_cycle} fp32 FLOP/cycle ({isa})"
    # A clock given wins over cpuinfo's; without either, 2 GHz is assumed and said.
    assert cpu_peak_estimate(1, info, clock_hz=1e9).flops_per_s == pytest.approx(1e9 * per_cycle)
    no_clock = cpu_peak_estimate(1, f"flags\t\t: {flags}\n")
    assert no_clock.flops_per_s == pytest.approx(2e9 * per_cycle) and "2.00 GHz" in no_clock.method


@pytest.mark.parametrize(
    ("requested", "cuda_name", "profile"),
    [
        ("cpu", None, "cpu"),
        ("cpu", "NVIDIA H200", "cpu"),  # the CPU tier on a GPU machine, as asked
        ("auto", None, "cpu"),
        ("auto", "NVIDIA H200", "h200"),
        ("AUTO", "NVIDIA H100 80GB HBM3", "h100"),
        ("auto", "NVIDIA RTX 6000 Ada Generation", "nvidia-rtx-6000-ada-generation"),  # unlisted: its own
        ("h100", "NVIDIA H100 80GB HBM3", "h100"),
    ],
)
def test_the_profile_follows_gpu_and_the_detected_device(requested: str, cuda_name: str | None, profile: str) -> None:
    assert resolve_profile(requested, cuda_name) == profile


def test_a_gpu_profile_without_a_cuda_device_is_an_error_saying_what_to_use() -> None:
    with pytest.raises(ProfileError, match="--gpu=h200 was asked for, but no CUDA device was detected.*--gpu=cpu"):
        resolve_profile("h200", None)
    # A GPU the table does not list is not the one asked for either.
    with pytest.raises(ProfileError, match="--gpu=h200 was asked for, but the detected device is 'NVIDIA RTX 6000'"):
        resolve_profile("h200", "NVIDIA RTX 6000")

"""Hardware profiles (`--gpu`), device detection and the dense peak throughput table.

Peaks are dense (no sparsity) tensor-core figures from vendor datasheets (docs/telemetry.md).
A CPU peak is an estimate from cores x clock x FLOP/cycle and is labelled so.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

PROFILES = ("auto", "cpu", "h100", "h200", "gh200", "a100")


class ProfileError(ValueError):
    """An unknown `--gpu` value, or one that does not match the detected hardware."""


@dataclass(frozen=True)
class DevicePeak:
    """Dense peak throughput of one device model. Units: FLOP/s and bytes/s."""

    model: str
    profile: str
    bf16_flops_per_s: float
    fp8_flops_per_s: float | None
    int8_ops_per_s: float | None
    hbm_bytes_per_s: float


# Matched against the CUDA device name in order; first match wins (PCIe before SXM).
DEVICE_TABLE: tuple[tuple[str, DevicePeak], ...] = (
    (r"GH200", DevicePeak("GH200", "gh200", 989e12, 1979e12, 1979e12, 4.0e12)),
    (r"H200", DevicePeak("H200 SXM 141GB", "h200", 989e12, 1979e12, 1979e12, 4.8e12)),
    (r"H100.*PCIe", DevicePeak("H100 PCIe", "h100", 756e12, 1513e12, 1513e12, 2.0e12)),
    (r"H100", DevicePeak("H100 SXM 80GB", "h100", 989e12, 1979e12, 1979e12, 3.35e12)),
    (r"A100", DevicePeak("A100 SXM 80GB", "a100", 312e12, None, 624e12, 2.039e12)),
)


def lookup_device(name: str) -> DevicePeak | None:
    for pattern, peak in DEVICE_TABLE:
        if re.search(pattern, name, re.IGNORECASE):
            return peak
    return None


def clock_derived_peak(sm_count: int, max_sm_clock_hz: float, flops_per_clock_per_sm: int = 4096) -> float:
    """SMs x dense bf16 FLOP/clock/SM x SM clock (Hopper: 132 x 4096 x 1.83 GHz = 989 TFLOP/s)."""
    return sm_count * flops_per_clock_per_sm * max_sm_clock_hz


@dataclass(frozen=True)
class CpuPeakEstimate:
    flops_per_s: float
    method: str


def _cpuinfo(path: Path = Path("/proc/cpuinfo")) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def cpu_model_name() -> str:
    match = re.search(r"^model name\s*:\s*(.+)$", _cpuinfo(), re.MULTILINE)
    return match.group(1).strip() if match else "unknown CPU"


def cpu_peak_estimate(threads: int, cpuinfo: str | None = None, clock_hz: float | None = None) -> CpuPeakEstimate:
    """fp32 peak estimate: threads x clock x FLOP/cycle/core from the vector ISA.

    FLOP/cycle per core assumes two FMA pipes: AVX-512 32 (Zen 4 double-pumps 512-bit,
    so we take the 256-bit-pipe figure), AVX2 32, SSE 8.
    """
    info = _cpuinfo() if cpuinfo is None else cpuinfo
    flags_match = re.search(r"^flags\s*:\s*(.+)$", info, re.MULTILINE)
    flags = set(flags_match.group(1).split()) if flags_match else set()
    if "avx512f" in flags or ("avx2" in flags and "fma" in flags):
        per_cycle, isa = 32, "avx512/avx2+fma"
    else:
        per_cycle, isa = 8, "sse"
    if clock_hz is None:
        mhz = re.search(r"^cpu MHz\s*:\s*([\d.]+)", info, re.MULTILINE)
        clock_hz = float(mhz.group(1)) * 1e6 if mhz else 2.0e9
    peak = threads * clock_hz * per_cycle
    return CpuPeakEstimate(
        peak,
        f"estimate: {threads} threads x {clock_hz / 1e9:.2f} GHz x {per_cycle} fp32 FLOP/cycle ({isa})",
    )


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def detect_cuda_name() -> str | None:
    """Name of the first visible CUDA device, or None without one."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:
        return None
    return None


def resolve_profile(requested: str, cuda_name: str | None) -> str:
    """The baseline profile for `--gpu=requested` on hardware whose CUDA device is `cuda_name`.

    `auto` picks the detected GPU's profile (or `cpu`); naming a GPU that is not present
    is an error naming what was detected.
    """
    requested = requested.lower()
    if requested not in PROFILES:
        raise ProfileError(f"--gpu={requested!r} is not a known profile; choose one of {', '.join(PROFILES)}")
    if requested == "cpu":
        return "cpu"
    detected = lookup_device(cuda_name) if cuda_name else None
    if requested == "auto":
        if cuda_name is None:
            return "cpu"
        if detected is None:
            # An unlisted GPU still gets its own baselines, named after the device.
            return re.sub(r"[^a-z0-9]+", "-", cuda_name.lower()).strip("-")
        return detected.profile
    if cuda_name is None:
        raise ProfileError(
            f"--gpu={requested} was asked for, but no CUDA device was detected "
            "(torch.cuda.is_available() is false); use --gpu=cpu or --gpu=auto"
        )
    if detected is None or detected.profile != requested:
        raise ProfileError(f"--gpu={requested} was asked for, but the detected device is {cuda_name!r}")
    return requested

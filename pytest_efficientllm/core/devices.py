"""Hardware profiles (`--gpu`), device detection and the dense peak throughput table.

Peaks are dense (no sparsity) tensor-core figures from vendor datasheets, with plain
(non-tensor) fp32 and the HBM bandwidth beside them (docs/telemetry.md); the roofline
estimate (`measuring.roofline`) reads them per dtype.
A CPU peak is an estimate from cores x clock x FLOP/cycle and is labelled so.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

PROFILES = ("auto", "cpu", "h100", "h200", "gh200", "a100")


class ProfileError(ValueError):
    """An unknown `--gpu` value, or one that does not match the detected hardware."""


@dataclass(frozen=True)
class DevicePeak:
    """Dense peak throughput of one device model. Units: FLOP/s (OP/s for int8) and bytes/s.

    `bf16_flops_per_s` is also the fp16 peak (equal on every listed device). `fp32_flops_per_s`
    is *plain* fp32 on the CUDA cores (non-tensor), not TF32 on the tensor cores: PyTorch runs
    fp32 matmuls without TF32 unless `torch.backends.cuda.matmul.allow_tf32` is set, so a
    workload counted as fp32 gets this rate. `memory` names the HBM generation the bandwidth is for.
    """

    model: str
    profile: str
    bf16_flops_per_s: float
    fp8_flops_per_s: float | None
    int8_ops_per_s: float | None
    hbm_bytes_per_s: float
    fp32_flops_per_s: float | None = None
    memory: str = ""

    def dtype_peak(self, dtype: str) -> float | None:
        """Dense peak for a dtype's family (`peak_dtype`), None where the table lists none."""
        return {
            "bf16": self.bf16_flops_per_s,
            "fp16": self.bf16_flops_per_s,
            "fp8": self.fp8_flops_per_s,
            "int8": self.int8_ops_per_s,
            "fp32": self.fp32_flops_per_s,
        }.get(peak_dtype(dtype))


def peak_dtype(dtype: str) -> str:
    """The table column a dtype's work runs at: bf16, fp16, fp8, int8 (every integer dtype), fp32;
    any other dtype (fp64, tf32, ...) is returned as given and has no column."""
    name = dtype.strip().lower()
    aliases = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32"}
    name = aliases.get(name, name)
    if name.startswith(("fp8", "float8")):
        return "fp8"
    if re.fullmatch(r"u?int\d*", name):
        return "int8"
    return name


# Dense figures (no sparsity; datasheets print tensor-core rates with 2:4 sparsity, halved
# here), from the NVIDIA datasheets of each family: "NVIDIA H100 Tensor Core GPU" (SXM and
# PCIe columns), "NVIDIA H200 Tensor Core GPU" (SXM), "NVIDIA GH200 Grace Hopper Superchip"
# and "NVIDIA A100 Tensor Core GPU" (SXM 80GB). fp32 is the non-tensor "FP32" row. GH200 is
# listed with the HBM3 (96 GB) module's 4.0 TB/s; the HBM3e (144 GB) module has 4.9 TB/s.
# Matched against the CUDA device name in order; first match wins (PCIe before SXM).
DEVICE_TABLE: tuple[tuple[str, DevicePeak], ...] = (
    (r"GH200", DevicePeak("GH200", "gh200", 989e12, 1979e12, 1979e12, 4.0e12, 67e12, "HBM3")),
    (r"H200", DevicePeak("H200 SXM 141GB", "h200", 989e12, 1979e12, 1979e12, 4.8e12, 67e12, "HBM3e")),
    (r"H100.*PCIe", DevicePeak("H100 PCIe", "h100", 756e12, 1513e12, 1513e12, 2.0e12, 51e12, "HBM2e")),
    (r"H100", DevicePeak("H100 SXM 80GB", "h100", 989e12, 1979e12, 1979e12, 3.35e12, 67e12, "HBM3")),
    (r"A100", DevicePeak("A100 SXM 80GB", "a100", 312e12, None, 624e12, 2.039e12, 19.5e12, "HBM2e")),
)

# The GPU profiles a roofline can be estimated for (`--efficiency-roofline`), and the device
# each one stands for when no device is detected: a profile's SXM model (h100: H100 SXM).
GPU_PROFILES: tuple[str, ...] = tuple(p for p in PROFILES if p not in ("auto", "cpu"))
_PROFILE_MODELS = {"h100": "H100 SXM 80GB", "h200": "H200 SXM 141GB", "gh200": "GH200", "a100": "A100 SXM 80GB"}


def profile_device(profile: str) -> DevicePeak | None:
    """The datasheet entry a GPU profile stands for (h100: the SXM model); None for others."""
    model = _PROFILE_MODELS.get(profile.lower())
    return next((peak for _, peak in DEVICE_TABLE if peak.model == model), None)


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


# The vector and matrix extensions whose presence changes which kernels torch and oneDNN pick,
# and with them the rounding of a float result: a VM can show one generic model name for CPUs
# of several generations ("Intel(R) Xeon(R) Processor"), with and without AMX.
KERNEL_ISA_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_bf16",
    "amx_int8",
)


def _cpu_flags(info: str) -> set[str]:
    """The extensions a /proc/cpuinfo text lists for its first CPU (none without a flags line)."""
    match = re.search(r"^flags\s*:\s*(.+)$", info, re.MULTILINE)
    return set(match.group(1).split()) if match else set()


def cpu_isa(cpuinfo: str | None = None) -> str:
    """The kernel-relevant extensions this CPU reports (`KERNEL_ISA_FLAGS`), space-separated."""
    flags = _cpu_flags(_cpuinfo() if cpuinfo is None else cpuinfo)
    return " ".join(f for f in KERNEL_ISA_FLAGS if f in flags)


# Vector extensions from the widest down: a VM's generic model name ("Intel(R) Xeon(R) Processor",
# "AMD EPYC") covers generations with and without them, so the widest one names which it is.
_WIDEST = (("amx", ("amx_bf16", "amx_int8")), ("avx512", ("avx512f",)), ("avx2", ("avx2",)))


def widest_vector_extension(isa: str) -> str:
    """The widest vector extension a `cpu_isa` string lists: "amx", "avx512", "avx2", or "" for none."""
    flags = set(isa.split())
    return next((name for name, marks in _WIDEST if flags & set(marks)), "")


def cpu_peak_estimate(threads: int, cpuinfo: str | None = None, clock_hz: float | None = None) -> CpuPeakEstimate:
    """fp32 peak estimate: threads x clock x FLOP/cycle/core from the vector ISA.

    FLOP/cycle per core assumes two FMA pipes: AVX-512 32 (Zen 4 double-pumps 512-bit,
    so we take the 256-bit-pipe figure), AVX2 32, SSE 8.
    """
    info = _cpuinfo() if cpuinfo is None else cpuinfo
    flags = _cpu_flags(info)
    # The label names the extension found, not both that share the figure: an AVX2-only EPYC
    # read "avx512/avx2+fma" beside its neighbour with AVX-512.
    if "avx512f" in flags:
        per_cycle, isa = 32, "avx512"
    elif "avx2" in flags and "fma" in flags:
        per_cycle, isa = 32, "avx2+fma"
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


def machine_lock_folder() -> Path:
    """Where the machine-wide locks live: `/tmp/pytest-efficientllm-locks-<uid>`.

    A fixed place rather than the temp directory: tox gives each environment a TMPDIR of its
    own, and two environments measuring on one machine must still wait for each other. One
    per user: filelock refuses a lock file another account owns in a shared (sticky) folder,
    and another user's folder is not writable, so a shared one would fail the second user's run.
    """
    base = Path("/tmp") if os.name == "posix" and Path("/tmp").is_dir() else Path(tempfile.gettempdir())
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    folder = base / f"pytest-efficientllm-locks-{user}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def machine_lock(name: str) -> FileLock:
    """A lock every process of this plugin run by this user on the machine shares: one per GPU
    while a test measures on it (`device-N`), one while an `ab` comparison runs (`ab`)."""
    return FileLock(str(machine_lock_folder() / f"{name}.lock"))


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


def known_profile(requested: str, given: str = "--gpu") -> str:
    """`requested` as a profile name (lower case); a ProfileError naming where it was `given`
    (`--gpu`, or `ini efficiency_gpu`) and the known ones when it is none of them."""
    requested = requested.strip().lower()
    if requested not in PROFILES:
        raise ProfileError(f"{given}={requested!r} is not a known profile; choose one of {', '.join(PROFILES)}")
    return requested


def resolve_profile(requested: str, cuda_name: str | None) -> str:
    """The baseline profile for `--gpu=requested` on hardware whose CUDA device is `cuda_name`.

    `auto` picks the detected GPU's profile (or `cpu`); naming a GPU that is not present
    is an error naming what was detected.
    """
    requested = known_profile(requested)
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

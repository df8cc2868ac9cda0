"""Is the baseline for this hardware? The fingerprints of two records compared, and the calibration.

A different profile or accelerator model (`DEVICE_KEYS`) is an error: the numbers belong to
other hardware. Any other difference (driver, torch, CPU model, threads) is a warning. Where
the host's CPU differs (`CALIBRATED_KEYS`), time-based metrics are then compared relative
to the calibration workload each run measured (`calibration_factor`; on a GPU profile only the
host's CPU time, `calibrates`); otherwise raw. Which unit of a kind of hardware, and values of
the moment at start-up (`IGNORED_KEYS`), are not differences at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pytest_efficientllm.core.record import Record

# Fingerprint keys (flattened with '.') whose difference means the baseline is for
# other hardware. On the `cpu` profile the CPU *is* the device, but CI runners of one
# kind vary in CPU SKU and calibration corrects for it, so there it is a warning.
DEVICE_KEYS = ("profile", "device_name", "gpu_name", "device_model", "cuda_device_name")
# Not the kind of hardware or software, but which unit of it, or a value measured at
# start-up: two GPUs of one model differ here, and so do two runs on one GPU.
IGNORED_KEYS = (
    "calibration",
    "created",
    "gpu_uuids",
    "cuda_visible_devices",
    "cuda_ordinal",
    "gpu_idle_power_w",
    "nvml_energy_step_mj",
    "nvml_energy_period_s",
    # The GPU's state of the moment at start-up (telemetry.gpu_state): temperature, current
    # clocks, other processes. Its stable facts (locked clocks, power limit, modes) are compared.
    "gpu_preflight",
)

# What the measured program is, beside the hardware: its packages, its interpreter, how many
# threads it computes with and how they wait, and the GPU driver and CUDA it runs its kernels
# through. Not the CPU model (CI runners of one kind vary in SKU, and their runs describe that
# runner kind together), the OS kernel (runner images update it weekly) nor the process layout.
SOFTWARE_KEYS = (
    "packages",
    "python",
    "torch_threads",
    "omp_wait_policy",
    "driver_version",
    "cuda_driver_version",
    "cuda_runtime_version",
)

# The CPU as fingerprints name it: its model and kernel-relevant extensions (`core.devices.cpu_isa`).
CPU_KEYS = ("cpu_model", "cpu_isa")
# A field one side records and the other does not is no difference (fingerprints gain fields),
# except these: a generic model name ("AMD EPYC") covers CPUs with and without AVX-512, so an
# entry that predates `cpu_isa` may be another CPU. Taken for this one, an AVX2-only EPYC failed
# 13 suite tests against an AVX-512 EPYC's entries with nothing changed, and its
# --update-baselines would have written over them (benchmarks/RESULTS.md, "A third CPU").
UNRECORDED_DIFFERS = ("cpu_isa",)

# The host's CPU: a difference here is another processor, whose speed the calibration workload
# stands in for. Any other difference (packages, Python, threads, core count, the OS kernel, the
# process layout, the GPU's driver) warns and leaves times compared raw. On one machine the
# calibration's own index moves more between processes than the work it would correct: across
# 14 suite runs its 32 MiB copy moved by x2.0, and divided by it the runs' CPU times lay x1.136
# apart (RMS over 91 pairs) where raw they lay x1.083 apart (benchmarks/RESULTS.md, "The
# calibration only across hardware"). And it is a torch workload: divided by it, a torch upgrade
# would have part of what it did to the model taken out again.
CALIBRATED_KEYS = (*CPU_KEYS, "machine")


@dataclass(frozen=True)
class FingerprintDiff:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # The package versions among the warnings, as "torch 2.13.0+cpu -> 2.11.0": a library
    # upgrade changes what a model counts, so a changed count names them.
    packages: list[str] = field(default_factory=list)
    # The program's own changes among the warnings (`SOFTWARE_KEYS`: packages, interpreter,
    # threads), as "python 3.11.7 -> 3.12.1": an earlier run under others timed another program.
    software: list[str] = field(default_factory=list)
    # The CPU model or its kernel-relevant extensions, as "cpu_model AMD EPYC -> Intel(R) Xeon(R)
    # Processor", where they differ: another CPU's floating-point kernels round otherwise, so a
    # quality figure computed on it is not exact.
    cpu: str = ""
    # Whether a warning calls for the calibration: one of `CALIBRATED_KEYS`.
    calibrate: bool = False


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if name.split(".")[0] in IGNORED_KEYS:
            continue
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


NOT_RECORDED = "(not recorded)"


def _shown(fields: dict[str, Any], key: str) -> str:
    return repr(fields[key]) if key in fields else NOT_RECORDED


def fingerprint_diff(baseline: dict[str, Any], current: dict[str, Any]) -> FingerprintDiff:
    """Which fingerprint fields differ, split into errors (other hardware) and warnings."""
    b, c = _flatten(baseline), _flatten(current)
    errors: list[str] = []
    warnings: list[str] = []
    packages: list[str] = []
    software: list[str] = []
    cpu = ""
    calibrate = False
    for key in sorted(set(b) | set(c)):
        if (key not in b or key not in c) and not (key in UNRECORDED_DIFFERS and (b.get(key) or c.get(key))):
            continue  # a field one version records and the other does not: not a difference
        if b.get(key) == c.get(key):
            continue
        text = f"{key}: {_shown(b, key)} -> {_shown(c, key)}"
        (errors if key.rsplit(".", 1)[-1] in DEVICE_KEYS else warnings).append(text)
        calibrate = calibrate or key in CALIBRATED_KEYS
        if key.startswith("packages."):
            # package_versions() records a package that is not installed as "".
            change = f"{key.removeprefix('packages.')} {b[key] or 'not installed'} -> {c[key] or 'not installed'}"
            packages.append(change)
        else:
            change = f"{key} {b.get(key)} -> {c.get(key)}"
        if key.split(".")[0] in SOFTWARE_KEYS:
            software.append(change)
        if key in CPU_KEYS:
            was, now = (side.get(key, NOT_RECORDED) or "none" for side in (b, c))
            cpu = "; ".join(filter(None, (cpu, f"{key} {was} -> {now}")))
    return FingerprintDiff(errors, warnings, packages, software, cpu, calibrate)


def calibrates(profile: str, metric: str) -> bool:
    """Whether the calibration, a CPU workload, stands for a metric's time: every time on the
    `cpu` profile; on a GPU profile only the host's CPU time (`cpu_time*`), since what a GPU's
    kernels take does not follow the host CPU's matmul and copy speed."""
    return profile == "cpu" or metric.startswith("cpu_time")


def calibration_key(metric: str) -> str:
    """CPU-time metrics are calibrated by the calibration's CPU time, the rest by its wall time."""
    return "cpu_index_s" if metric.startswith("cpu_time") else "index_s"


def calibration_factor(baseline: Record, current: Record, key: str = "index_s") -> float | None:
    """How much slower this run's machine was than the baseline's (current / baseline), or None."""
    try:
        b = float(baseline.fingerprint["calibration"][key])
        c = float(current.fingerprint["calibration"][key])
    except (KeyError, TypeError, ValueError):
        return None
    return c / b if b > 0 and c > 0 else None

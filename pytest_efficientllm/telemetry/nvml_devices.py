"""Which GPUs NVML measures: the CUDA-visible devices as NVML handles, and NVML calls whose
errors read in our terms (`NvmlUnsupported` for what a device or driver lacks, `TelemetryError`
naming the call for the rest). The pynvml module is a parameter, so tests inject a test double.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from pytest_efficientllm.telemetry.base import TelemetryError


class NvmlUnsupported(TelemetryError):
    """An NVML function this device or driver does not support (NOT_SUPPORTED, or absent)."""


def nvml_call(nv: Any, name: str, *args: Any, **kwargs: Any) -> Any:
    """Call `nv.<name>`, turning NVML errors into ours, named after the call."""
    fn = getattr(nv, name, None)
    if fn is None:
        raise NvmlUnsupported(f"{name}: not in this pynvml ({getattr(nv, '__version__', 'unknown version')})")
    try:
        return fn(*args, **kwargs)
    except nv.NVMLError as exc:
        code = getattr(exc, "value", None)
        if code in (nv.NVML_ERROR_NOT_SUPPORTED, getattr(nv, "NVML_ERROR_FUNCTION_NOT_FOUND", object())):
            raise NvmlUnsupported(f"{name}: NVML_ERROR_NOT_SUPPORTED on this device/driver") from exc
        raise TelemetryError(f"NVML {name} failed: {exc} (NVML error code {code})") from exc


# -- which devices ------------------------------------------------------------------------


def parse_visible_devices(value: str | None) -> list[int | str] | None:
    """Entries of CUDA_VISIBLE_DEVICES in CUDA ordinal order; None when unset (all devices).

    Entries are NVML indices or `GPU-`/`MIG-` UUIDs (a unique prefix is allowed, as CUDA
    allows). A malformed or repeated entry is a ValueError naming it.
    """
    if value is None:
        return None
    out: list[int | str] = []
    for raw in value.split(","):
        entry = raw.strip()
        if not entry:
            continue
        if entry.startswith(("GPU-", "MIG-")):
            out.append(entry)
        elif entry.isdigit():
            out.append(int(entry))
        else:
            raise ValueError(
                f"CUDA_VISIBLE_DEVICES={value!r}: entry {entry!r} is neither an index nor a GPU-/MIG- UUID"
            )
        if out[-1] in out[:-1]:
            raise ValueError(f"CUDA_VISIBLE_DEVICES={value!r}: {entry!r} is listed twice")
    return out


@dataclass(frozen=True)
class NvmlDevice:
    """One CUDA-visible device as NVML sees it.

    `handle` answers memory/utilisation queries (the MIG instance under MIG); `parent` is
    the whole GPU, the only level that has an energy counter and GPM here.
    """

    handle: Any
    parent: Any
    uuid: str
    is_mig: bool
    label: str
    # The CUDA ordinal this process sees the device at (None until `open_nvml` picks it):
    # names the device's own energy (`energy:cuda:<ordinal>`) when several are measured.
    ordinal: int | None = None


def as_text(value: Any) -> str:
    """A string NVML returned, as text: older bindings give bytes."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _as_device(nv: Any, handle: Any, label: str) -> NvmlDevice:
    uuid = as_text(nvml_call(nv, "nvmlDeviceGetUUID", handle))
    try:
        flag = nvml_call(nv, "nvmlDeviceIsMigDeviceHandle", handle)
        is_mig = bool(getattr(flag, "value", flag))
    except NvmlUnsupported:  # pre-MIG drivers or GPUs
        is_mig = False
    parent = nvml_call(nv, "nvmlDeviceGetDeviceHandleFromMigDeviceHandle", handle) if is_mig else handle
    return NvmlDevice(handle, parent, uuid, is_mig, f"{label} ({uuid})")


def resolve_visible(nv: Any, env_value: str | None) -> list[NvmlDevice]:
    """The devices CUDA can see, in CUDA ordinal order, mapped to NVML handles.

    Raises ValueError naming CUDA_VISIBLE_DEVICES when an entry matches no NVML device.
    Indices follow NVML's (PCI bus) order; `cuda_backend` cross-checks the result against
    torch's UUID so a different CUDA_DEVICE_ORDER cannot silently pick the wrong GPU.
    """
    entries = parse_visible_devices(env_value)
    count = int(nvml_call(nv, "nvmlDeviceGetCount"))
    if entries is None:
        entries = list(range(count))
    all_uuids: list[str] | None = None
    out: list[NvmlDevice] = []
    for entry in entries:
        if isinstance(entry, int):
            if entry >= count:
                raise ValueError(f"CUDA_VISIBLE_DEVICES entry {entry}: NVML sees only {count} device(s)")
            out.append(_as_device(nv, nvml_call(nv, "nvmlDeviceGetHandleByIndex", entry), f"GPU {entry}"))
        elif entry.startswith("MIG-"):
            try:
                handle = nvml_call(nv, "nvmlDeviceGetHandleByUUID", entry)
            except TelemetryError as exc:
                raise ValueError(
                    f"CUDA_VISIBLE_DEVICES entry {entry!r} matches no MIG device NVML knows: {exc}"
                ) from None
            out.append(_as_device(nv, handle, "MIG instance"))
        else:
            if all_uuids is None:
                all_uuids = [
                    as_text(nvml_call(nv, "nvmlDeviceGetUUID", nvml_call(nv, "nvmlDeviceGetHandleByIndex", i)))
                    for i in range(count)
                ]
            matches = [i for i, u in enumerate(all_uuids) if u.startswith(entry)]
            if len(matches) != 1:
                what = "matches no" if not matches else "is ambiguous among the"
                raise ValueError(
                    f"CUDA_VISIBLE_DEVICES entry {entry!r} {what} NVML device UUIDs ({', '.join(all_uuids)})"
                )
            out.append(_as_device(nv, nvml_call(nv, "nvmlDeviceGetHandleByIndex", matches[0]), f"GPU {matches[0]}"))
    return out


def device_key(device: NvmlDevice) -> str:
    """How a record names one device: `cuda:<ordinal>` as this process sees it, else its UUID."""
    return f"cuda:{device.ordinal}" if device.ordinal is not None else device.uuid


def unique_parents(devices: Sequence[NvmlDevice]) -> list[NvmlDevice]:
    # Two MIG instances of one GPU share its energy counter: count it once.
    seen: list[NvmlDevice] = []
    for d in devices:
        if not any(d.parent == s.parent for s in seen):
            seen.append(d)
    return seen


def load_pynvml() -> ModuleType | None:
    """The real bindings, or None when nvidia-ml-py is not installed."""
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml

"""The roofline estimate of one round's time on a GPU, from counted FLOPs and bytes.

    time >= max(FLOPs / dense peak of the dominant dtype, bytes / HBM bandwidth)

Plain Python over a record's metrics (`flops`, `bytes_accessed`, `flops_share:<dtype>`) and
the datasheet table (`core.devices`); no clock is read, so it can be computed for any GPU
profile on any machine, a CPU run included: the techniques of a suite then rank as the
model says they would on that GPU (decode attention, say, by the bytes of KV it reads).

Recorded as `roofline_time` for the run's own GPU and `roofline_time:<profile>` for each
profile named by `--efficiency-roofline`, source `estimated` (an estimate never fails a
test), its `method` naming the model, the peaks used and which side bounds the time. It is
a lower bound: it ignores launch overheads, caches, and whatever the counts leave out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pytest_efficientllm.core.devices import DevicePeak, lookup_device, peak_dtype, profile_device
from pytest_efficientllm.core.metrics import estimated, unavailable
from pytest_efficientllm.core.record import Metric

NAME = "roofline_time"
SHARE = "flops_share:"
MODEL = "estimate: roofline max(FLOPs / dense peak of the dominant dtype, bytes / HBM bandwidth)"
# The dtype whose peak is used when the record says nothing about its dtype mix.
DEFAULT_DTYPE = "bf16"


def is_input(name: str) -> bool:
    """Whether a metric of this name changes a roofline estimate."""
    return name in ("flops", "bytes_accessed") or name.startswith(SHARE)


def dominant_dtype(metrics: Mapping[str, Metric]) -> str | None:
    """The dtype with the largest `flops_share:<dtype>` (ties: first by name); None without shares."""
    shares = [
        (m.value, name[len(SHARE) :])
        for name, m in metrics.items()
        if name.startswith(SHARE) and m.value is not None and m.value > 0
    ]
    if not shares:
        return None
    return sorted(shares, key=lambda s: (-s[0], s[1]))[0][1]


@dataclass(frozen=True)
class Roofline:
    """One roofline bound. Units: seconds, FLOP/s (OP/s for int8), bytes/s."""

    seconds: float
    compute_s: float
    memory_s: float
    dtype: str  # the column whose peak was used
    peak: float
    bandwidth: float
    device: str
    dtype_note: str  # how the column was chosen, "" when it is the dominant dtype's own

    @property
    def bound(self) -> str:
        """Which side sets the time: "memory" or "compute" (memory on a tie)."""
        return "memory" if self.memory_s >= self.compute_s else "compute"

    @property
    def method(self) -> str:
        rate = "TOP/s" if self.dtype == "int8" else "TFLOP/s"
        note = f" ({self.dtype_note})" if self.dtype_note else ""
        return (
            f"estimate: roofline max(FLOPs / {self.peak / 1e12:g} {rate} {self.dtype} peak of {self.device}{note}, "
            f"bytes / {self.bandwidth / 1e12:g} TB/s of {self.device}); {self.bound}-bound"
        )


def peak_for(device: DevicePeak, dtype: str | None) -> tuple[str, float, str]:
    """(column, dense peak, how it was chosen) for work done mostly in `dtype` on `device`."""
    if dtype is None:
        return DEFAULT_DTYPE, device.bf16_flops_per_s, f"no flops_share recorded: {DEFAULT_DTYPE} assumed"
    column = peak_dtype(dtype)
    peak = device.dtype_peak(dtype)
    if peak is None:
        return (
            DEFAULT_DTYPE,
            device.bf16_flops_per_s,
            f"dominant dtype {dtype}: no {column} peak for {device.model} in the table, {DEFAULT_DTYPE} peak used",
        )
    if column != dtype:
        return column, peak, f"dominant dtype {dtype}, at the {column} peak"
    return column, peak, f"dominant dtype {dtype}"


def _missing(metrics: Mapping[str, Metric]) -> str:
    """Why the inputs are not there ("" when both are)."""
    why = []
    for name in ("flops", "bytes_accessed"):
        metric = metrics.get(name)
        if metric is None:
            why.append(f"{name} not recorded")
        elif metric.value is None:
            why.append(f"{name} unavailable ({metric.note or 'no reason given'})")
    if not why:
        return ""
    return "; ".join(why) + ": the roofline needs the FLOPs and the bytes accessed of one round"


def bound(flops: float, bytes_accessed: float, device: DevicePeak, dtype: str | None) -> Roofline:
    """The roofline bound of a round doing `flops` mostly in `dtype` and moving `bytes_accessed`."""
    column, peak, note = peak_for(device, dtype)
    compute_s = flops / peak
    memory_s = bytes_accessed / device.hbm_bytes_per_s
    return Roofline(
        max(compute_s, memory_s), compute_s, memory_s, column, peak, device.hbm_bytes_per_s, device.model, note
    )


def roofline_metric(name: str, metrics: Mapping[str, Metric], device: DevicePeak | None, why_no_device: str) -> Metric:
    """`name` (`roofline_time` or `roofline_time:<profile>`) for one round of `metrics` on `device`."""
    if device is None:
        return unavailable(name, "estimated", MODEL, why_no_device)
    why = _missing(metrics)
    if why:
        return unavailable(name, "estimated", MODEL, why)
    flops, moved = metrics["flops"].value, metrics["bytes_accessed"].value
    assert flops is not None and moved is not None  # _missing said both are there
    r = bound(flops, moved, device, dominant_dtype(metrics))
    return estimated(name, r.seconds, r.method)


def roofline_metrics(
    metrics: Mapping[str, Metric], profile: str, named: Iterable[str] = (), cuda_name: str | None = None
) -> dict[str, Metric]:
    """The roofline metrics of a record: `roofline_time` for the run's profile when it is a GPU's
    (the detected device `cuda_name` where the table lists it, else the profile's own model),
    and `roofline_time:<p>` for each profile `p` in `named`. Empty for a record that has
    neither `flops` nor `bytes_accessed`: it did not measure or count one round's work.
    """
    if "flops" not in metrics and "bytes_accessed" not in metrics:
        return {}
    out: dict[str, Metric] = {}
    if profile != "cpu":
        device = (lookup_device(cuda_name) if cuda_name else None) or profile_device(profile)
        what = cuda_name or profile
        out[NAME] = roofline_metric(NAME, metrics, device, f"no datasheet peaks for {what!r} in core/devices.py")
    for p in named:
        name = f"{NAME}:{p}"
        out[name] = roofline_metric(name, metrics, profile_device(p), f"{p!r} is not a GPU profile of core/devices.py")
    return out

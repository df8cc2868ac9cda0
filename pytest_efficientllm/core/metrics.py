"""The metric catalog: every name the plugin records, its unit and which way is better.

The six EfficientLLM metrics keep the study's abbreviations (AMU, PCU, AL, AT, AEC, MCR);
the better-founded measures recorded beside them, and the raw quantities behind both,
have plain names with the unit in the catalog. A few names come in families
(`roofline_time:<profile>`, `flops_share:<dtype>`): the family fixes unit and direction for
every suffix (`FAMILIES`). `spec(name)` (or `lookup`) is the single place that
knows a name's unit and direction; marker validation and reports read it from here, and
every metric the plugin records is built here (`measured`, `counted`, `estimated`, `make`,
`unavailable`), so no other module restates a unit or a direction. A test's own counts
and quality scores, which the catalog cannot list, are `declared` by the test once.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from pytest_efficientllm.core.aliases import ALIASES
from pytest_efficientllm.core.record import Direction, Metric, Source


@dataclass(frozen=True)
class MetricSpec:
    name: str
    unit: str
    direction: Direction
    description: str
    # The units a metric whose unit depends on the workload is recorded in (`unit` is then "").
    units: tuple[str, ...] = ()


_SPECS = [
    # The study's six (docs/metrics.md).
    MetricSpec("AMU", "B", "lower", "Average Memory Utilization: time average of memory in use over the window"),
    MetricSpec("AMU_fraction", "fraction", "lower", "AMU as a share of the device's memory capacity"),
    MetricSpec(
        "PCU",
        "fraction",
        "higher",
        "Peak Compute Utilization as the study defines it: time average of NVML kernel-busy share (gpu_busy)",
    ),
    MetricSpec("AL", "s", "lower", "Average Latency: mean seconds per round (iteration or request)"),
    MetricSpec(
        "AT",
        "",
        "higher",
        "Average Throughput in the study's form for the workload: TT (tokens/param/s), "
        "ST (samples/param/s) or IT (tokens/s); unit says which",
        units=("tok/param/s", "samples/param/s", "tok/s"),
    ),
    MetricSpec("AEC", "W", "lower", "Average Energy Consumption: mean power over the window"),
    MetricSpec("MCR", "x", "higher", "Model Compression Rate: size ratio x quality retention"),
    # Beside them.
    MetricSpec("MFU", "fraction", "higher", "model FLOP utilization: counted FLOPs / time / dense peak"),
    MetricSpec("tensor_active", "fraction", "higher", "Hopper GPM tensor-core activity, time average"),
    MetricSpec("latency_p50", "s", "lower", "median seconds per round"),
    MetricSpec("latency_p90", "s", "lower", "90th percentile seconds per round"),
    MetricSpec("latency_p99", "s", "lower", "99th percentile seconds per round"),
    MetricSpec("TTFT", "s", "lower", "time to first generated token"),
    MetricSpec("TPOT", "s", "lower", "time per output token after the first: (E2E - TTFT)/(N_out - 1)"),
    MetricSpec("tokens_per_s", "tok/s", "higher", "tokens processed per second"),
    MetricSpec("samples_per_s", "samples/s", "higher", "samples processed per second"),
    MetricSpec(
        "peak_memory",
        "B",
        "lower",
        "high-water mark of memory in use during the window (device allocator on GPU, process RSS on CPU)",
    ),
    MetricSpec(
        "peak_memory_delta", "B", "lower", "peak_memory above the level at window open: what the workload itself added"
    ),
    MetricSpec("peak_memory_reserved", "B", "lower", "high-water mark of the CUDA caching allocator's reserved bytes"),
    MetricSpec("host_peak_memory", "B", "lower", "process RSS high-water mark while a GPU workload ran"),
    MetricSpec("host_peak_memory_delta", "B", "lower", "host_peak_memory above the process RSS at window open"),
    MetricSpec("host_AMU", "B", "lower", "time-average process RSS while a GPU workload ran"),
    MetricSpec("energy", "J", "lower", "energy over the measured window"),
    MetricSpec("energy_per_round", "J", "lower", "energy per round (per step or request)"),
    MetricSpec("energy_per_token", "J/tok", "lower", "energy per token"),
    MetricSpec("energy_per_sample", "J/sample", "lower", "energy per sample"),
    MetricSpec(
        "energy_per_token_net",
        "J/tok",
        "lower",
        "energy per token above idle: (energy - idle_power x window wall time) / tokens",
    ),
    MetricSpec("idle_power", "W", "info", "power drawn just before the window with no work queued"),
    MetricSpec("AEC_net", "W", "lower", "AEC minus idle power"),
    MetricSpec(
        "gpu_throttled",
        "fraction",
        "info",
        "1 when NVML named a throttling clocks event reason (power cap, thermal, sync boost, HW slowdown) "
        "at the window's open or close, else 0; the reasons in its note; over several windows, the time share",
    ),
    MetricSpec(
        "gpu_throttled_share",
        "fraction",
        "info",
        "share of the window a limiter (power, thermal, sync boost, board limit, reliability) held the GPU below "
        "its application clocks, from NVML's violation counters: the largest limiter's time over the window's",
    ),
    MetricSpec(
        "retained_memory",
        "B",
        "lower",
        "memory in use at window close minus at open (RSS on the CPU): what the rounds kept",
    ),
    MetricSpec(
        "retained_memory_late",
        "B",
        "lower",
        "retained_memory gained in the window's second half: growth that does not stop is a leak",
    ),
    # Distributed tests: aggregates over ranks (per-rank values stay in Record.ranks).
    MetricSpec("peak_memory_sum", "B", "lower", "sum over ranks of each rank's peak_memory"),
    MetricSpec("AMU_sum", "B", "lower", "sum over ranks of each rank's AMU"),
    MetricSpec("comm_time", "s", "lower", "communication time per round the workload reported, slowest rank"),
    MetricSpec(
        "window_time", "s", "info", "wall seconds of the whole window, from its opening barrier to its closing one"
    ),
    MetricSpec(
        "latency_rank_spread", "fraction", "info", "(slowest - fastest) / fastest rank's AL: how unevenly the ranks ran"
    ),
    # Raw quantities and counted facts.
    MetricSpec("wall_time", "s", "lower", "wall-clock seconds of all measured rounds"),
    MetricSpec(
        "cpu_time", "s", "lower", "process CPU seconds (user + system) over the window, less the plugin's samplers"
    ),
    MetricSpec("sampler_cpu_time", "s", "lower", "CPU seconds the plugin's own sampler threads used over the window"),
    MetricSpec(
        "cpu_time_per_round",
        "s",
        "lower",
        "process CPU seconds of each round (raw rounds kept), "
        "which a busy neighbour inflates far less than the wall clock",
    ),
    MetricSpec("rounds", "", "info", "measured rounds"),
    MetricSpec("flops", "FLOP", "lower", "FLOPs of one round, counted once outside the timed rounds"),
    MetricSpec("flops_per_s", "FLOP/s", "higher", "achieved FLOP/s: counted FLOPs / measured time"),
    # The counted cost of one round, from the same untimed run as `flops` (telemetry/op_counting.py).
    MetricSpec(
        "bytes_accessed",
        "B",
        "lower",
        "bytes one round's aten operators read and write, from their tensors' shapes, strides and dtypes "
        "(views 0), counted once outside the timed rounds",
    ),
    MetricSpec("arithmetic_intensity", "FLOP/B", "info", "counted FLOPs / bytes_accessed of one round"),
    MetricSpec(
        "tensor_peak_bytes",
        "B",
        "lower",
        "high-water mark of the tensor storage one round allocated and still held, counted from the storages "
        "its operators create and free (blind to allocator caching and RSS)",
    ),
    MetricSpec(
        "retained_tensor_bytes",
        "B",
        "lower",
        "bytes of the tensor storage one round allocated that are still alive when it has returned and its "
        "result is dropped: a tensor kept per call, a cache that grows",
    ),
    MetricSpec("allocations", "count", "lower", "tensor storages one round's operators allocated"),
    MetricSpec("allocated_bytes", "B", "lower", "bytes of the tensor storages one round's operators allocated"),
    MetricSpec("operators", "count", "lower", "aten operators one round executed (views included)"),
    MetricSpec("host_to_device_copies", "count", "lower", "copies from host to device in one round (CUDA only)"),
    MetricSpec("device_to_host_copies", "count", "lower", "copies from device to host in one round (CUDA only)"),
    MetricSpec(
        "synchronizations",
        "count",
        "lower",
        "operators of one round that make the host wait for the device: .item(), nonzero, masked_select, "
        "a blocking device-to-host copy... (CUDA only)",
    ),
    MetricSpec("peak_flops_per_s", "FLOP/s", "info", "dense peak the MFU is taken against"),
    MetricSpec("tokens", "tok", "info", "tokens per round"),
    MetricSpec("samples", "samples", "info", "samples per round"),
    MetricSpec("params", "", "info", "model parameters"),
    MetricSpec("trainable_params", "", "lower", "parameters that receive gradients"),
    MetricSpec(
        "storage_bytes", "B", "lower", "storage bytes of the model's weights as stored (packed, scales included)"
    ),
    MetricSpec("reference_bytes", "B", "info", "storage bytes of the reference model MCR compares with"),
    MetricSpec("size_ratio", "x", "higher", "reference_bytes / storage_bytes"),
    MetricSpec("bits_per_weight", "bit", "lower", "stored bits per weight, scales included"),
    MetricSpec(
        "quality_retention", "x", "higher", "quality relative to the reference, in the direction that makes 1.0 equal"
    ),
    # Estimates (source "estimated": never fail a test).
    MetricSpec(
        "roofline_time",
        "s",
        "lower",
        "roofline lower bound of one round's time on this run's GPU: "
        "max(FLOPs / dense peak of the dominant dtype, bytes / HBM bandwidth); an estimate",
    ),
]

CATALOG: dict[str, MetricSpec] = {s.name: s for s in _SPECS}

# Families of names that share one unit and direction: `<prefix><member>`, the member known
# only when the metric is recorded (a dtype, a hardware profile). A family name is a catalog
# name: it is built with make()/counted()/... like any other, never declared. A test's quality
# scores (`quality:<name>`) are no family: the test declares their direction.
FAMILIES: dict[str, MetricSpec] = {
    s.name: s
    for s in (
        MetricSpec(
            "roofline_time:",
            "s",
            "lower",
            "roofline lower bound of one round's time on the named profile's GPU (`--efficiency-roofline`): "
            "max(FLOPs / dense peak of the dominant dtype, bytes / HBM bandwidth); an estimate",
        ),
        MetricSpec(
            "bytes_share:",
            "fraction",
            "info",
            "share of bytes_accessed in tensors of the dtype after the colon (bytes_share:bf16)",
        ),
        MetricSpec(
            "energy:",
            "J",
            "info",
            "energy over the window of the one device after the colon (energy:cuda:1), where a record sums several",
        ),
        MetricSpec(
            "flops_share:",
            "fraction",
            "info",
            "share of the counted FLOPs done by operators whose inputs are mostly of the dtype after the colon",
        ),
    )
}


def lookup(name: str) -> MetricSpec | None:
    """The catalog's entry for a name, a family member (`bytes_share:bf16`) included; None if unknown."""
    known = CATALOG.get(name)
    if known is not None:
        return known
    prefix, colon, member = name.partition(":")
    family = FAMILIES.get(prefix + colon) if colon and member else None
    if family is None:
        return None
    return MetricSpec(name, family.unit, family.direction, family.description, family.units)


def resolve_name(name: str) -> str:
    """Catalog name for a user-facing name or alias; KeyError naming the known ones."""
    if lookup(name) is not None:
        return name
    if name in ALIASES:
        return ALIASES[name]
    close = difflib.get_close_matches(name, sorted(set(CATALOG) | set(ALIASES)), n=3, cutoff=0.75)
    hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
    known = ", ".join(sorted(set(CATALOG) | set(ALIASES) | {f + "<member>" for f in FAMILIES}))
    raise KeyError(f"unknown metric {name!r}{hint}; known metrics: {known}")


def spec(name: str) -> MetricSpec:
    found = lookup(resolve_name(name))
    assert found is not None  # resolve_name returns only names lookup knows
    return found


# -- building metrics: unit and direction from the catalog ---------------------------------


def _entry(name: str) -> MetricSpec:
    found = lookup(name)
    if found is None:
        raise KeyError(
            f"{name!r} is not in the metric catalog (core/metrics.py): add it there, "
            "or record a test's own metric with `declared`"
        )
    return found


def _unit(s: MetricSpec, unit: str | None) -> str:
    if not s.units:
        if unit is not None and unit != s.unit:
            raise ValueError(f"metric {s.name!r} is recorded in {s.unit!r} (the catalog's unit), not {unit!r}")
        return s.unit
    if unit not in s.units:
        raise ValueError(f"metric {s.name!r}: unit must be one of {s.units} (the workload decides which), got {unit!r}")
    return unit


def make(
    name: str,
    value: float | None,
    source: Source,
    method: str,
    *,
    note: str = "",
    samples: tuple[float, ...] = (),
    unit: str | None = None,
) -> Metric:
    """A metric of a catalog name with the catalog's unit and direction.

    `unit` only where the catalog lists the units the workload chooses from (AT).
    """
    s = _entry(name)
    return Metric(name, value, _unit(s, unit), s.direction, source, method, samples=samples, note=note)


def measured(
    name: str,
    value: float | None,
    method: str,
    *,
    note: str = "",
    samples: tuple[float, ...] = (),
    unit: str | None = None,
) -> Metric:
    return make(name, value, "measured", method, note=note, samples=samples, unit=unit)


def counted(
    name: str,
    value: float | None,
    method: str,
    *,
    note: str = "",
    samples: tuple[float, ...] = (),
    unit: str | None = None,
) -> Metric:
    return make(name, value, "counted", method, note=note, samples=samples, unit=unit)


def estimated(
    name: str,
    value: float | None,
    method: str,
    *,
    note: str = "",
    samples: tuple[float, ...] = (),
    unit: str | None = None,
) -> Metric:
    return make(name, value, "estimated", method, note=note, samples=samples, unit=unit)


def unavailable(name: str, source: Source, method: str, why: str, *, unit: str | None = None) -> Metric:
    """A catalog metric that could not be obtained on this machine, with the reason."""
    return make(name, None, source, method, note=why, unit=unit)


def declared(
    name: str,
    value: float | None,
    unit: str,
    direction: Direction,
    source: Source,
    method: str,
    *,
    note: str = "",
    samples: tuple[float, ...] = (),
) -> Metric:
    """A metric the catalog does not list (a test's own count or quality score), its unit and
    direction given by the test; a catalog name is refused: its unit and direction are the catalog's."""
    if lookup(name) is not None:
        raise ValueError(f"metric {name!r} is in the catalog: build it with make()/counted()/..., not declared()")
    return Metric(name, value, unit, direction, source, method, samples=samples, note=note)


def like(
    template: Metric, value: float | None, method: str, *, note: str = "", samples: tuple[float, ...] = ()
) -> Metric:
    """Another value of `template`'s metric (windows merged, ranks combined): same name and
    source, unit and direction from the catalog, or the template's for a test's own metric."""
    s = lookup(template.name)
    if s is not None:
        return make(
            template.name,
            value,
            template.source,
            method,
            note=note,
            samples=samples,
            unit=template.unit if s.units else None,
        )
    return declared(
        template.name, value, template.unit, template.direction, template.source, method, note=note, samples=samples
    )


def varies(metric: Metric) -> bool:
    """A counted metric whose counting runs disagreed (data-dependent shapes): its `samples` are
    those runs' values and its value their maximum. Such a count is not gated exactly."""
    return metric.source == "counted" and len(set(metric.samples)) > 1

"""Per-rank records of one test -> one aggregate record (a pure function; runs where records meet).

Rules (the aggregate keeps every rank's record in `ranks`):

* **time**: windows open and close at barriers, so round i ends when the slowest rank ends it:
  the aggregate's per-round latency is the maximum over ranks of round i (AL, percentiles and
  throughputs follow from those samples); the window time is the longest rank's.
* **work**: tokens, samples and FLOPs per round are global (summed over ranks); `params` is
  the model's (the largest any rank reports: ranks hold the same model).
* **memory**: per rank, so `peak_memory`, `AMU`, ... are the maximum over ranks (the rank that
  runs out first) and `peak_memory_sum` / `AMU_sum` the total. On one machine the per-rank RSS
  figures each include the pages the ranks share (libraries, a forked parent's heap), so the
  sum over-states the machine's use; `peak_memory_delta` is what each rank's work added.
* **energy** is summed over distinct energy *domains*, never twice for one: a GPU counter
  (NVML) covers one device, so one reading per device; a RAPL counter covers the whole
  machine, so one reading per host however many ranks ran on it; the CPU estimate is
  process CPU-seconds x power per busy core, and CPU-seconds belong to exactly one process,
  so the per-rank estimates are disjoint and their sum is the machine counted once (a
  constant-power model would have to be taken once per host instead).
* **utilisation** (gpu_busy, PCU, tensor_active): mean over distinct devices.
* **communication** (`comm_time`, reported by the workload): the slowest rank's.
* `latency_rank_spread`: (max - min) / min of the ranks' own AL: how unevenly the ranks ran.
* any other metric: kept when all ranks agree, else the maximum with the disagreement named.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, TypeGuard

import numpy as np

from pytest_efficientllm.core.metrics import counted, like, make, measured, unavailable
from pytest_efficientllm.core.record import Metric, Record
from pytest_efficientllm.measuring.meter import WindowResult, Work, derive_metrics

MEMORY = (
    "peak_memory",
    "peak_memory_delta",
    "peak_memory_reserved",
    "AMU",
    "AMU_fraction",
    "host_peak_memory",
    "host_AMU",
)
SUMMED_BESIDE = {"peak_memory": "peak_memory_sum", "AMU": "AMU_sum"}
DEVICE_MEAN = ("gpu_busy", "PCU", "tensor_active")
PER_DOMAIN = ("energy", "idle_power")
# Re-derived from the aggregated raw quantities by `measure.derive_metrics`.
DERIVED = (
    "rounds",
    "AL",
    "latency_p50",
    "latency_p90",
    "latency_p99",
    "wall_time",
    "tokens_per_s",
    "samples_per_s",
    "tokens",
    "samples",
    "params",
    "AT",
    "TTFT",
    "TPOT",
    "flops",
    "flops_per_s",
    "peak_flops_per_s",
    "MFU",
    "AEC",
    "AEC_net",
    "energy_per_round",
    "energy_per_token",
    "energy_per_sample",
    "energy_per_token_net",
    "cpu_time",
    "sampler_cpu_time",
    "window_time",
)


class AggregateError(ValueError):
    """Rank records that cannot form one test's record (wrong test, missing or duplicate ranks)."""


@dataclass(frozen=True)
class _Timer:
    method: str


@dataclass(frozen=True)
class _AggregateBackend:
    """What `derive_metrics` reads from a backend: the timer's name and the peak for MFU."""

    timer: _Timer
    peak_flops: Metric | None


def _values(ranks: list[Record], name: str) -> list[Metric] | None:
    metrics = [r.metrics.get(name) for r in ranks]
    return metrics if all(m is not None for m in metrics) else None  # type: ignore[return-value]


def _available(metrics: list[Metric] | None) -> TypeGuard[list[Metric]]:
    return metrics is not None and all(m.value is not None for m in metrics)


def _total(metrics: list[Metric]) -> float:
    """The sum of available metrics' values (`_available`)."""
    return sum(float(m.value) for m in metrics if m.value is not None)


def energy_domain(record: Record, metric: Metric) -> tuple[Any, ...]:
    """What one energy reading covers: a process (estimate), a host (RAPL) or a device (NVML)."""
    device = record.fingerprint.get("rank_device", {})
    host = device.get("host", "")
    if metric.source == "estimated":
        return ("process", host, record.rank)
    if "rapl" in metric.method.lower():
        return ("host", host)
    return ("device", host, device.get("uuid") or device.get("device") or record.rank)


def _per_domain(ranks: list[Record], name: str) -> Metric | None:
    metrics = _values(ranks, name)
    if metrics is None:
        return None
    first = metrics[0]
    if not _available(metrics):
        why = next(m.note for m in metrics if m.value is None)
        return unavailable(name, first.source, first.method, f"not available in every rank: {why}")
    seen: dict[tuple[Any, ...], float] = {}
    for record, m in zip(ranks, metrics):
        seen.setdefault(energy_domain(record, m), float(m.value))  # type: ignore[arg-type]
    kinds = sorted({d[0] for d in seen})
    method = f"sum over {len(seen)} distinct {'/'.join(kinds)} domain(s) of {len(ranks)} ranks; {first.method}"
    return like(first, sum(seen.values()), method, note=first.note)


def _device_energies(ranks: list[Record]) -> dict[str, Metric]:
    """Each GPU's own energy (`energy:cuda:1`, or `energy:<host>/cuda:1` across hosts) beside
    their sum, where the ranks measured more than one GPU: the reading of the first rank on it."""
    metrics = _values(ranks, "energy")
    if metrics is None:
        return {}
    seen: dict[tuple[Any, ...], tuple[Record, Metric]] = {}
    for record, m in zip(ranks, metrics):
        domain = energy_domain(record, m)
        if domain[0] == "device":
            seen.setdefault(domain, (record, m))
    if len(seen) < 2:
        return {}
    hosts = {domain[1] for domain in seen}
    out: dict[str, Metric] = {}
    for (_, host, _), (record, m) in seen.items():
        device = str(record.fingerprint.get("rank_device", {}).get("device") or f"rank{record.rank}")
        name = "energy:" + (device if len(hosts) == 1 else f"{host}/{device}")
        out[name] = make(name, m.value, m.source, f"rank {record.rank}'s reading; {m.method}", note=m.note)
    return out


def _slowest_rounds(ranks: list[Record], name: str) -> list[float]:
    samples = [list(r.metrics[name].samples) for r in ranks]
    if len({len(s) for s in samples}) == 1 and samples[0]:
        return [float(x) for x in np.max(np.asarray(samples, dtype=float), axis=0)]
    slowest = max(ranks, key=lambda r: r.metrics[name].value or 0.0)
    return list(slowest.metrics[name].samples)


def _count(ranks: list[Record], name: str, combine: Any) -> int | None:
    metrics = _values(ranks, name)
    if not _available(metrics):
        return None
    return int(combine(m.value for m in metrics))


def _measured(ranks: list[Record]) -> dict[str, Metric]:
    """Re-derive the window metrics from the ranks' raw quantities."""
    base = ranks[0]
    al = base.metrics["AL"]
    latencies = _slowest_rounds(ranks, "AL")
    walls = _values(ranks, "window_time") or _values(ranks, "wall_time")
    wall_s = max(float(m.value or 0.0) for m in walls) if walls else sum(latencies)
    readings: dict[str, Metric] = {}
    for name in MEMORY:
        metrics = _values(ranks, name)
        if metrics is None:
            continue
        if not _available(metrics):
            readings[name] = metrics[0]
            continue
        values = [float(m.value) for m in metrics]  # type: ignore[arg-type]
        m0 = metrics[0]
        readings[name] = like(m0, max(values), f"max over {len(values)} ranks; {m0.method}", note=m0.note)
        if name in SUMMED_BESIDE:
            total = SUMMED_BESIDE[name]
            readings[total] = make(
                total,
                sum(values),
                m0.source,
                f"sum over {len(values)} ranks (shared pages counted in each); {m0.method}",
                note=m0.note,
            )
    for name in PER_DOMAIN:
        metric = _per_domain(ranks, name)
        if metric is not None:
            readings[name] = metric
    readings.update(_device_energies(ranks))
    for name in ("cpu_time", "sampler_cpu_time"):
        cpu = _values(ranks, name)
        if _available(cpu):
            readings[name] = measured(name, _total(cpu), f"sum over ranks; {cpu[0].method}")
    for name in DEVICE_MEAN:
        metrics = _values(ranks, name)
        if _available(metrics):
            per_device: dict[tuple[Any, ...], float] = {}
            for record, m in zip(ranks, metrics):
                per_device.setdefault(energy_domain(record, m), float(m.value))  # type: ignore[arg-type]
            m0 = metrics[0]
            readings[name] = like(
                m0, float(np.mean(list(per_device.values()))), f"mean over {len(per_device)} devices; {m0.method}"
            )
    result = WindowResult(latencies, wall_s, readings)
    if _values(ranks, "TTFT") is not None:
        result.ttft_s = _slowest_rounds(ranks, "TTFT")
        result.output_tokens = base.settings.get("max_new_tokens")
    work = Work(
        tokens=_count(ranks, "tokens", sum),
        samples=_count(ranks, "samples", sum),
        params=_count(ranks, "params", max),
        kind=base.settings.get("workload", "inference"),
        count_flops=False,
    )
    flops = _values(ranks, "flops")
    if _available(flops):
        f0 = flops[0]
        flops_metric = counted(
            "flops",
            _total(flops),
            f"sum over {len(ranks)} ranks; {f0.method}",
        )
    else:
        first = flops[0] if flops else None
        flops_metric = unavailable(
            "flops",
            "counted",
            "torch FlopCounterMode",
            (first.note if first is not None else "") or "not counted in every rank",
        )
    peaks = _values(ranks, "peak_flops_per_s")
    peak = None
    if _available(peaks):
        p0 = peaks[0]
        peak = like(
            p0,
            _total(peaks),
            f"sum over {len(ranks)} ranks of: {p0.method}",
        )
    timer = al.method.split(";")[0]
    backend = _AggregateBackend(_Timer(f"slowest rank per round, {timer}"), peak)
    out = derive_metrics(result, work, flops_metric, backend)  # type: ignore[arg-type]
    out["window_time"] = measured("window_time", wall_s, "longest rank's window (barrier to barrier)")
    own = [float(r.metrics["AL"].value) for r in ranks if r.metrics["AL"].value]
    if len(own) == len(ranks) and min(own) > 0:
        out["latency_rank_spread"] = measured(
            "latency_rank_spread",
            (max(own) - min(own)) / min(own),
            "(max - min) / min over ranks of each rank's own AL",
            samples=tuple(own),
        )
    return out


def _other(ranks: list[Record], name: str) -> Metric:
    present = [r.metrics[name] for r in ranks if name in r.metrics]
    m0 = present[0]
    values = [m.value for m in present]
    if len(present) == len(ranks) and len(set(values)) == 1:
        return m0
    numbers = [float(v) for v in values if v is not None]
    if not numbers:
        return m0
    if name == "comm_time":
        return like(m0, max(numbers), f"slowest of {len(numbers)} ranks; {m0.method}", samples=tuple(numbers))
    return like(
        m0,
        max(numbers),
        f"max over ranks (present in {len(present)} of {len(ranks)}; values differ, see ranks); {m0.method}",
        samples=tuple(numbers),
        note=m0.note,
    )


def _fingerprint(ranks: list[Record]) -> dict[str, Any]:
    out = {k: v for k, v in ranks[0].fingerprint.items() if k != "rank_device"}
    devices = [r.fingerprint.get("rank_device", {}) for r in ranks]
    per_host = Counter(d.get("host", "") for d in devices)
    out["world_size"] = len(ranks)
    out["dist_backend"] = ranks[0].settings.get("dist_backend", "")
    out["launcher"] = ranks[0].settings.get("launcher", "")
    out["topology"] = {"nodes": len(per_host), "ranks_per_node": max(per_host.values())}
    out["rank_devices"] = [d.get("device", "") for d in devices]
    return out


def aggregate(ranks: list[Record]) -> Record:
    """One record for a distributed test from its per-rank records (any order)."""
    if not ranks:
        raise AggregateError("no rank records to aggregate")
    ranks = sorted(ranks, key=lambda r: -1 if r.rank is None else r.rank)
    nodeids = {r.nodeid for r in ranks}
    if len(nodeids) != 1:
        raise AggregateError(f"rank records of different tests: {sorted(nodeids)}")
    world = ranks[0].world_size
    got = [r.rank for r in ranks]
    if got != list(range(world)) or any(r.world_size != world for r in ranks):
        raise AggregateError(f"{ranks[0].nodeid}: expected one record for each rank 0..{world - 1}, got ranks {got}")
    base = ranks[0]
    metrics: dict[str, Metric] = {}
    if all("AL" in r.metrics and r.metrics["AL"].samples for r in ranks):
        metrics.update(_measured(ranks))
    names = sorted({n for r in ranks for n in r.metrics} - set(metrics) - set(DERIVED))
    for name in names:
        metrics[name] = _other(ranks, name)
    settings = dict(base.settings)
    settings["world_size"] = world
    return Record(
        nodeid=base.nodeid,
        profile=base.profile,
        metrics=metrics,
        settings=settings,
        fingerprint=_fingerprint(ranks),
        outcome="passed" if all(r.outcome == "passed" for r in ranks) else "failed",
        worker=base.worker,
        rank=None,
        world_size=world,
        ranks=list(ranks),
        verdicts=[],
        created=base.created,
        schema=base.schema,
    )

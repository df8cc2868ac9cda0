"""The measuring loop: warm up, count the cost once, time rounds inside an open telemetry window.

Plain Python, usable from a notebook:

    meter = Meter(cpu_backend(threads=2))
    metrics = meter.measure(fn, Work(tokens=32), MeasureProtocol(rounds=10, warmup=2))

The measuring protocol (docs/metrics.md, "How a test is measured"): warm-up rounds with the
same shapes; one untimed counting run (`Meter.count`: FLOPs, bytes, allocations, operators);
then rounds until both `rounds` and `min_time_s` are met, and, where the energy counter has an
update period, until the window spans enough of its updates (`EnergyWindow`); raw per-round
samples kept, every round of an extended window included.
Telemetry probes open just before the first timed round and close after the last; nothing
but the timer's two clock reads runs between rounds.
"""

from __future__ import annotations

import contextlib
import gc
import math
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pytest_efficientllm.core.metrics import counted, like, make, measured, unavailable
from pytest_efficientllm.core.record import Metric, Source
from pytest_efficientllm.measuring.backends import Backend
from pytest_efficientllm.telemetry.base import Probe
from pytest_efficientllm.telemetry.cpu_energy import estimate_energy
from pytest_efficientllm.telemetry.flops import count_flops
from pytest_efficientllm.telemetry.gpu_state import merge_throttle_notes, merge_violation_notes
from pytest_efficientllm.telemetry.nvml_energy import counter_did_not_advance
from pytest_efficientllm.telemetry.op_counting import CountedCost, count_run, counted_cost, unavailable_cost

WORKLOADS = ("inference", "pretrain", "finetune")
# A counting run that saw an operator whose result depends on the tensors' values (a shape
# set by the data, a value read by Python) is run once more, to see whether the count varies
# from run to run; not when that run took longer than this (seconds).
RECOUNT_MAX_S = 30.0
# Notes that name what each window saw (throttle reasons, limiters): merged, not one window's kept.
NOTE_MERGES: dict[str, Callable[[str, str], str]] = {
    "gpu_throttled": merge_throttle_notes,
    "gpu_throttled_share": merge_violation_notes,
}
COUNTING_OFF = "counting switched off for this test (flops=False on the marker, Work(count_flops=False))"


@dataclass(frozen=True)
class MeasureProtocol:
    """How many rounds to run. Units: seconds for `min_time_s`."""

    rounds: int = 5
    warmup: int = 1
    min_time_s: float = 0.0
    max_rounds: int = 10_000


@dataclass(frozen=True)
class EnergyWindow:
    """How long a window must last for an energy counter that updates only every so often.

    `resolution`: the worst-case quantisation error (a fraction: 0.02 is 2%) a window is
    extended to reach, by timing more rounds of the same work until it spans 1/resolution
    counter update periods (a read at either edge can be up to one update stale, so a window
    of N updates is off by at most one update's energy: 1/N of it); None never extends.
    `max_time_s`: the cap of an extended window per test (the rounds cap is the protocol's
    `max_rounds`). `cooldown_s`: seconds slept before each window, outside the timed rounds.
    Only a backend whose energy counter has a known update period (NVML's) is extended.
    """

    # 5%: 20 updates, 2 s at NVML's 100 ms period; four times the 5 updates below which a window
    # is flagged short, at a cost a GPU suite can pay per test (2% would be 5 s each).
    resolution: float | None = 0.05
    max_time_s: float = 10.0
    cooldown_s: float = 0.0

    def __post_init__(self) -> None:
        if self.resolution is not None and not 0 < self.resolution < 1:
            raise ValueError(
                f"energy resolution must be a fraction between 0 and 1 (2% is 0.02), got {self.resolution}"
            )
        if self.max_time_s < 0 or self.cooldown_s < 0:
            raise ValueError("energy window max_time_s and cooldown_s must be >= 0 seconds")

    def updates_wanted(self) -> int | None:
        """Counter updates a window must span to reach `resolution`; None when never extended."""
        return None if self.resolution is None else math.ceil(1 / self.resolution - 1e-9)


@dataclass(frozen=True)
class Work:
    """What one round does, for the throughput and per-unit metrics.

    `tokens`/`samples` are per round; `params` is the model's parameter count (the study's
    per-parameter throughputs need it); `flops` per round when known exactly, otherwise
    counted with FlopCounterMode; `kind` selects the study's AT form (IT/TT/ST).
    """

    tokens: int | None = None
    samples: int | None = None
    params: int | None = None
    flops: int | None = None
    kind: str = "inference"
    count_flops: bool = True

    def __post_init__(self) -> None:
        if self.kind not in WORKLOADS:
            raise ValueError(f"workload kind must be one of {WORKLOADS}, got {self.kind!r}")
        # A round of no tokens (or a model of no parameters) would report 0 tok/s as if measured;
        # 0 FLOPs is a true count for work that only moves data.
        for name, least in (("tokens", 1), ("samples", 1), ("params", 1), ("flops", 0)):
            value = getattr(self, name)
            if value is not None:
                check_count(name, value, least, f"; leave {name}= out where there is none")


def check_count(name: str, value: object, least: int, hint: str = "") -> None:
    """A ValueError naming `name` unless `value` is an int (not a bool) of `least` or more."""
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ValueError(f"{name}={value!r}: must be an int of {least} or more{hint}")


@dataclass
class WindowResult:
    """Raw outcome of one or more telemetry windows, before metrics are derived."""

    latencies_s: list[float]
    wall_s: float
    readings: dict[str, Metric]
    ttft_s: list[float] = field(default_factory=list)
    output_tokens: int | None = None
    cpu_s_per_round: list[float] = field(default_factory=list)
    # How long the energy window was made and why (`Meter.run_window`), for record.settings;
    # empty where the backend's energy has no counter period and no cooldown was asked.
    energy_window: dict[str, Any] = field(default_factory=dict)

    def merge(self, other: WindowResult) -> WindowResult:
        """Combine windows of one test: sums for extensive quantities, max for peaks,
        wall-weighted means for time averages."""
        readings = dict(self.readings)
        for name, new in other.readings.items():
            old = readings.get(name)
            if old is None or old.value is None or new.value is None:
                readings[name] = _without_a_value(name, old, new)
                continue
            if _summed(name):
                value = old.value + new.value
            elif "peak" in name:
                value = max(old.value, new.value)
            else:
                total = self.wall_s + other.wall_s
                value = (old.value * self.wall_s + new.value * other.wall_s) / total if total else new.value
            merge_notes = NOTE_MERGES.get(name)
            note = merge_notes(old.note, new.note) if merge_notes else new.note or old.note
            readings[name] = like(new, value, new.method, note=note)
        return WindowResult(
            self.latencies_s + other.latencies_s,
            self.wall_s + other.wall_s,
            readings,
            self.ttft_s + other.ttft_s,
            other.output_tokens if other.output_tokens is not None else self.output_tokens,
            self.cpu_s_per_round + other.cpu_s_per_round,
            merge_energy_windows(self.energy_window, _joules(self), other.energy_window, _joules(other)),
        )


def _summed(name: str) -> bool:
    """Whether two windows' values of `name` add up: extensive quantities (the energy, each GPU's
    own `energy:cuda:<n>` too, CPU time), where peaks take the larger and averages their mean."""
    return name in ("energy", "cpu_time", "sampler_cpu_time") or name.startswith("energy:")


def _without_a_value(name: str, old: Metric | None, new: Metric) -> Metric:
    """The merged reading of two windows where one (or both) has no value.

    A sum over the windows (energy, CPU time) with one window unknown is unknown: the sum of the
    others would read as a saving (a GPU counter reset in one of a training test's steps, which
    `window()` measures one by one). Only a window the energy counter did not tick in adds
    nothing to the sum; elsewhere the known value stands for both."""
    if old is None:
        return new
    if _summed(name):
        unknown = [m for m in (old, new) if m.value is None and not counter_did_not_advance(m)]
        if unknown:
            return unknown[0]
    return new if old.value is None else old


def _joules(result: WindowResult) -> float | None:
    energy = result.readings.get("energy")
    return energy.value if energy is not None else None


def merge_energy_windows(
    first: dict[str, Any], first_j: float | None, second: dict[str, Any], second_j: float | None
) -> dict[str, Any]:
    """What the record says of two energy windows merged into one: the later one's plan and reason,
    the updates both spanned, and the worst-case quantisation of their summed energy. Each window is
    off by up to its own bound, so the sum by up to their energy-weighted mean (the larger bound where
    an energy is unknown)."""
    if not first or not second:
        return dict(second or first)
    out = {**second, "windows": first.get("windows", 1) + second.get("windows", 1)}
    if "updates_spanned" in first and "updates_spanned" in second:
        out["updates_spanned"] = round(first["updates_spanned"] + second["updates_spanned"], 1)
    if "quantisation_bound" not in first and "quantisation_bound" not in second:
        return out  # no counter period (a cooldown alone): no bound to merge
    q1, q2 = first.get("quantisation_bound"), second.get("quantisation_bound")
    if q1 is None or q2 is None:
        out["quantisation_bound"] = None
    elif first_j and second_j and first_j > 0 and second_j > 0:
        out["quantisation_bound"] = round((q1 * first_j + q2 * second_j) / (first_j + second_j), 4)
    else:
        out["quantisation_bound"] = max(q1, q2)
    return out


class Meter:
    """Runs workloads under one backend's timer and probes.

    `single_pass`: the counting run is made once, never again to see variation, and the
    workload is never run again to tell whose a counting failure was (a counting failure
    then makes the counted metrics unavailable, as FlopCounterMode's did): for the ranks of
    a distributed test, which must all call the workload, and its collectives, equally often.
    """

    single_pass: bool = False
    # Why this meter never extends a window for the energy counter ("" where it may): the
    # ranks of a distributed test must all run the same number of rounds.
    fixed_rounds: str = ""

    def __init__(self, backend: Backend, energy: EnergyWindow | None = None) -> None:
        self.backend = backend
        self.energy = energy if energy is not None else EnergyWindow()

    @contextlib.contextmanager
    def _telemetry(self) -> Iterator[dict[str, Any]]:
        probes = self.backend.make_probes()
        box: dict[str, Any] = {}
        # Cyclic garbage the test's set-up just made (still in the young generations)
        # would otherwise be freed inside the window, as this workload's memory going
        # down and its time going up; collecting generations 0 and 1 costs ~0.03 ms.
        # Not a full collection: over a transformers-sized heap that costs ~0.1 s per
        # window (benchmarks/side_by_side/gc_cost.py), most of the plugin's overhead per
        # measurement; old garbage is left to Python's own full collections, as in
        # production, and an untimely one shows as one slow round, not a shifted median.
        gc.collect(1)
        opened: list[Probe] = []
        failure: BaseException | None = None
        try:
            for probe in probes:
                probe.open()
                opened.append(probe)
            t0 = time.perf_counter()
            yield box
            self.backend.synchronize()
            wall = time.perf_counter() - t0
        except BaseException as exc:
            failure = exc
            raise
        finally:
            # Close every probe that opened, even when the workload or another probe
            # failed, so no sampler thread outlives its window; the first error wins.
            close_error: Exception | None = None
            for probe in reversed(opened):
                try:
                    probe.close()
                except Exception as exc:
                    close_error = close_error or exc
            if close_error is not None and failure is None:
                raise close_error
        readings: dict[str, Metric] = {}
        for probe in probes:
            for metric in probe.readings(wall):
                readings[metric.name] = metric
        box["wall_s"] = wall
        box["readings"] = readings

    def run_window(self, fn: Callable[[], Any], protocol: MeasureProtocol) -> WindowResult:
        """Time rounds of `fn` in one telemetry window: `protocol.rounds` and `min_time_s`, and,
        where the energy counter has an update period, long enough for `self.energy.resolution`
        (every round of the longer window is timed and kept)."""
        plan = self._energy_plan(protocol)
        min_time_s = max(protocol.min_time_s, plan.get("target_s", 0.0))
        start = self._before_window()
        with self._telemetry() as box:
            latencies = self.backend.timer.run(fn, protocol.rounds, min_time_s, protocol.max_rounds)
        window = self._energy_outcome(plan, start, protocol, len(latencies), box["wall_s"])
        return WindowResult(
            latencies, box["wall_s"], box["readings"], cpu_s_per_round=self._timer_cpu(), energy_window=window
        )

    def _energy_plan(self, protocol: MeasureProtocol) -> dict[str, Any]:
        """How long the window must last for the energy counter, before it opens (no work inside it)."""
        period = self.backend.energy_period_s
        if period is None:
            return {}
        plan: dict[str, Any] = {"counter_period_s": period}
        wanted = self.energy.updates_wanted()
        if self.fixed_rounds:
            plan["not_extended"] = self.fixed_rounds
        elif wanted is None:
            plan["not_extended"] = "energy window extension switched off (--efficiency-energy-resolution=off)"
        else:
            needed_s = wanted * period
            plan["updates_wanted"] = wanted
            plan["target_s"] = min(needed_s, self.energy.max_time_s)
            if needed_s > self.energy.max_time_s:
                plan["capped_s"] = self.energy.max_time_s
        return plan

    def _before_window(self) -> dict[str, Any]:
        """The cooldown, then the GPU temperature at window start: outside the timed rounds."""
        if self.energy.cooldown_s <= 0:
            return {}
        time.sleep(self.energy.cooldown_s)
        read = self.backend.temperature_c
        temps = read() if read is not None else {"*": "no GPU temperature on this backend"}
        return {"cooldown_s": self.energy.cooldown_s, "temperature_c": temps}

    def _energy_outcome(
        self, plan: dict[str, Any], start: dict[str, Any], protocol: MeasureProtocol, rounds: int, wall_s: float
    ) -> dict[str, Any]:
        """What the record says of the energy window: rounds taken, updates spanned, and why."""
        if not plan:
            return dict(start)
        out: dict[str, Any] = {**plan, **start, "rounds_asked": protocol.rounds, "rounds": rounds}
        period = plan["counter_period_s"]
        updates = wall_s / period
        out["updates_spanned"] = round(updates, 1)
        out["quantisation_bound"] = round(1 / updates, 4) if updates > 0 else None
        if "not_extended" in plan:
            out["why"] = f"not extended: {plan['not_extended']}"
            return out
        wanted = plan["updates_wanted"]
        reached = f"spans ~{updates:.0f} updates of the {period * 1e3:.0f} ms counter"
        if rounds >= protocol.max_rounds and updates < wanted:
            out["why"] = f"stopped at max_rounds={protocol.max_rounds}: {reached}, fewer than the {wanted} wanted"
        elif "capped_s" in plan:
            out["why"] = (
                f"capped at {plan['capped_s']:g} s (--efficiency-energy-max-time): {reached}, "
                f"fewer than the {wanted} wanted ({wanted} x {period * 1e3:.0f} ms)"
            )
        elif rounds > protocol.rounds:
            out["why"] = (
                f"extended from {protocol.rounds} to {rounds} rounds so the window {reached} "
                f"(>= {wanted}: quantisation <= {100 / wanted:.3g}%)"
            )
        else:
            out["why"] = f"the asked rounds already {reached} (>= {wanted} wanted)"
        return out

    def _timer_cpu(self) -> list[float]:
        return list(getattr(self.backend.timer, "cpu_s_per_round", []))

    @contextlib.contextmanager
    def block_window(self) -> Iterator[dict[str, Any]]:
        """One round whose work is the body of a `with` block; result in the yielded dict.

        Never extended for the energy counter (the body runs once per block); the cooldown applies."""
        plan = self._energy_plan(MeasureProtocol(rounds=1))
        if plan:
            plan = {"counter_period_s": plan["counter_period_s"], "not_extended": "a window() block is timed once"}
        start = self._before_window()
        with self._telemetry() as box:
            with self.backend.timer.time_block() as timing:
                yield box
        window = self._energy_outcome(plan, start, MeasureProtocol(rounds=1), 1, box["wall_s"])
        box["result"] = WindowResult(
            [timing["latency_s"]],
            box["wall_s"],
            box["readings"],
            cpu_s_per_round=self._timer_cpu(),
            energy_window=window,
        )

    def warm_up(self, fn: Callable[[], Any], warmup: int) -> None:
        for _ in range(warmup):
            fn()
        self.backend.synchronize()

    def flops_of(self, fn: Callable[[], Any], work: Work) -> Metric:
        if work.flops is not None:
            return counted("flops", float(work.flops), "given by the test")
        if not work.count_flops:
            return unavailable("flops", "counted", "torch FlopCounterMode", "FLOP counting switched off for this test")
        flops, why = count_flops(fn)
        self.backend.synchronize()
        if flops is None:
            return unavailable("flops", "counted", "torch FlopCounterMode", why)
        return counted("flops", float(flops), "torch FlopCounterMode, one untimed run")

    def count(self, fn: Callable[[], Any], work: Work) -> CountedCost:
        """The counted cost of one round (`flops`, `bytes_accessed`, ...) from an untimed run of `fn`
        under FlopCounterMode and the operator counter together (`telemetry.op_counting`).

        Run again when the first run saw a data-dependent operator, so a count that varies
        is reported as varying. An exception of the workload propagates as itself and no
        rounds are timed: when `fn` raises under the counters, it is run once more without
        them, and only if that run succeeds was the failure the counters' own, which makes
        the counted metrics unavailable with the reason.
        """
        transfers = self.backend.device_type == "cuda"
        if work.flops is not None:
            given = counted("flops", float(work.flops), "given by the test")
            why = "not counted: flops= was given by the test, so no untimed counting run"
            return unavailable_cost(why, transfers=transfers, flops=given)
        if not work.count_flops:
            off = unavailable("flops", "counted", "torch FlopCounterMode", "FLOP counting switched off for this test")
            return unavailable_cost(COUNTING_OFF, transfers=transfers, flops=off)
        runs = []
        while True:
            failure = ""
            try:
                runs.append(count_run(fn, transfers=transfers))
            except Exception as exc:
                failure = f"{type(exc).__name__}: {exc}"
            self.backend.synchronize()
            if failure and self.single_pass:
                return unavailable_cost(f"the counting run failed: {failure}", transfers=transfers)
            if failure:
                fn()  # the workload's own error raises here, outside the counters, as itself
                self.backend.synchronize()
                return unavailable_cost(
                    f"the counting run failed where the workload alone did not: {failure}", transfers=transfers
                )
            first = runs[0]
            if len(runs) == 2 or not first.tally.data_dependent or first.seconds > RECOUNT_MAX_S or self.single_pass:
                break
        cost = counted_cost(runs, transfers=transfers)
        if runs[0].tally.data_dependent and len(runs) == 1:
            cost.details["variation"] = (
                "not checked: one counting run per rank"
                if self.single_pass
                else f"not checked: one counting run took {runs[0].seconds:.0f} s"
            )
        return cost


def _percentiles(values: tuple[float, ...], quantiles: tuple[int, ...]) -> list[float | None]:
    # numpy's linear interpolation, without np.percentile: its first call imports numpy.ma
    # (~9 ms), which would land inside the first measurement of every process.
    if not values:
        return [None] * len(quantiles)
    if len(values) == 1:
        return [values[0]] * len(quantiles)
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return [cuts[q - 1] for q in quantiles]


def derive_metrics(
    result: WindowResult, work: Work, flops: Metric, backend: Backend, cost: CountedCost | None = None
) -> dict[str, Metric]:
    """All recorded metrics of a test from its raw window(s), what one round does and, when
    given, its counted cost (`Meter.count`, whose `flops` is then the one recorded)."""
    out: dict[str, Metric] = dict(result.readings)
    if cost is not None:
        out.update(cost.metrics)
    lat = np.asarray(result.latencies_s, dtype=float)
    n = int(lat.size)
    timer = backend.timer.method
    samples = tuple(float(x) for x in lat)
    mean = float(lat.mean()) if n else None
    out["rounds"] = counted("rounds", float(n), "rounds timed")
    out["AL"] = measured("AL", mean, f"{timer}; mean over rounds", samples=samples)
    quantiles = (50, 90, 99)
    for q, value in zip(quantiles, _percentiles(samples, quantiles)):
        out[f"latency_p{q}"] = measured(f"latency_p{q}", value, f"{timer}; percentile {q} over rounds")
    busy = float(lat.sum())
    if len(result.cpu_s_per_round) == n and n:
        cpu = tuple(result.cpu_s_per_round)
        out["cpu_time_per_round"] = measured(
            "cpu_time_per_round",
            float(np.mean(cpu)),
            getattr(backend.timer, "cpu_method", "process CPU time per round"),
            samples=cpu,
        )
    out["wall_time"] = measured("wall_time", busy, f"{timer}; sum over rounds")

    def per_round_rate(count: int | None, name: str) -> None:
        if count is None:
            out[name] = unavailable(name, "measured", timer, f"pass {name.split('_')[0]}= to measure it")
            return
        rates = tuple(count / x for x in samples if x > 0)
        out[name] = measured(
            name, count * n / busy if busy else None, f"counted {name.split('_')[0]} / {timer}", samples=rates
        )

    per_round_rate(work.tokens, "tokens_per_s")
    per_round_rate(work.samples, "samples_per_s")
    if work.tokens is not None:
        out["tokens"] = counted("tokens", float(work.tokens), "given by the test, per round")
    if work.samples is not None:
        out["samples"] = counted("samples", float(work.samples), "given by the test, per round")
    if work.params is not None:
        out["params"] = counted("params", float(work.params), "given by the test")

    out["AT"] = _study_throughput(work, out, n, busy, timer)
    if result.ttft_s:
        _generation_metrics(out, result, timer)

    out["flops"] = flops
    peak = backend.peak_flops
    if flops.value is not None and busy > 0:
        achieved = flops.value * n / busy
        out["flops_per_s"] = measured("flops_per_s", achieved, f"counted FLOPs / {timer}")
        if peak is not None and peak.value is not None:
            out["peak_flops_per_s"] = peak
            out["MFU"] = make(
                "MFU", achieved / peak.value, peak.source, f"counted FLOPs / {timer} / peak ({peak.method})"
            )
    else:
        why = flops.note or "no time measured"
        out["flops_per_s"] = unavailable("flops_per_s", "measured", timer, why)
        out["MFU"] = unavailable("MFU", "measured", timer, why)
    if "PCU" not in out:
        out["PCU"] = unavailable(
            "PCU", "measured", "NVML utilization.gpu", "kernel-busy share exists only on a GPU; see MFU"
        )

    _energy_metrics(out, result, work, n)
    return out


def _study_throughput(work: Work, out: dict[str, Metric], n: int, busy: float, timer: str) -> Metric:
    if work.kind == "inference":
        m = out["tokens_per_s"]
        return measured(
            "AT",
            m.value,
            "IT: generated or processed tokens / s; " + m.method,
            samples=m.samples,
            note=m.note,
            unit="tok/s",
        )
    count, label, unit = (
        (work.tokens, "TT", "tok/param/s") if work.kind == "pretrain" else (work.samples, "ST", "samples/param/s")
    )
    if count is None or not work.params or not busy:
        what = "tokens" if label == "TT" else "samples"
        return unavailable(
            "AT", "measured", f"{label}: {what} / params / s", f"pass {what}= and params= to measure it", unit=unit
        )
    return measured("AT", count * n / work.params / busy, f"{label}: counted / params / {timer}", unit=unit)


def _generation_metrics(out: dict[str, Metric], result: WindowResult, timer: str) -> None:
    ttft = np.asarray(result.ttft_s)
    out["TTFT"] = measured(
        "TTFT",
        float(ttft.mean()),
        "streamer timestamp of the first generated token; mean over rounds",
        samples=tuple(float(x) for x in ttft),
    )
    n_out = result.output_tokens
    if n_out is None or n_out < 2:
        out["TPOT"] = unavailable("TPOT", "measured", timer, "needs at least 2 generated tokens")
        return
    tpot = [(e2e - first) / (n_out - 1) for e2e, first in zip(result.latencies_s, result.ttft_s)]
    out["TPOT"] = measured(
        "TPOT", float(np.mean(tpot)), "(E2E - TTFT) / (N_out - 1); mean over rounds", samples=tuple(tpot)
    )


def _energy_metrics(out: dict[str, Metric], result: WindowResult, work: Work, n: int) -> None:
    energy = out.get("energy")
    if energy is None or energy.value is None:
        cpu = out.get("cpu_time")
        if energy is None and cpu is not None and cpu.value is not None:
            energy = estimate_energy(cpu.value)
            out["energy"] = energy
    tokens = work.tokens * n if work.tokens and n else 0
    if energy is None or energy.value is None:
        why = energy.note if energy is not None else "no energy source"
        for name in ("AEC", "energy_per_round", "energy_per_token", "energy_per_sample"):
            out[name] = unavailable(name, "measured", "energy counter", why)
        if "idle_power" in out:
            _net_unavailable(out, "measured", why, tokens)
        return
    src, method = energy.source, energy.method
    if result.wall_s > 0:
        out["AEC"] = make("AEC", energy.value / result.wall_s, src, f"{AEC_METHOD}; {method}", note=energy.note)
    else:
        out["AEC"] = unavailable("AEC", src, AEC_METHOD, "the window's wall time was 0 s")
    if n:
        out["energy_per_round"] = make(
            "energy_per_round", energy.value / n, src, f"energy / rounds; {method}", note=energy.note
        )
    for count, name in ((work.tokens, "energy_per_token"), (work.samples, "energy_per_sample")):
        if count and n:
            out[name] = make(
                name, energy.value / (count * n), src, f"energy / counted units; {method}", note=energy.note
            )
    _net_energy(out, energy, result.wall_s, tokens)


AEC_METHOD = "energy / window wall time"
AEC_NET_METHOD = "AEC - idle_power; idle power from start-up, assumed constant"
NET_METHOD = "(energy - idle_power x window wall time) / counted tokens; idle power from start-up, assumed constant"


def _net_unavailable(out: dict[str, Metric], source: Source, why: str, tokens: int) -> None:
    out["AEC_net"] = unavailable("AEC_net", source, AEC_NET_METHOD, why)
    if tokens:
        out["energy_per_token_net"] = unavailable("energy_per_token_net", source, NET_METHOD, why)


def _net_energy(out: dict[str, Metric], energy: Metric, wall_s: float, tokens: int) -> None:
    """`AEC_net` and `energy_per_token_net`, where the energy source measures an idle power (NVML
    does at start-up; RAPL and the CPU estimate do not, so CPU records carry neither)."""
    idle = out.get("idle_power")
    if idle is None:
        return
    if idle.value is None:
        _net_unavailable(out, energy.source, f"idle power unknown: {idle.note or 'not measured'}", tokens)
        return
    aec = out["AEC"]
    if aec.value is None:
        out["AEC_net"] = unavailable("AEC_net", energy.source, AEC_NET_METHOD, aec.note)
    else:
        out["AEC_net"] = make("AEC_net", aec.value - idle.value, energy.source, f"{AEC_NET_METHOD}; {energy.method}")
    if tokens:
        net_j = energy.value - idle.value * wall_s  # type: ignore[operator]  # energy.value checked by the caller
        out["energy_per_token_net"] = make(
            "energy_per_token_net", net_j / tokens, energy.source, f"{NET_METHOD}; {energy.method}", note=energy.note
        )

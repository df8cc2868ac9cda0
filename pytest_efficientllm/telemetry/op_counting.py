"""The counted cost of one run of a workload, at the aten level, beside torch's FLOP count.

    run = count_run(fn, transfers=False)      # fn runs once under FlopCounterMode and OpCounter
    cost = counted_cost([run], transfers=False)
    cost.metrics["bytes_accessed"], cost.flops, cost.details["top_by_bytes"]

`count_run` runs the workload once, untimed, under torch's `FlopCounterMode` and the operator
counter (`telemetry.op_tally`, which says what is counted and what cannot be seen), with the
cyclic garbage collector paused. `counted_cost` turns one or more such runs into the counted
metrics (`NAMES`, the dtype shares, on CUDA the copies and synchronizations): a value the runs
agree on as is, one that varies as its maximum with the runs' values as samples and a note.
"""

from __future__ import annotations

import functools
import gc
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_efficientllm.core.metrics import counted, unavailable
from pytest_efficientllm.core.record import Metric
from pytest_efficientllm.telemetry.flops import counters_quiet
from pytest_efficientllm.telemetry.op_tally import OpTally, op_counter_mode

METHOD = "aten TorchDispatchMode over one untimed run, beside FlopCounterMode"
FLOPS_METHOD = "torch FlopCounterMode, one untimed run"
TOP = 5
# Names of the counted metrics every counting run records (the dtype shares and, on CUDA,
# the copies and synchronizations come beside them).
NAMES = (
    "bytes_accessed",
    "arithmetic_intensity",
    "tensor_peak_bytes",
    "retained_tensor_bytes",
    "allocations",
    "allocated_bytes",
    "operators",
)
TRANSFER_NAMES = ("host_to_device_copies", "device_to_host_copies", "synchronizations")


@functools.cache
def _flop_counter_type() -> type:
    from torch.utils.flop_counter import FlopCounterMode

    class GuardedFlopCounter(FlopCounterMode):
        """FlopCounterMode whose own failures (a formula that rejects its arguments) are kept, not raised."""

        problem: str | None = None

        def _count_flops(self, func_packet, out, args, kwargs):
            try:
                return super()._count_flops(func_packet, out, args, kwargs)
            except Exception as exc:
                if self.problem is None:
                    self.problem = f"FlopCounterMode failed on this workload: {type(exc).__name__}: {exc}"
                return out

    return GuardedFlopCounter


@dataclass
class CountingRun:
    """One run of the workload under both counters."""

    tally: OpTally
    flops: int | None  # FlopCounterMode's total; None with `flops_problem`
    flops_problem: str
    seconds: float


def count_run(fn: Callable[[], Any], *, transfers: bool = False) -> CountingRun:
    """Run `fn` once under FlopCounterMode and the operator counter, with the cycle collector paused.

    An exception of `fn` propagates as itself (whether the counters caused it is for the
    caller to find out); the counters' own failures are kept in the result instead.
    """
    tally = OpTally(transfers=transfers)
    flop_counter = _flop_counter_type()(display=False)
    collecting = gc.isenabled()
    gc.disable()
    t0 = time.perf_counter()
    try:
        with counters_quiet(), op_counter_mode(tally), flop_counter:
            fn()
    finally:
        seconds = time.perf_counter() - t0
        # Cyclic garbage is not retained: only what the workload still reaches. With the
        # collector paused, everything the run made is still in the youngest generation, so
        # collecting it alone finds the run's cycles (0.3 ms, against ~180 ms for a full
        # collection with transformers loaded: the counting run's whole cost twentyfold).
        gc.collect(0)
        tally.close()
        if collecting:
            gc.enable()
    problem = flop_counter.problem or ""
    flops = None if problem else int(flop_counter.get_total_flops())
    return CountingRun(tally, flops, problem, seconds)


@dataclass
class CountedCost:
    """The counted metrics of a workload from one or more counting runs, and what they rest on.

    `details` goes to `record.settings["counted_cost"]`: the top operators by bytes and by
    FLOPs, the operators not counted, the data-dependent operators seen and the runs made.
    """

    flops: Metric
    metrics: dict[str, Metric]
    details: dict[str, Any]


def _values(run: CountingRun) -> dict[str, float | None]:
    t = run.tally
    total = t.bytes_accessed
    out: dict[str, float | None] = {
        "bytes_accessed": float(total),
        "arithmetic_intensity": (run.flops / total) if run.flops is not None and total else None,
        "tensor_peak_bytes": float(t.tensor_peak_bytes),
        "retained_tensor_bytes": float(t.retained_bytes),
        "allocations": float(t.allocations),
        "allocated_bytes": float(t.allocated_bytes),
        "operators": float(t.operators),
    }
    if t.transfers:
        out["host_to_device_copies"] = float(t.host_to_device)
        out["device_to_host_copies"] = float(t.device_to_host)
        out["synchronizations"] = float(t.synchronizations)
    if total:
        for dtype, n in sorted(t.bytes_by_dtype.items()):
            out[f"bytes_share:{dtype}"] = n / total
    flops = sum(t.flops_by_dtype.values())
    if flops:
        for dtype, n in sorted(t.flops_by_dtype.items()):
            out[f"flops_share:{dtype}"] = n / flops
    return out


def _shown(values: Sequence[float | None]) -> str:
    return ", ".join("unavailable" if v is None else f"{v:.6g}" for v in values)


def _one(name: str, values: list[float | None], method: str, note: str = "") -> Metric:
    """One metric over the counting runs: the value when they agree; else their maximum, the
    values as samples and a note (a metric that varies run to run is not gated exactly)."""
    known = [v for v in values if v is not None]
    if not known:
        return unavailable(name, "counted", method, note or "no value in any counting run")
    if len(set(values)) == 1:
        return counted(name, known[0], method, note=note)
    why = f"varies run to run: {_shown(values)} in {len(values)} counting runs (data-dependent shapes?)"
    return counted(name, max(known), method, note=f"{why}; {note}" if note else why, samples=tuple(known))


def unavailable_cost(why: str, *, transfers: bool, flops: Metric | None = None) -> CountedCost:
    """Every counted metric unavailable with the reason (counting off, or the counter failed)."""
    names = NAMES + (TRANSFER_NAMES if transfers else ())
    metrics = {name: unavailable(name, "counted", METHOD, why) for name in names}
    return CountedCost(flops or unavailable("flops", "counted", FLOPS_METHOD, why), metrics, {})


def counted_cost(runs: Sequence[CountingRun], *, transfers: bool) -> CountedCost:
    """The counted metrics from the runs of one workload (one run, or two to see variation)."""
    flops_values = [r.flops for r in runs]
    if any(v is None for v in flops_values):
        flops = unavailable("flops", "counted", FLOPS_METHOD, next(r.flops_problem for r in runs if r.flops is None))
    else:
        flops = _one("flops", [float(v) for v in flops_values if v is not None], FLOPS_METHOD)
    problem = next((r.tally.problem for r in runs if r.tally.problem), None)
    if problem is not None:
        return unavailable_cost(problem, transfers=transfers, flops=flops)
    per_run = [_values(r) for r in runs]
    last = runs[-1].tally
    unseen = sorted(set().union(*(r.tally.not_counted for r in runs)))
    note = ""
    if unseen:
        note = (
            f"a lower bound: {len(unseen)} operator(s) not seen inside ({', '.join(unseen[:3])}"
            + (", ..." if len(unseen) > 3 else "")
            + "); see settings['counted_cost']['not_counted']"
        )
    metrics: dict[str, Metric] = {}
    names = list(NAMES + (TRANSFER_NAMES if transfers else ()))
    names += sorted({n for values in per_run for n in values if ":" in n})
    for name in names:
        shares = ":" in name
        values = [v.get(name, 0.0 if shares else None) for v in per_run]
        if name == "arithmetic_intensity" and all(v is None for v in values):
            why = flops.note if flops.value is None else "no bytes accessed"
            metrics[name] = unavailable(name, "counted", METHOD, why)
            continue
        metrics[name] = _one(name, values, METHOD, note if name in ("bytes_accessed", "allocated_bytes") else "")
    details: dict[str, Any] = {
        "top_by_bytes": [[op, n] for op, n in _top(last.bytes_by_op)],
        "top_by_flops": [[op, n] for op, n in _top(last.flops_by_op) if n],
        "not_counted": {name: _why(runs, name) for name in unseen},
        "data_dependent": sorted(set().union(*(r.tally.data_dependent for r in runs))),
        "runs": len(runs),
    }
    return CountedCost(flops, metrics, details)


def _top(counts: Counter[str]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP]


def _why(runs: Sequence[CountingRun], name: str) -> str:
    return next(r.tally.not_counted[name] for r in runs if name in r.tally.not_counted)

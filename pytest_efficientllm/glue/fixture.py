"""The `efficiency` fixture's object: what a test calls to measure and to record facts."""

from __future__ import annotations

import contextlib
import datetime as _dt
import time
from collections.abc import Callable, Iterator
from typing import Any

from pytest_efficientllm.core.metrics import counted, declared, lookup, unavailable
from pytest_efficientllm.core.record import Metric, Record
from pytest_efficientllm.glue.marker import MarkerSpec
from pytest_efficientllm.measuring import roofline
from pytest_efficientllm.measuring.meter import (
    Meter,
    WindowResult,
    Work,
    check_count,
    derive_metrics,
)
from pytest_efficientllm.measuring.session import EfficiencySession
from pytest_efficientllm.telemetry.op_counting import CountedCost, unavailable_cost


class MeasurementError(RuntimeError):
    """Misuse of the fixture inside a test (e.g. two workloads in one test)."""


class Efficiency:
    """Measures one workload per test and collects counted facts beside it.

    Exactly one of `measure`, `generate` or a series of `window` blocks supplies the
    measured workload of a test (parametrize to measure several); `count`, `quality`,
    `compression` and `settings` add facts to the same record.
    """

    def __init__(self, session: EfficiencySession, nodeid: str, spec: MarkerSpec) -> None:
        self._session = session
        self.spec = spec
        self.meter = Meter(session.backend, session.options.energy)
        self.record = Record(
            nodeid=nodeid,
            profile=session.profile,
            fingerprint=dict(session.fingerprint),
            settings={
                "rounds": spec.protocol.rounds,
                "warmup": spec.protocol.warmup,
                "min_time_s": spec.protocol.min_time_s,
                "workload": spec.workload,
                "threads": session.threads,
            },
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        )
        self._mode: str | None = None
        self._windows: WindowResult | None = None
        self._work: Work | None = None

    # -- the measured workload -------------------------------------------------------

    def _claim(self, mode: str) -> None:
        if self._mode is not None and not (mode == "window" and self._mode == "window"):
            raise MeasurementError(
                f"{self.record.nodeid}: this test already measured a workload with {self._mode}(); "
                "one measured workload per test — parametrize the test to measure another"
            )
        self._mode = mode

    def _work_of(
        self, tokens: int | None, samples: int | None, params: int | None, flops: int | None, count_flops: bool = True
    ) -> Work:
        try:
            return Work(
                tokens=tokens,
                samples=samples,
                params=params,
                flops=flops,
                kind=self.spec.workload,
                count_flops=count_flops and self.spec.count_flops,
            )
        except ValueError as exc:
            raise MeasurementError(f"{self.record.nodeid}: {exc}") from None

    def _finish(self, result: WindowResult, work: Work, cost: CountedCost) -> Record:
        for metric in derive_metrics(result, work, cost.flops, self._session.backend, cost).values():
            self.record.add(metric)
        if result.energy_window:
            self.record.settings["energy_window"] = result.energy_window
        if cost.details:
            self.record.settings["counted_cost"] = cost.details
        self._estimate_roofline()
        return self.record

    def _estimate_roofline(self) -> None:
        """The roofline estimates of the record as it stands (after the timed rounds, never
        inside them): for the run's GPU, and for each `--efficiency-roofline` profile."""
        session = self._session
        found = roofline.roofline_metrics(
            self.record.metrics,
            session.profile,
            session.options.roofline,
            session.fingerprint.get("gpu_name"),
        )
        for metric in found.values():
            self.record.add(metric)

    def measure(
        self,
        fn: Callable[[], Any],
        *,
        tokens: int | None = None,
        samples: int | None = None,
        params: int | None = None,
        flops: int | None = None,
    ) -> Record:
        """Warm up, count the cost of one call once (untimed), then time rounds of `fn` in one
        telemetry window. With `warmup=0` the count comes after the rounds (`_counted_and_timed`).

        `tokens`/`samples` are per call of `fn`; `params` enables the study's per-parameter
        throughputs; `flops` per call, when known exactly, skips the counting run.
        """
        self._claim("measure")
        work = self._work_of(tokens, samples, params, flops)
        cost, result = self._counted_and_timed(fn, work, lambda: self.meter.run_window(fn, self.spec.protocol))
        return self._finish(result, work, cost)

    def _counted_and_timed(
        self, fn: Callable[[], Any], work: Work, timed: Callable[[], WindowResult]
    ) -> tuple[CountedCost, WindowResult]:
        """Warm up, then the untimed counting run of `fn` and the timed window, in that order or,
        with `warmup=0`, the other.

        The counting run is a call of the workload too. With `warmup=0` the first timed round must
        be the workload's first call (a cold start is what was asked to be timed), so the count
        comes after the rounds; either way it counts a call that is not the first, so lazily built
        state (caches, masks) is not counted as a round's cost, and the counts do not depend on the
        warm-up.
        """
        warmup = self.spec.protocol.warmup
        self.meter.warm_up(fn, warmup)
        if warmup > 0:
            cost = self.meter.count(fn, work)
            return cost, timed()
        result = timed()
        return self.meter.count(fn, work), result

    def generate(
        self, model: Any, input_ids: Any, *, max_new_tokens: int, params: int | None = None, **generate_kwargs: Any
    ) -> Record:
        """Measure `model.generate` with a fixed amount of work per round, with TTFT and TPOT.

        `min_new_tokens` is forced to `max_new_tokens` so every round generates the same
        number of tokens; tokens are counted from the returned ids (batch x new tokens).
        """
        self._claim("generate")
        try:
            check_count("max_new_tokens", max_new_tokens, 1)
        except ValueError as exc:
            raise MeasurementError(f"{self.record.nodeid}: {exc}") from None
        batch, prompt_len = int(input_ids.shape[0]), int(input_ids.shape[1])
        first_token_at: list[float] = []
        outputs: list[Any] = []

        class _FirstTokenClock:
            # transformers calls put() with the prompt first, then once per new token.
            def __init__(self) -> None:
                self.calls = 0

            def put(self, value: Any) -> None:
                self.calls += 1
                if self.calls == 2:
                    first_token_at.append(time.perf_counter())

            def end(self) -> None:
                pass

        started: list[float] = []

        def one_round() -> None:
            started.append(time.perf_counter())
            outputs.append(
                model.generate(
                    input_ids,
                    max_new_tokens=max_new_tokens,
                    min_new_tokens=max_new_tokens,
                    streamer=_FirstTokenClock(),
                    **generate_kwargs,
                )
            )

        def timed() -> WindowResult:
            # Only the timed rounds' clocks and outputs: not the warm-up's, nor the counting run's.
            started.clear()
            first_token_at.clear()
            outputs.clear()
            result = self.meter.run_window(one_round, self.spec.protocol)
            result.ttft_s = [f - s for s, f in zip(started, first_token_at)]
            result.output_tokens = int(outputs[-1].shape[1]) - prompt_len
            return result

        work = self._work_of(batch * max_new_tokens, batch, params, None)
        cost, result = self._counted_and_timed(one_round, work, timed)
        if result.output_tokens != max_new_tokens:
            raise MeasurementError(
                f"{self.record.nodeid}: generate produced {result.output_tokens} new tokens, expected {max_new_tokens}"
            )
        self.record.settings.update({"max_new_tokens": max_new_tokens, "batch": batch, "prompt_tokens": prompt_len})
        return self._finish(result, work, cost)

    @contextlib.contextmanager
    def window(
        self,
        *,
        tokens: int | None = None,
        samples: int | None = None,
        params: int | None = None,
        flops: int | None = None,
    ) -> Iterator[Record]:
        """Measure the body of a `with` block as one round; repeat the block for more rounds.

        For work that cannot be wrapped in a callable. FLOPs and the rest of the counted cost
        are not counted here (the body cannot be re-run): pass `flops=` when known.
        """
        self._claim("window")
        work = self._work_of(tokens, samples, params, flops, count_flops=False)
        if self._work is not None and self._work != work:
            raise MeasurementError(
                f"{self.record.nodeid}: every window of a test must describe the same work per round"
            )
        self._work = work
        with self.meter.block_window() as box:
            yield self.record
        result = box["result"]
        self._windows = result if self._windows is None else self._windows.merge(result)
        why = "not counted for window() blocks: the body cannot be run again untimed"
        if flops is not None:
            flops_metric = counted("flops", float(flops), "given by the test")
        else:
            flops_metric = unavailable(
                "flops", "counted", "torch FlopCounterMode", "not counted for window() blocks; pass flops="
            )
        cost = unavailable_cost(why, transfers=self._session.backend.device_type == "cuda", flops=flops_metric)
        self._finish(self._windows, work, cost)

    # -- counted facts ---------------------------------------------------------------

    def count(
        self,
        name: str,
        value: float,
        *,
        unit: str | None = None,
        direction: str | None = None,
        method: str = "counted by the test",
    ) -> Metric:
        """Record an exact count (bytes, parameters, ...). Catalog names take the catalog's unit and direction."""
        known = lookup(name)
        if known is None and (unit is None or direction is None):
            raise MeasurementError(f"count({name!r}): not a catalog metric, so unit= and direction= are required")
        if known is None:
            metric = declared(name, float(value), unit, direction, "counted", method)  # type: ignore[arg-type]
        elif unit not in (None, known.unit, *known.units) or direction not in (None, known.direction):
            raise MeasurementError(
                f"count({name!r}): a catalog metric, recorded in {known.unit!r} with {known.direction} "
                "better; leave out unit= and direction=, or record under another name"
            )
        else:
            metric = counted(name, float(value), method, unit=unit if known.units else None)
        self.record.add(metric)
        if roofline.is_input(name):
            self._estimate_roofline()  # FLOPs, bytes or a dtype share counted after the measurement
        return metric

    def quality(self, name: str, value: float, *, direction: str, method: str) -> Metric:
        """A quality score computed deterministically on fixed inputs (perplexity, KL, loss).

        Recorded as `quality:<name>`; `method` names the data and the formula.
        """
        metric = declared(f"quality:{name}", float(value), "", direction, "counted", method)  # type: ignore[arg-type]
        self.record.add(metric)
        return metric

    def compression(
        self,
        *,
        storage_bytes: int,
        reference_bytes: int,
        quality: float,
        reference_quality: float,
        quality_name: str,
        higher_is_better: bool,
        weights: int | None = None,
    ) -> Metric:
        """The study's MCR = (size_ref / size) x (quality / quality_ref), with the plain size ratio beside it.

        Retention is taken so that 1.0 means "as good as the reference": q/q_ref when higher
        is better, q_ref/q when lower is better (e.g. perplexity).
        """
        if storage_bytes <= 0 or reference_bytes <= 0:
            raise MeasurementError("compression(): storage_bytes and reference_bytes must be positive")
        if quality <= 0 or reference_quality <= 0:
            raise MeasurementError("compression(): quality scores must be positive to form a retention ratio")
        size_ratio = reference_bytes / storage_bytes
        retention = quality / reference_quality if higher_is_better else reference_quality / quality
        how = f"retention of {quality_name} ({'higher' if higher_is_better else 'lower'} is better)"
        self.count("storage_bytes", storage_bytes, method="sum of stored tensor bytes, scales included")
        self.count("reference_bytes", reference_bytes, method="sum of the reference's stored tensor bytes")
        self.record.add(counted("size_ratio", size_ratio, "reference_bytes / storage_bytes"))
        self.record.add(counted("quality_retention", retention, how))
        if weights:
            self.record.add(
                counted("bits_per_weight", storage_bytes * 8 / weights, f"storage_bytes x 8 / {weights} weights")
            )
        mcr = counted("MCR", size_ratio * retention, f"size_ratio x {how}")
        self.record.add(mcr)
        return mcr

    def settings(self, **values: Any) -> None:
        """Technique settings to keep with the record (e.g. lora_rank=64, kv_heads=2)."""
        self.record.settings.update(values)

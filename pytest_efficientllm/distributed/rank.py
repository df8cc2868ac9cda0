"""Runs in every rank: the `efficiency` object a distributed test body sees.

`RankEfficiency` is the ordinary `Efficiency` with three differences:

* every telemetry window opens and closes at a barrier of all ranks (the close barrier is
  inside the window, so each rank's window spans the slowest rank's work);
* the number of rounds is fixed (`min_time` is ignored): a rank must never run one round
  more than its peers, or the workload's collectives would stop matching;
* it knows its rank, world size and device, records the device it measured (energy is
  summed once per distinct device when the ranks are aggregated), and takes the
  communication time the workload reports (`comm_time`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

from pytest_efficientllm.core.metrics import measured
from pytest_efficientllm.core.record import Metric, Record
from pytest_efficientllm.distributed.collectives import RankContext, barrier
from pytest_efficientllm.glue.fixture import Efficiency
from pytest_efficientllm.glue.marker import MarkerSpec
from pytest_efficientllm.measuring.backends import Backend
from pytest_efficientllm.measuring.meter import CountedCost, MeasureProtocol, WindowResult, Work
from pytest_efficientllm.measuring.session import EfficiencySession, Options
from pytest_efficientllm.telemetry.base import Probe


class _OpenBarrier(Probe):
    """Opened last, just before the window's clock starts: device synchronised, all ranks arrived."""

    name = "open-barrier"

    def __init__(self, synchronize: Callable[[], None], arrive: Callable[[], None]) -> None:
        self._synchronize = synchronize
        self._arrive = arrive

    def open(self) -> None:
        self._synchronize()
        self._arrive()

    def close(self) -> None:
        return None

    def readings(self, wall_s: float) -> list[Metric]:
        return []


def with_barriers(backend: Backend, arrive: Callable[[], None]) -> Backend:
    """The same backend whose windows open and close at a barrier.

    `Meter` opens probes in order and starts the window clock after the last one, and calls
    `synchronize` at the end of the window before reading the clock: so a barrier appended
    to the probes opens the window, and one added to `synchronize` closes it. Warm-up and
    FLOP counting also end with `synchronize`, at the same point in every rank.
    """

    def probes() -> list[Probe]:
        return [*backend.make_probes(), _OpenBarrier(backend.synchronize, arrive)]

    def synchronize() -> None:
        backend.synchronize()
        arrive()

    return dataclasses.replace(backend, make_probes=probes, synchronize=synchronize)


def rank_spec(spec: MarkerSpec) -> MarkerSpec:
    """Exactly `rounds` rounds in every rank, so collectives inside rounds stay matched."""
    p = spec.protocol
    return dataclasses.replace(
        spec, protocol=MeasureProtocol(rounds=p.rounds, warmup=p.warmup, min_time_s=0.0, max_rounds=p.rounds)
    )


class RankEfficiency(Efficiency):
    """`efficiency` inside one rank of a distributed test."""

    def __init__(self, session: EfficiencySession, nodeid: str, spec: MarkerSpec, ctx: RankContext) -> None:
        super().__init__(session, nodeid, rank_spec(spec))
        self.ctx = ctx
        self._backend = with_barriers(session.backend, lambda: barrier(ctx, f"window of {nodeid}"))
        self.meter.backend = self._backend
        # Every rank must call the workload (and its collectives) as often as the others.
        self.meter.single_pass = True
        self.meter.fixed_rounds = "the ranks of a distributed test run exactly `rounds` rounds"
        self.record.rank = ctx.rank
        self.record.world_size = ctx.world_size
        self.record.fingerprint["rank_device"] = ctx.identity()
        self.record.settings.update(
            {"world_size": ctx.world_size, "launcher": ctx.launcher, "dist_backend": ctx.backend}
        )
        if spec.protocol.min_time_s:
            self.record.settings["min_time_ignored_s"] = spec.protocol.min_time_s

    @property
    def rank(self) -> int:
        return self.ctx.rank

    @property
    def world_size(self) -> int:
        return self.ctx.world_size

    @property
    def local_rank(self) -> int:
        return self.ctx.local_rank

    @property
    def device(self) -> torch.device:
        """Where this rank's model belongs: `cuda:<local_rank>` under NCCL, else the CPU."""
        return self.ctx.device

    def comm_time(self, seconds_per_round: float, *, method: str = "reported by the workload") -> Metric:
        """Communication seconds per round that the workload timed itself (e.g. in a DDP comm hook).

        Units: s. Aggregated as the slowest rank's; `method` says how it was timed.
        """
        metric = measured("comm_time", float(seconds_per_round), method)
        self.record.add(metric)
        return metric

    def _finish(self, result: WindowResult, work: Work, cost: CountedCost) -> Record:
        record = super()._finish(result, work, cost)
        record.add(
            measured(
                "window_time", result.wall_s, "perf_counter from the window's opening barrier to its closing barrier"
            )
        )
        return record


@dataclass
class TestBody:
    """A test function and its fixture values, run in a spawned rank (picklable for `spawn`).

    The rank builds its own session (its thread share, its device) and hands the test an
    `efficiency` of its own when the test asked for one; returns that rank's record as plain data.
    """

    __test__ = False  # not a pytest test class

    fn: Callable[..., Any]
    kwargs: dict[str, Any]
    nodeid: str
    spec: MarkerSpec
    options: Options
    threads: int

    def __call__(self, ctx: RankContext) -> dict[str, Any] | None:
        kwargs = dict(self.kwargs)
        efficiency = None
        session = None
        if "efficiency" in kwargs:
            # A rank measures its own device: energy is summed over the ranks' devices afterwards.
            session = EfficiencySession(dataclasses.replace(self.options, threads=self.threads, all_devices=False))
            efficiency = RankEfficiency(session, self.nodeid, self.spec, ctx)
            kwargs["efficiency"] = efficiency
        try:
            self.fn(**kwargs)
        finally:
            if session is not None:
                session.close()
        if efficiency is None or not efficiency.record.metrics:
            return None
        return efficiency.record.to_dict()

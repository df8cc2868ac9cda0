"""pytest hooks of distributed measurement (registered by `plugin` through `pytest_plugins`).

Two ways a test runs in several ranks, both on torch.distributed:

* spawned: `@pytest.mark.efficiency(world_size=N)` -> `pytest_pyfunc_call` starts N local
  ranks (`spawn.run_ranks`), runs the test body in each, aggregates their records and puts
  the aggregate where the plugin's report hook reads the test's record;
* torchrun: every rank runs the session; `TorchrunSession` (registered only then) checks that
  the ranks collected the same tests, hands each test a rank-aware `efficiency`, gathers
  the outcomes to rank 0 after each test, and leaves the aggregate record to rank 0 only.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Generator
from typing import Any

import pytest

from pytest_efficientllm.core.devices import usable_cores
from pytest_efficientllm.distributed import torchrun
from pytest_efficientllm.distributed.aggregate import aggregate
from pytest_efficientllm.distributed.collectives import (
    DEFAULT_TIMEOUT_S,
    RankContext,
    all_gather,
    default_backend,
    gather_to_root,
    join,
    leave,
)
from pytest_efficientllm.distributed.outcome import (
    FAILED,
    PASSED,
    SKIPPED,
    RankOutcome,
    failure_message,
    format_error,
    skip_reason,
)
from pytest_efficientllm.distributed.rank import RankEfficiency, TestBody
from pytest_efficientllm.distributed.spawn import (
    START_METHODS,
    choose_start_method,
    run_ranks,
)
from pytest_efficientllm.glue.state import FIXTURE_KEY, RUN_KEY, SPEC_KEY
from pytest_efficientllm.measuring.session import EfficiencySession

TORCHRUN_PLUGIN = "efficiency-torchrun"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("efficiency")
    group.addoption(
        "--efficiency-dist-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"timeout of every collective the plugin issues, and of the process group it creates "
        f"(default: ini efficiency_dist_timeout, {DEFAULT_TIMEOUT_S:g} s)",
    )
    group.addoption(
        "--efficiency-start-method",
        default=None,
        choices=START_METHODS,
        help="how world_size=N tests start their ranks (default: auto = fork unless CUDA is initialised)",
    )
    parser.addini(
        "efficiency_dist_timeout", "timeout of the plugin's collectives, in seconds", default=str(DEFAULT_TIMEOUT_S)
    )
    parser.addini(
        "efficiency_start_method", "start method of spawned ranks: auto|fork|spawn|forkserver", default="auto"
    )


def _timeout_s(config: pytest.Config) -> float:
    value = config.getoption("efficiency_dist_timeout", default=None)
    raw = value if value is not None else config.getini("efficiency_dist_timeout")
    try:
        seconds = float(raw)
    except ValueError:
        raise pytest.UsageError(f"efficiency_dist_timeout={raw!r}: expected seconds, e.g. 300") from None
    if seconds <= 0:
        raise pytest.UsageError(f"efficiency_dist_timeout={raw!r}: must be > 0")
    return seconds


def _start_method(config: pytest.Config) -> str:
    raw = config.getoption("efficiency_start_method", default=None) or config.getini("efficiency_start_method")
    if raw not in START_METHODS:
        raise pytest.UsageError(f"efficiency_start_method={raw!r}: expected one of {', '.join(START_METHODS)}")
    return str(raw)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    _timeout_s(config)
    _start_method(config)
    try:
        env = torchrun.detect()
    except torchrun.TorchrunEnvError as exc:
        raise pytest.UsageError(f"torchrun environment: {exc}") from None
    if env is None or RUN_KEY not in config.stash:
        return
    config.stash[RUN_KEY].reporting = env.rank == 0
    config.pluginmanager.register(TorchrunSession(config, env), TORCHRUN_PLUGIN)


# -- spawned ranks -------------------------------------------------------------------------


def _rank_threads(eff: EfficiencySession, world_size: int, method: str) -> int:
    if method == "fork":
        return 1  # GNU OpenMP's pool does not survive fork: see spawn.py
    return eff.options.threads or max(1, usable_cores() // world_size)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run a `world_size > 1` test in freshly started ranks (not under torchrun: there the ranks exist)."""
    spec = pyfuncitem.stash.get(SPEC_KEY, None)
    config = pyfuncitem.config
    if spec is None or spec.world_size <= 1 or config.pluginmanager.has_plugin(TORCHRUN_PLUGIN):
        return None
    eff = config.stash[RUN_KEY].session
    method = choose_start_method(_start_method(config))
    backend = default_backend(eff.profile)
    if backend == "nccl":
        import torch

        if torch.cuda.device_count() < spec.world_size:
            pytest.skip(f"world_size={spec.world_size} needs one GPU per rank; {torch.cuda.device_count()} visible")
    argnames = pyfuncitem._fixtureinfo.argnames
    body = TestBody(
        pyfuncitem.obj,
        {name: pyfuncitem.funcargs[name] for name in argnames},
        pyfuncitem.nodeid,
        spec,
        eff.options,
        _rank_threads(eff, spec.world_size, method),
    )
    outcomes = run_ranks(body, spec.world_size, backend=backend, timeout_s=_timeout_s(config), start_method=method)
    _conclude(pyfuncitem, outcomes, spec.world_size)
    return True


def _conclude(item: pytest.Item, outcomes: list[RankOutcome], world_size: int) -> None:
    """Fail, skip or hand the aggregate record to the plugin's report hook."""
    message = failure_message(outcomes, world_size)
    if message is not None:
        pytest.fail(message, pytrace=False)
    reason = skip_reason(outcomes)
    if reason is not None:
        pytest.skip(reason)
    records = [o.to_record() for o in outcomes]
    fixture = item.stash.get(FIXTURE_KEY, None)
    if fixture is not None and all(r is not None for r in records):
        fixture.record = aggregate([r for r in records if r is not None])


# -- torchrun --------------------------------------------------------------------------------


def _fingerprint_of(nodeids: list[str]) -> str:
    return hashlib.sha256("\n".join(nodeids).encode()).hexdigest()


def collection_mismatch(per_rank: list[list[str]]) -> str | None:
    """None when every rank collected the same tests in the same order; else what differs."""
    first = per_rank[0]
    bad = [r for r, ids in enumerate(per_rank) if ids != first]
    if not bad:
        return None
    r = bad[0]
    other = per_rank[r]
    at = next((i for i, (a, b) in enumerate(zip(first, other)) if a != b), min(len(first), len(other)))
    here = first[at] if at < len(first) else "<end>"
    there = other[at] if at < len(other) else "<end>"
    return (
        f"torchrun ranks collected different tests: rank 0 has {len(first)}, rank {r} has {len(other)}; "
        f"first difference at position {at}: rank 0 {here!r} vs rank {r} {there!r}. "
        "Every rank must run the same pytest arguments on the same files (no rank-dependent skips at collection)."
    )


class TorchrunSession:
    """The plugin's behaviour in one rank of a torchrun job."""

    def __init__(self, config: pytest.Config, env: torchrun.TorchrunEnv) -> None:
        self.env = env
        eff: EfficiencySession = config.stash[RUN_KEY].session
        if eff.options.threads is None:  # share the node's cores among its ranks, not among xdist workers
            share = max(1, usable_cores() // env.local_world_size)
            if share != eff.threads:
                config.stash[RUN_KEY].session = eff = EfficiencySession(dataclasses.replace(eff.options, threads=share))
        self.ctx: RankContext = join(
            env.rank,
            env.world_size,
            local_rank=env.local_rank,
            local_world_size=env.local_world_size,
            backend=default_backend(eff.profile),
            launcher="torchrun",
            timeout_s=_timeout_s(config),
        )

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        nodeids = [item.nodeid for item in session.items]
        digests = all_gather(self.ctx, (_fingerprint_of(nodeids), nodeids), step="comparing collected tests")
        problem = collection_mismatch([ids for _, ids in digests])
        if problem:
            raise pytest.UsageError(problem)

    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        spec = item.stash.get(SPEC_KEY, None)
        if spec is not None and spec.world_size > 1 and spec.world_size != self.ctx.world_size:
            pytest.skip(f"asks for world_size={spec.world_size}; this torchrun job has {self.ctx.world_size} ranks")

    @pytest.hookimpl(wrapper=True)
    def pytest_pyfunc_call(self, pyfuncitem: pytest.Function) -> Generator[None, Any, Any]:
        if "efficiency" not in pyfuncitem.funcargs:
            return (yield)
        config = pyfuncitem.config
        spec = pyfuncitem.stash[SPEC_KEY]
        mine = RankEfficiency(config.stash[RUN_KEY].session, pyfuncitem.nodeid, spec, self.ctx)
        pyfuncitem.funcargs["efficiency"] = mine
        pyfuncitem.stash[FIXTURE_KEY] = mine
        error: BaseException | None = None
        try:
            result = yield
            outcome = RankOutcome(self.ctx.rank, PASSED, record=mine.record.to_dict() if mine.record.metrics else None)
        except BaseException as exc:  # noqa: BLE001 - reported to rank 0, then re-raised
            error = exc
            status = SKIPPED if isinstance(exc, pytest.skip.Exception) else FAILED
            text = str(getattr(exc, "msg", "") or exc) if status == SKIPPED else format_error(exc)
            outcome = RankOutcome(self.ctx.rank, status, error=text)
            result = None
        gathered = gather_to_root(self.ctx, outcome.to_dict(), step=f"results of {pyfuncitem.nodeid}")
        if self.ctx.rank != 0:
            del pyfuncitem.stash[FIXTURE_KEY]  # only rank 0 records, compares and reports
            if error is not None:
                raise error
            return result
        outcomes = [RankOutcome.from_dict(d) for d in gathered or []]
        if error is not None:
            raise error
        _conclude(pyfuncitem, outcomes, self.ctx.world_size)
        return result

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        leave(self.ctx)

"""pytest hooks of the confirmation vote (registered by `plugin` through `pytest_plugins`).

A test whose measured metrics failed (`judging.evaluate.Decision.suspects`) is held: its
reports are logged only when fresh processes, spaced apart in time, have voted
(`confirmation.vote`, `confirmation.queue`). Meanwhile the run goes on; between tests the
fresh processes that are due run, and after the last test the rest are decided.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import pytest
from _pytest.runner import (
    runtestprotocol,  # pytest's protocol without its logging (as pytest-rerunfailures)
)

from pytest_efficientllm.confirmation import vote as confirm
from pytest_efficientllm.confirmation.queue import Held
from pytest_efficientllm.core.record import Record
from pytest_efficientllm.glue.outcome import settle
from pytest_efficientllm.glue.state import HELD_KEY, RUN_KEY
from pytest_efficientllm.glue.worker import device_lock, logging_late
from pytest_efficientllm.judging.evaluate import Decision


@dataclass
class HeldTest:
    """What a test held for confirmation still needs when its vote is decided."""

    item: pytest.Item
    record: Record
    call_report: pytest.TestReport
    functional: str
    decision: Decision
    reports: list[pytest.TestReport] = field(default_factory=list)  # setup, call, teardown: logged on release


def child_settings(config: pytest.Config, call_s: float) -> confirm.ChildSettings:
    """How a fresh process must run to measure a test as this one did."""
    state = config.stash[RUN_KEY]
    eff = state.session
    args = list(config.invocation_params.args)
    plugins = tuple(
        args[i + 1] if arg == "-p" else arg[2:]
        for i, arg in enumerate(args)
        if (arg == "-p" and i + 1 < len(args)) or (arg.startswith("-p") and len(arg) > 2)
    )
    current = eff.fingerprint["process_layout"]  # read once at start-up; it cannot change in a process
    defaults = eff.options.defaults
    return confirm.ChildSettings(
        rootdir=config.rootpath,
        inifile=config.inipath,
        profile=eff.profile,
        threads=eff.threads,
        rounds=defaults.rounds,
        warmup=defaults.warmup,
        min_time_s=defaults.min_time_s,
        plugins=plugins,
        fixed_layout=current["aslr"] is False and current["hash_seed"] != "random",
        xdist=config.pluginmanager.hasplugin("xdist"),
        # A fresh process pays start-up and collection on top of the test itself.
        timeout_s=max(120.0, 20 * call_s),
    )


def hold(test: HeldTest, call_s: float) -> None:
    """Hold the test's reports until fresh processes, spaced apart in time, have voted."""
    state = test.item.config.stash[RUN_KEY]
    assert state.confirm_queue is not None, "a decision with suspects comes only from a run that confirms"
    settings = child_settings(test.item.config, call_s)
    nodeid = test.record.nodeid

    def measure_again() -> Record | str:
        # Never two measurements on one GPU at once: the fresh process measures under this worker's lock.
        locked = state.locked_device
        with device_lock(locked) if locked is not None else contextlib.nullcontext():
            return confirm.measure_in_child(nodeid, settings)

    decision = test.decision
    vote = confirm.Vote(decision.verdicts, decision.suspects, state.settings.confirm_processes)
    test.item.stash[HELD_KEY] = state.confirm_queue.hold(vote, measure_again, decision.rejudge, test)


def _log(item: pytest.Item, reports: list[pytest.TestReport]) -> None:
    for report in reports:
        item.ihook.pytest_runtest_logreport(report=report)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)


def _release(held: Held) -> None:
    """A held test whose vote is decided (or abandoned): its final verdicts, then its reports logged."""
    test: HeldTest = held.payload
    vote = held.vote
    queue = test.item.config.stash[RUN_KEY].confirm_queue
    test.record.confirmations = list(vote.records)
    test.record.settings["confirmation_s"] = round(vote.seconds, 3)
    test.record.settings["confirmation_spacing_s"] = queue.spacing_s if queue is not None else None
    settle(test.call_report, test.record, vote.final_verdicts() + test.decision.extra, test.functional)
    with logging_late(test.item):
        _log(test.item, test.reports)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    # pytest's own protocol, except that a test held for confirmation logs its reports when
    # its vote is decided, and that between tests the fresh processes that are due run.
    queue = item.config.stash[RUN_KEY].confirm_queue
    if queue is None:
        return None
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    reports = runtestprotocol(item, nextitem=nextitem, log=False)
    held = item.stash.get(HELD_KEY, None)
    if held is None:
        _log(item, reports)
    else:
        held.payload.reports = reports
    for decided in queue.run_due():
        _release(decided)
    return True


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Generator[None, Any, Any]:
    # After the last test (on an xdist worker: after its last one, before it reports back),
    # the held tests are decided; a run that stops early keeps their verdicts unconfirmed.
    queue = session.config.stash[RUN_KEY].confirm_queue
    try:
        result = yield
    except BaseException as exc:
        if queue is not None:
            for held in queue.abandon(f"the run stopped before fresh processes confirmed it ({exc!r})"):
                _release(held)
        raise
    if queue is not None:
        for held in queue.drain():
            _release(held)
    return result

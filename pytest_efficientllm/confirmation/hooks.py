"""pytest hooks of the confirmation vote (registered by `plugin` through `pytest_plugins`).

A test whose measured metrics failed (`judging.evaluate.Decision.suspects`) is held
(`glue.holding`): its reports are logged only when fresh processes, spaced apart in time,
have voted (`confirmation.vote`, `confirmation.queue`). Meanwhile the run goes on; between
tests the fresh processes that are due run, and after the last test the rest are decided.
On a `GROSS_ONLY` profile a failure the vote confirmed waits for the last test too: only
then is it known how far the run as a whole moved (`judging.run_shift`), a drift that may
explain the slowdown (`Decision.apart_from_run`).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
from _pytest.runner import (
    runtestprotocol,  # pytest's protocol without its logging (as pytest-rerunfailures)
)

from pytest_efficientllm.confirmation.queue import Held
from pytest_efficientllm.glue.holding import HeldTest
from pytest_efficientllm.glue.outcome import settle
from pytest_efficientllm.glue.state import HELD_KEY, RUN_KEY
from pytest_efficientllm.glue.worker import logging_late
from pytest_efficientllm.judging.gross import GROSS_ONLY


def _log(item: pytest.Item, reports: list[pytest.TestReport]) -> None:
    for report in reports:
        item.ihook.pytest_runtest_logreport(report=report)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)


def _release(held: Held) -> None:
    """A held test whose vote is decided (or abandoned): its final verdicts, then its reports logged."""
    test: HeldTest = held.payload
    vote = held.vote
    state = test.item.config.stash[RUN_KEY]
    queue = state.confirm_queue
    test.record.confirmations = list(vote.records)
    test.record.settings["confirmation_s"] = round(vote.seconds, 3)
    test.record.settings["confirmation_spacing_s"] = queue.spacing_s if queue is not None else None
    final = test.decision.apart_from_run(vote.final_verdicts(), state.run_changes, test.record.profile)
    settle(test.call_report, test.record, final + test.decision.extra, test.functional)
    with logging_late(test.item):
        _log(test.item, test.reports)


def _waits_for_the_run(held: Held) -> bool:
    """A failure the vote confirmed, on a profile where the run's own shift can still clear it."""
    test: HeldTest = held.payload
    return test.record.profile in GROSS_ONLY and any(v.failed for v in held.vote.final_verdicts())


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
        if _waits_for_the_run(decided):
            item.config.stash[RUN_KEY].awaiting_run.append(decided)
        else:
            _release(decided)
    return True


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Generator[None, Any, Any]:
    # After the last test (on an xdist worker: after its last one, before it reports back),
    # the held tests are decided; a run that stops early keeps their verdicts unconfirmed.
    # The wait after the last test is part of the run too: Ctrl-C there had dropped the held
    # tests from the summary and the run file.
    state = session.config.stash[RUN_KEY]
    queue = state.confirm_queue
    try:
        result = yield
        if queue is not None:
            for held in queue.drain():
                _release(held)
    except BaseException as exc:
        if queue is not None:
            for held in queue.abandon(f"the run stopped before fresh processes confirmed it ({exc!r})"):
                _release(held)
        raise
    finally:
        # Decided during the run, released now that every test of this process has been judged.
        while state.awaiting_run:
            _release(state.awaiting_run.pop(0))
    return result

"""Holding a test for the confirmation vote: what a held test keeps, and the fresh processes that
measure it again (`confirmation.vote`), queued on this process's `ConfirmQueue`.

Called from the gate's `makereport` hook (`glue.hooks`), and its held tests released by
`confirmation.hooks`. Not part of that hooks module: pytest registers it as a plugin and
rewrites its asserts only if no other module imported it first.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from pytest_efficientllm.confirmation import vote as confirm
from pytest_efficientllm.core.record import Record
from pytest_efficientllm.glue.state import HELD_KEY, RUN_KEY
from pytest_efficientllm.glue.worker import device_lock
from pytest_efficientllm.judging.evaluate import Decision
from pytest_efficientllm.measuring import process_layout as layout


@dataclass
class HeldTest:
    """What a test held for confirmation still needs when its vote is decided."""

    item: pytest.Item
    record: Record
    call_report: pytest.TestReport
    functional: str
    decision: Decision
    reports: list[pytest.TestReport] = field(default_factory=list)  # setup, call, teardown: logged on release


def plugin_args(args: Sequence[str]) -> tuple[str, ...]:
    """The plugins a command line loads or blocks with `-p NAME` or `-pNAME`, in order: a fresh
    process that confirms a test must load (and leave out) the same ones."""
    return tuple(
        args[i + 1] if arg == "-p" else arg[2:]
        for i, arg in enumerate(args)
        if (arg == "-p" and i + 1 < len(args)) or (arg.startswith("-p") and len(arg) > 2)
    )


def child_settings(config: pytest.Config, call_s: float) -> confirm.ChildSettings:
    """How a fresh process must run to measure a test as this one did."""
    state = config.stash[RUN_KEY]
    eff = state.session
    plugins = plugin_args(config.invocation_params.args)
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
        fixed_layout=layout.children_start_fixed(current),
        xdist=config.pluginmanager.hasplugin("xdist"),
        # A fresh process pays start-up and collection on top of the test itself.
        timeout_s=max(120.0, 20 * call_s),
    )


def measured_again(nodeid: str, settings: confirm.ChildSettings, locked_device: str | None) -> Record | str:
    """A fresh process's record of the test (or why there is none), measured under the lock of
    the GPU whose lock this worker's measured tests take: never two measurements on one GPU at once."""
    with device_lock(locked_device) if locked_device is not None else contextlib.nullcontext():
        return confirm.measure_in_child(nodeid, settings)


def hold(test: HeldTest, call_s: float) -> None:
    """Hold the test's reports until fresh processes, spaced apart in time, have voted."""
    state = test.item.config.stash[RUN_KEY]
    assert state.confirm_queue is not None, "a decision with suspects comes only from a run that confirms"
    measure_again = functools.partial(
        measured_again, test.record.nodeid, child_settings(test.item.config, call_s), state.locked_device
    )
    decision = test.decision
    vote = confirm.Vote(decision.verdicts, decision.suspects, state.settings.confirm_processes)
    test.item.stash[HELD_KEY] = state.confirm_queue.hold(vote, measure_again, decision.rejudge, test)

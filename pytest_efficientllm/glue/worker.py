"""The worker side of the xdist wire (also what a serial run does in its only process).

* pins this worker to one GPU (`--efficiency-devices=0,1`: worker gwN sees device N mod
  the number of devices, through CUDA_VISIBLE_DEVICES, before anything touches CUDA);
* measured tests on a device another worker may measure on take a per-device file lock,
  so one GPU never measures two tests at once: pinned workers when they outnumber the
  devices, and unpinned workers on a CUDA machine, which all measure on the device CUDA
  shows them first (`lock_device`);
* attaches each measured test's `TestResult` to its report (plain data, serialised by
  xdist with the report), and leaves a summary of this worker in `workeroutput`;
* lets a test held for confirmation log its reports after later tests ran (`logging_late`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import pytest
from filelock import FileLock

from pytest_efficientllm.core.devices import machine_lock, usable_cores
from pytest_efficientllm.glue.state import RunState, TestResult

REPORT_ATTR = "efficiency_result"
WORKEROUTPUT_KEY = "efficiency"


def worker_id(config: Any) -> str | None:
    workerinput = getattr(config, "workerinput", None)
    return workerinput.get("workerid") if workerinput else None


def worker_count(config: Any) -> int:
    workerinput = getattr(config, "workerinput", None)
    return int(workerinput.get("workercount", 1)) if workerinput else 1


def pin_device(
    devices: tuple[str, ...], workerid: str | None, workers: int, environ: dict[str, str] | Any = os.environ
) -> tuple[str | None, bool]:
    """Set CUDA_VISIBLE_DEVICES for this process; returns (device, shared with another worker)."""
    if not devices:
        return None, False
    index = int(workerid[2:]) if workerid and workerid.startswith("gw") and workerid[2:].isdigit() else 0
    device = devices[index % len(devices)]
    environ["CUDA_VISIBLE_DEVICES"] = device
    return device, workers > len(devices)


def lock_device(
    pinned: str | None, shared: bool, workers: int, cuda: Any = None, environ: dict[str, str] | Any = os.environ
) -> str | None:
    """The device whose lock this process's measured tests take; None where no other worker measures on it.

    `pinned`, `shared`: what `pin_device` returned. An unpinned worker among several measures
    on `cuda.current_device()` (torch.cuda, or a test double), as every other worker does: its
    lock is named like `--efficiency-devices` names it (the CUDA_VISIBLE_DEVICES entry, else
    the index), so pinned and unpinned runs on one machine take the same lock.
    """
    if pinned is not None:
        return pinned if shared else None
    if workers < 2:
        return None
    if cuda is None:
        import torch

        cuda = torch.cuda
    if not cuda.is_available():
        return None
    ordinal = int(cuda.current_device())
    visible = [part.strip() for part in str(environ.get("CUDA_VISIBLE_DEVICES", "")).split(",") if part.strip()]
    return visible[ordinal] if ordinal < len(visible) else str(ordinal)


def device_lock(device: str) -> FileLock:
    """A machine-wide lock for one device: held for the duration of a measured test."""
    return machine_lock(f"device-{device}")


def attach(report: Any, result: TestResult) -> None:
    # An extra attribute of a TestReport survives xdist's report serialisation
    # (`_report_to_json` copies `__dict__`; TestReport(**extra) restores it).
    setattr(report, REPORT_ATTR, result.to_wire())


def worker_summary(state: RunState, threads: int, cores: int, process_layout: dict[str, Any]) -> dict[str, Any]:
    """What the controller's summary says about this worker: `device` is the GPU it was pinned
    to, `locked_device` the one whose lock its measured tests took (pinned or not)."""
    calibrations = state.calibrator.history if state.calibrator else []
    return {
        "threads": threads,
        "cores": cores,
        "device": state.device,
        "locked_device": state.locked_device,
        "process_layout": process_layout,
        "calibrations": [c.to_dict() for c in calibrations],
    }


@contextlib.contextmanager
def logging_late(item: Any) -> Iterator[None]:
    """Log `item`'s reports now, after later tests ran, on an xdist worker as in a serial run.

    xdist's worker checks that a report belongs to the test it is running (its
    `item_index`, pytest-xdist 3 `remote.py`) and sends that index with the report; the
    controller only shows it. For the time of logging a held test's reports, the worker's
    current test is that test. Elsewhere (a serial run, another xdist) nothing is changed.
    """
    interactor = next(
        (
            p
            for p in item.config.pluginmanager.get_plugins()
            if type(p).__name__ == "WorkerInteractor" and hasattr(p, "item_index")
        ),
        None,
    )
    if interactor is None:
        yield
        return
    current = interactor.item_index
    interactor.item_index = item.session.items.index(item)
    try:
        yield
    finally:
        interactor.item_index = current


class WorkerPlugin:
    """The plugin's hooks in an xdist worker, as xdist's `WorkerInteractor`: results travel on
    the reports (`attach`); at the end, a summary of this worker for the controller."""

    def __init__(self, state: RunState) -> None:
        self.state = state

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if not self.state.session_opened:
            return  # this worker measured nothing: nothing to say of it
        eff = self.state.session
        session.config.workeroutput[WORKEROUTPUT_KEY] = worker_summary(  # type: ignore[attr-defined]
            self.state, eff.threads, usable_cores(), eff.fingerprint["process_layout"]
        )

"""This process's state for one run (`RunState`), and the one result of a test that crosses the xdist wire.

One `RunState` per process, on the config under `RUN_KEY`: the settings, the measuring
session, the baseline store, and on the controller (or a serial run) the results that came
back. Per test, the item carries its marker spec, its fixture and, while a vote is held,
its place in the confirmation queue.

`TestResult` is what a worker (or a serial run) produced for one measured test: its
record, its verdicts and the outcome of the test's own assertions. It travels as plain
data (`to_wire`/`from_wire`) attached to pytest's test report, so the controller gets
each test's result as soon as the test ends: a worker killed later loses nothing it
already reported.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from pytest_efficientllm.confirmation.queue import ConfirmQueue, Held
from pytest_efficientllm.core.record import Record
from pytest_efficientllm.glue.fixture import Efficiency
from pytest_efficientllm.glue.marker import MarkerSpec
from pytest_efficientllm.glue.options import Settings
from pytest_efficientllm.judging.gate import GateOptions
from pytest_efficientllm.judging.run_shift import RunChanges
from pytest_efficientllm.judging.verdicts import Verdict
from pytest_efficientllm.measuring.calibration import Calibrator
from pytest_efficientllm.measuring.session import EfficiencySession
from pytest_efficientllm.storage.baselines import FileUpdate
from pytest_efficientllm.storage.cpu_folders import BaselineFolders

WIRE_VERSION = 1

RUN_KEY = pytest.StashKey["RunState"]()
# Why --efficiency-fixed-layout could not fix the layout, known before the state exists.
LAYOUT_PROBLEM_KEY = pytest.StashKey[str]()
SPEC_KEY = pytest.StashKey[MarkerSpec]()
FIXTURE_KEY = pytest.StashKey[Efficiency]()
HELD_KEY = pytest.StashKey[Held]()


@dataclass
class TestResult:
    record: Record
    verdicts: list[Verdict]
    # "passed" / "failed" / "skipped": the test's own assertions, before the gate; "error"
    # when it passed but its teardown failed.
    functional: str

    __test__ = False  # not a pytest test class, despite the name

    @property
    def gate_failed(self) -> bool:
        return any(v.failed for v in self.verdicts)

    def to_wire(self) -> dict[str, Any]:
        return {
            "version": WIRE_VERSION,
            "record": self.record.to_dict(),
            "verdicts": [v.to_dict() for v in self.verdicts],
            "functional": self.functional,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> TestResult:
        if data.get("version") != WIRE_VERSION:
            raise ValueError(
                f"efficiency result from a worker with wire version {data.get('version')!r}, "
                f"expected {WIRE_VERSION}: mixed plugin versions between controller and workers"
            )
        return cls(
            Record.from_dict(data["record"]), [Verdict.from_dict(v) for v in data["verdicts"]], str(data["functional"])
        )


@dataclass
class RunState:
    """What the plugin keeps during one run, on whichever side of the xdist wire this process is."""

    settings: Settings
    # Builds the measuring session (profile, telemetry backend, fingerprint, threads): it imports
    # torch and opens NVML, so a run that measures nothing never calls it (`session`).
    open_session: Callable[[RunState], EfficiencySession]
    calibrator: Calibrator | None
    is_worker: bool = False
    layout: dict[str, Any] = field(default_factory=dict)  # this process's layout as it started (process_layout)
    device: str | None = None  # what this process's CUDA_VISIBLE_DEVICES was pinned to
    locked_device: str | None = None  # the GPU whose lock measured tests take (another worker may use it)
    confirm_queue: ConfirmQueue | None = None  # tests held for a vote; None where nothing is confirmed
    run_changes: RunChanges = field(default_factory=RunChanges)  # every change this process's tests read
    # Votes that confirmed a failure during the run, released after its last test (confirmation.hooks).
    awaiting_run: list[Held] = field(default_factory=list)
    started: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    workers_layout: str = ""  # why xdist workers could not be padded ("" when they were)
    # False in a torchrun rank other than 0 (set by distributed.hooks): it measures, and rank 0
    # alone compares, writes baselines and the run file, and reports.
    reporting: bool = True
    # Controller (or serial) side only:
    results: list[TestResult] = field(default_factory=list)
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    lost_workers: list[str] = field(default_factory=list)
    # Tests whose start was logged and whose last report has not come (yet): at the end, the
    # tests a worker that went down was running or holding for confirmation.
    unreported: dict[str, None] = field(default_factory=dict)
    updates: list[FileUpdate] = field(default_factory=list)
    json_written: str = ""
    problems: list[str] = field(default_factory=list)
    _session: EfficiencySession | None = field(default=None, repr=False)
    _store: BaselineFolders | None = field(default=None, repr=False)

    def open(self) -> EfficiencySession:
        """The measuring session, opened now if it is not yet (imports torch, opens NVML)."""
        if self._session is None:
            self._session = self.open_session(self)
        return self._session

    @property
    def session(self) -> EfficiencySession:
        """The measuring session, opened at its first use."""
        return self.open()

    @session.setter
    def session(self, session: EfficiencySession) -> None:
        self._session = session

    @property
    def session_opened(self) -> bool:
        return self._session is not None

    @property
    def store(self) -> BaselineFolders:
        """The baselines of this run's profile and CPU (which opens the session: they key them)."""
        if self._store is None:
            self._store = BaselineFolders(self.settings.baselines_dir, self.session.profile, self.session.fingerprint)
        return self._store

    @property
    def options(self) -> GateOptions:
        return self.settings.gate

    @property
    def records(self) -> list[Record]:
        """The records of the run's measured tests, in the order their results came back."""
        return [r.record for r in self.results]

    def run_info(self) -> dict[str, Any]:
        """What a run file says about this run, beside its records."""
        return {
            "profile": self.session.profile,
            "fingerprint": self.session.fingerprint,
            "started": self.started,
            "label": f"pytest run {self.started}",
            "gate": self.options.mode,
            "workers": self.workers,
        }

    @property
    def confirm_processes(self) -> int:
        """Fresh processes that may confirm a measured regression in this run (0: no vote)."""
        return self.settings.confirm_processes if self.confirm_queue is not None else 0

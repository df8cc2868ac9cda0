"""Per-run gate state, and the one result of a test that crosses the xdist wire.

`TestResult` is what a worker (or a serial run) produced for one measured test: its
record, its verdicts and the outcome of the test's own assertions. It travels as plain
data (`to_wire`/`from_wire`) attached to pytest's test report, so the controller gets
each test's result as soon as the test ends: a worker killed later loses nothing it
already reported.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_efficientllm.confirmation.queue import ConfirmQueue, Held
from pytest_efficientllm.core.record import Record
from pytest_efficientllm.glue.fixture import Efficiency
from pytest_efficientllm.glue.marker import MarkerSpec
from pytest_efficientllm.judging.gate import GateOptions
from pytest_efficientllm.judging.verdicts import Verdict
from pytest_efficientllm.measuring.calibration import Calibrator
from pytest_efficientllm.measuring.session import EfficiencySession
from pytest_efficientllm.storage.baselines import BaselineStore, FileUpdate

WIRE_VERSION = 1

# Where each process keeps its state: on the config (session, gate), on each item (spec, fixture, held).
SESSION_KEY = pytest.StashKey[EfficiencySession]()
SPEC_KEY = pytest.StashKey[MarkerSpec]()
FIXTURE_KEY = pytest.StashKey[Efficiency]()
GATE_KEY = pytest.StashKey["GateState"]()
LAYOUT_PROBLEM_KEY = pytest.StashKey[str]()
WORKERS_LAYOUT_KEY = pytest.StashKey[str]()  # why xdist workers could not be padded ("" when they were)
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
        return {"version": WIRE_VERSION, "record": self.record.to_dict(),
                "verdicts": [v.to_dict() for v in self.verdicts], "functional": self.functional}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> TestResult:
        if data.get("version") != WIRE_VERSION:
            raise ValueError(f"efficiency result from a worker with wire version {data.get('version')!r}, "
                             f"expected {WIRE_VERSION}: mixed plugin versions between controller and workers")
        return cls(Record.from_dict(data["record"]), [Verdict.from_dict(v) for v in data["verdicts"]],
                   str(data["functional"]))


@dataclass
class GateState:
    """What the gate needs during one run, on whichever side of the wire this process is."""

    options: GateOptions
    store: BaselineStore
    calibrator: Calibrator | None
    json_path: Path | None = None
    is_worker: bool = False
    devices: tuple[str, ...] = ()
    device: str | None = None  # what this process's CUDA_VISIBLE_DEVICES was pinned to
    locked_device: str | None = None  # the GPU whose lock measured tests take (another worker may use it)
    confirm_processes: int = 0  # fresh processes that confirm a measured regression (`confirm`)
    confirm_queue: ConfirmQueue | None = None  # tests held for them; None where nothing is confirmed
    started: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
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

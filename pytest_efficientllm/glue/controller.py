"""The controller side of the xdist wire (also a serial run's only process), as xdist's `DSession`.

`ControllerPlugin` receives each measured test's result from its report, learns about
workers from `workeroutput` when they finish (or that they died, from
`pytest_testnodedown`), and at the end of the session alone writes the baselines and the
`--efficiency-json` run file.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_efficientllm.glue.state import RunState, TestResult
from pytest_efficientllm.glue.worker import REPORT_ATTR, WORKEROUTPUT_KEY
from pytest_efficientllm.measuring import process_layout
from pytest_efficientllm.storage.runfile import Run, RunFileError, write_run


def receive(state: RunState, report: Any) -> TestResult | None:
    """The result a worker attached to a test report; None for reports without one."""
    if getattr(report, "when", None) == "teardown" and getattr(report, "failed", False):
        _teardown_failed(state, str(report.nodeid))
        return None
    data = getattr(report, REPORT_ATTR, None)
    if data is None or getattr(report, "when", None) != "call":
        return None
    try:
        result = TestResult.from_wire(data)
    except (ValueError, KeyError, TypeError) as exc:
        state.problems.append(f"{getattr(report, 'nodeid', '?')}: unreadable efficiency result ({exc})")
        return None
    state.results.append(result)
    return result


def _teardown_failed(state: RunState, nodeid: str) -> None:
    # A test whose fixture teardown failed errored (pytest counts it so): its record stays in
    # the run file, but it did not pass and must not become a baseline.
    for result in state.results:
        if result.record.nodeid == nodeid and result.functional == "passed":
            result.functional = "error"


def node_down(state: RunState, node: Any, error: object | None) -> None:
    """A worker finished (its summary is in workeroutput) or died (error set, no summary)."""
    workerid = str(getattr(node, "gateway", None) and node.gateway.id or "?")
    output = getattr(node, "workeroutput", None) or {}
    if WORKEROUTPUT_KEY in output:
        state.workers[workerid] = output[WORKEROUTPUT_KEY]
    if error:
        state.lost_workers.append(
            f"{workerid} ({str(error).strip().splitlines()[-1] if str(error).strip() else 'died'})"
        )


def update_baselines(state: RunState) -> None:
    """Write every test that ran and passed its own assertions; the gate verdicts do not matter."""
    ran = [r.record for r in state.results if r.functional == "passed"]
    if ran:
        state.updates = state.store.update(ran)


# What the section says where a run recorded no measurement and so wrote no run file.
NOTHING_RECORDED = "efficiency json not written: no test recorded a measurement"


def write_json(state: RunState) -> None:
    """Every record of the run (raw rounds and its verdicts included) to `--efficiency-json`.
    A run that recorded no measurement (its tests measure nothing, or a `-k` matched none)
    writes none, as the report: an empty file in its place would lose the last run's, and
    the run's fingerprint alone would open the measuring session (torch) for nothing."""
    path = state.settings.json_path
    if path is None:
        return
    if not state.results:
        kept = f"; {path} is left as it was" if path.exists() else ""
        state.json_written = NOTHING_RECORDED + kept
        return
    try:
        write_run(path, Run(records=state.records, runs=[state.run_info()]))
    except (RunFileError, OSError) as exc:
        state.problems.append(f"--efficiency-json: not written: {exc}")
        return
    state.json_written = f"efficiency json: {path} ({len(state.results)} record(s))"


def finish(state: RunState) -> bool:
    """End-of-session writes; True when something the user asked for could not be written."""
    # The run file first: it is the run's evidence whatever becomes of the baselines, and
    # an update that fails (or raises) must not take it down with it.
    write_json(state)
    if state.options.update:
        update_baselines(state)
    return bool(state.problems) or any(u.error for u in state.updates)


class ControllerPlugin:
    """The plugin's hooks in the process that collects results and writes files."""

    def __init__(self, state: RunState) -> None:
        self.state = state

    def pytest_runtest_logstart(self, nodeid: str, location: Any) -> None:
        self.state.unreported[nodeid] = None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when in ("teardown", "???"):  # a test's last report; "???": xdist's for a crashed worker's test
            self.state.unreported.pop(report.nodeid, None)
        receive(self.state, report)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object | None) -> None:
        node_down(self.state, node, error)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        state = self.state
        self._note_workers_layout()
        if not state.reporting:
            return  # under torchrun every rank runs the session; rank 0 alone writes baselines and JSON
        if finish(state) and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED  # asked-for baselines or JSON are missing

    def _note_workers_layout(self) -> None:
        """The summary's layout line names the controller's layout; where workers measured under
        another one, it says so (and why, where known)."""
        if not self.state.workers:
            return  # no worker measured anything
        eff = self.state.session
        note = process_layout.workers_note(
            eff.fingerprint["process_layout"],
            {wid: w.get("process_layout") or {} for wid, w in self.state.workers.items()},
        )
        why = self.state.workers_layout
        if note:
            note += f" ({why})" if why else ""
            eff.layout_problem = "; ".join(p for p in (eff.layout_problem, note) if p)

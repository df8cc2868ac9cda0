"""The controller side of the xdist wire (also a serial run's only process).

Receives each measured test's result from its report, learns about workers from
`workeroutput` when they finish (or that they died, from `pytest_testnodedown`), and at
the end of the session alone writes the baselines and the `--efficiency-json` run file.
"""

from __future__ import annotations

from typing import Any

from pytest_efficientllm.glue.state import GateState, TestResult
from pytest_efficientllm.glue.worker import REPORT_ATTR, WORKEROUTPUT_KEY
from pytest_efficientllm.storage.runfile import Run, RunFileError, write_run


def receive(state: GateState, report: Any) -> TestResult | None:
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


def _teardown_failed(state: GateState, nodeid: str) -> None:
    # A test whose fixture teardown failed errored (pytest counts it so): its record stays in
    # the run file, but it did not pass and must not become a baseline.
    for result in state.results:
        if result.record.nodeid == nodeid and result.functional == "passed":
            result.functional = "error"


def node_down(state: GateState, node: Any, error: object | None) -> None:
    """A worker finished (its summary is in workeroutput) or died (error set, no summary)."""
    workerid = str(getattr(node, "gateway", None) and node.gateway.id or "?")
    output = getattr(node, "workeroutput", None) or {}
    if WORKEROUTPUT_KEY in output:
        state.workers[workerid] = output[WORKEROUTPUT_KEY]
    if error:
        state.lost_workers.append(f"{workerid} ({str(error).strip().splitlines()[-1] if str(error).strip() else 'died'})")


def update_baselines(state: GateState) -> None:
    """Write every test that ran and passed its own assertions; the gate verdicts do not matter."""
    ran = [r.record for r in state.results if r.functional == "passed"]
    if ran:
        state.updates = state.store.update(ran)


def write_json(state: GateState, profile: str, fingerprint: dict[str, Any]) -> None:
    """Every record of the run (raw rounds and its verdicts included) to `--efficiency-json`."""
    if state.json_path is None:
        return
    run_info = {
        "profile": profile,
        "fingerprint": fingerprint,
        "started": state.started,
        "label": f"pytest run {state.started}",
        "gate": state.options.mode,
        "workers": state.workers,
    }
    try:
        write_run(state.json_path, Run(records=[r.record for r in state.results], runs=[run_info]))
    except (RunFileError, OSError) as exc:
        state.problems.append(f"--efficiency-json: not written: {exc}")
        return
    state.json_written = f"efficiency json: {state.json_path} ({len(state.results)} record(s))"


def finish(state: GateState, profile: str, fingerprint: dict[str, Any]) -> bool:
    """End-of-session writes; True when something the user asked for could not be written."""
    # The run file first: it is the run's evidence whatever becomes of the baselines, and
    # an update that fails (or raises) must not take it down with it.
    write_json(state, profile, fingerprint)
    if state.options.update:
        update_baselines(state)
    return bool(state.problems) or any(u.error for u in state.updates)

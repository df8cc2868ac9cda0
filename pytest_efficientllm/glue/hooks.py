"""pytest glue: options, the `efficiency` fixture and marker, verdicts in reports, the summary.

Hooks stay thin: they parse options into `session.Options` and `gate.GateOptions`, hand
work to plain modules (`marker`, `fixture`, `gate`, `baseline_store`, `summary`) and
attach the results to pytest's reports. Which side of the xdist wire a hook serves is
said by the module it delegates to: `xdist_worker` (a worker, or a serial run) and
`xdist_controller` (the controller, or a serial run).
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _pytest.runner import runtestprotocol  # pytest's protocol without its logging (as pytest-rerunfailures)

from pytest_efficientllm.confirmation import vote as confirm

from pytest_efficientllm.measuring import process_layout as layout

from pytest_efficientllm.glue import controller as xdist_controller

from pytest_efficientllm.glue import worker as xdist_worker
from pytest_efficientllm.storage.baselines import BaselineError, BaselineStore
from pytest_efficientllm.measuring.calibration import Calibrator
from pytest_efficientllm.confirmation.queue import ConfirmQueue, Held
from pytest_efficientllm.core.devices import PROFILES, ProfileError, usable_cores
from pytest_efficientllm.glue.fixture import Efficiency
from pytest_efficientllm.judging.gate import GateOptions, add_derived, effective_limits, judge, parse_limit_assignments
from pytest_efficientllm.glue.state import GateState, TestResult
from pytest_efficientllm.distributed import is_reporting_rank
from pytest_efficientllm.judging.leak import find_leak
from pytest_efficientllm.glue.marker import PROTOCOL_ARGS, Limit, MarkerError, MarkerSpec, parse_marker
from pytest_efficientllm.measuring.meter import Protocol
from pytest_efficientllm.core.record import Record
from pytest_efficientllm.judging.run_noise import RunPrior
from pytest_efficientllm.measuring.session import EfficiencySession, Options
from pytest_efficientllm.core.units import UnitError, parse_seconds
from pytest_efficientllm.judging.verdicts import Verdict

SESSION_KEY = pytest.StashKey[EfficiencySession]()
SPEC_KEY = pytest.StashKey[MarkerSpec]()
FIXTURE_KEY = pytest.StashKey[Efficiency]()
GATE_KEY = pytest.StashKey[GateState]()
LAYOUT_PROBLEM_KEY = pytest.StashKey[str]()
WORKERS_LAYOUT_KEY = pytest.StashKey[str]()  # why xdist workers could not be padded ("" when they were)
HELD_KEY = pytest.StashKey[Held]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("efficiency", "efficiency measurement (pytest-efficientllm)")
    group.addoption("--gpu", dest="efficiency_gpu", default=None, metavar="PROFILE",
                    help=f"hardware profile: {'|'.join(PROFILES)} (default: ini efficiency_gpu, else auto)")
    group.addoption("--efficiency-rounds", type=int, default=None, metavar="N", help="default measured rounds per test")
    group.addoption("--efficiency-warmup", type=int, default=None, metavar="N", help="default warm-up rounds per test")
    group.addoption("--efficiency-min-time", default=None, metavar="DURATION",
                    help="default minimum measured time per test, e.g. '0.5 s'")
    group.addoption("--efficiency-threads", type=int, default=None, metavar="N",
                    help="torch threads for measured tests (default: usable cores / xdist workers)")
    parser.addini("efficiency_gpu", "default --gpu profile", default="auto")
    parser.addini("efficiency_rounds", "default measured rounds per test", default="5")
    parser.addini("efficiency_warmup", "default warm-up rounds per test", default="1")
    parser.addini("efficiency_min_time", "default minimum measured time per test", default="0 s")
    parser.addini("efficiency_threads", "torch threads for measured tests", default="")
    # Baselines and gating (docs/gate.md).
    group.addoption("--update-baselines", dest="efficiency_update_baselines", action="store_true", default=False,
                    help="write the baselines of the tests that ran and passed their own assertions")
    group.addoption("--baselines-dir", dest="efficiency_baselines_dir", default=None, metavar="DIR",
                    help="baselines folder (default: ini efficiency_baselines_dir, else baselines/ at the rootdir)")
    group.addoption("--efficiency-gate", dest="efficiency_gate", default=None, choices=("fail", "warn", "off"),
                    help="what a broken budget or a regression does: fail (default), warn, off")
    group.addoption("--efficiency-strict", dest="efficiency_strict", action="store_true", default=None,
                    help="a measured test without a baseline fails instead of being reported as new")
    group.addoption("--efficiency-json", dest="efficiency_json", default=None, metavar="PATH",
                    help="write every record of the run (raw rounds included) and its verdicts to PATH")
    group.addoption("--efficiency-limit", dest="efficiency_limit", action="append", default=[], metavar="METRIC=LIMIT",
                    help="budget or tolerance for every test of this run, over the markers' "
                         "(e.g. latency=+10%% or 'peak_memory=<= 2 GiB'); repeatable")
    group.addoption("--efficiency-devices", dest="efficiency_devices", default=None, metavar="0,1,...",
                    help="pin xdist worker i to GPU i (mod the count) through CUDA_VISIBLE_DEVICES")
    group.addoption("--efficiency-calibrate-every", dest="efficiency_calibrate_every", default=None, metavar="DURATION",
                    help="re-measure the calibration workload when the run is longer than this; 'off' never "
                         "calibrates (default: ini, 10 min)")
    group.addoption("--efficiency-fixed-layout", dest="efficiency_fixed_layout", action="store_true", default=None,
                    help="re-execute pytest once with ASLR off and PYTHONHASHSEED=0, so runs differ only in what "
                         "they measure (Linux; default: ini efficiency_fixed_layout)")
    group.addoption("--efficiency-confirm", dest="efficiency_confirm", type=int, default=None, metavar="N",
                    help="before a measured metric fails a test, measure the test again in N fresh processes "
                         "and fail only if every one finds it (0: never; default: ini efficiency_confirm, 2)")
    parser.addini("efficiency_confirm", "fresh processes that confirm a measured regression before it fails a test",
                  default=str(confirm.DEFAULT_PROCESSES))
    group.addoption("--efficiency-confirm-spacing", dest="efficiency_confirm_spacing", default=None,
                    metavar="DURATION", help="start each confirming process at least this long after the test's "
                    "previous measurement; the run goes on meanwhile (default: ini, 20 s)")
    parser.addini("efficiency_confirm_spacing", "least time between a test's measurement and the next process that "
                  "confirms it", default=f"{confirm.DEFAULT_SPACING_S:g} s")
    parser.addini("efficiency_fixed_layout", "run with ASLR off and PYTHONHASHSEED=0 (re-executes pytest once)",
                  type="bool", default=False)
    parser.addini("efficiency_baselines_dir", "baselines folder, relative to the rootdir", default="baselines")
    parser.addini("efficiency_gate", "gate mode: fail|warn|off", default="fail")
    parser.addini("efficiency_strict", "a measured test without a baseline fails", type="bool", default=False)
    parser.addini("efficiency_limits", "budgets/tolerances for every test, METRIC=LIMIT per line (markers override)",
                  type="linelist", default=[])
    parser.addini("efficiency_devices", "GPUs to pin xdist workers to, e.g. 0,1", default="")
    parser.addini("efficiency_calibrate_every", "calibration interval, or off", default="10 min")


def _setting(config: pytest.Config, name: str) -> Any:
    value = config.getoption(f"efficiency_{name}", default=None)
    return value if value is not None else config.getini(f"efficiency_{name}")


def options_from_config(config: pytest.Config) -> Options:
    """Merge CLI over ini; errors name the option to fix."""
    try:
        rounds = int(_setting(config, "rounds"))
        warmup = int(_setting(config, "warmup"))
        min_time = parse_seconds(_setting(config, "min_time"))
        threads_raw = _setting(config, "threads")
        threads = int(threads_raw) if threads_raw not in ("", None) else None
    except (ValueError, UnitError) as exc:
        raise pytest.UsageError(f"efficiency options: {exc}") from None
    if rounds < 1 or warmup < 0 or min_time < 0 or (threads is not None and threads < 1):
        raise pytest.UsageError("efficiency options: rounds >= 1, warmup >= 0, min-time >= 0 and threads >= 1 are required")
    return Options(gpu=str(_setting(config, "gpu")), defaults=Protocol(rounds, warmup, min_time), threads=threads)


def gate_state_from_config(config: pytest.Config, profile: str) -> GateState:
    """The gate's settings, CLI over ini; errors name the option to fix."""
    try:
        options = GateOptions(
            mode=str(_setting(config, "gate")),
            strict=bool(_setting(config, "strict")),
            update=bool(config.getoption("efficiency_update_baselines", False)),
            ini_limits=parse_limit_assignments(config.getini("efficiency_limits"), "ini efficiency_limits"),
            cli_limits=parse_limit_assignments(config.getoption("efficiency_limit", []) or [], "--efficiency-limit"),
        )
        confirm_processes = int(_setting(config, "confirm"))
        if confirm_processes < 0:
            raise ValueError(f"--efficiency-confirm={confirm_processes}: expected 0 or more processes")
        spacing_raw = str(_setting(config, "confirm_spacing"))
        spacing = parse_seconds(spacing_raw)
        if spacing < 0:
            raise ValueError(f"--efficiency-confirm-spacing={spacing_raw}: expected a duration of 0 s or more")
        every_raw = str(_setting(config, "calibrate_every")).strip()
        every = None if every_raw.lower() == "off" else parse_seconds(every_raw)
        devices = xdist_worker.parse_devices(str(_setting(config, "devices") or ""))
    except (ValueError, UnitError) as exc:
        raise pytest.UsageError(f"efficiency options: {exc}") from None
    cli_dir = config.getoption("efficiency_baselines_dir", default=None)
    # A path on the command line is relative to where pytest was started; one in the ini to the rootdir.
    root = (config.invocation_params.dir / cli_dir) if cli_dir else (config.rootpath / config.getini("efficiency_baselines_dir"))
    json_raw = config.getoption("efficiency_json", default=None)
    json_path = (config.invocation_params.dir / json_raw) if json_raw else None
    if json_path is not None and not json_path.parent.is_dir():
        raise pytest.UsageError(f"--efficiency-json={json_raw}: folder {json_path.parent} does not exist")
    calibrator = None if every_raw.lower() == "off" else Calibrator(every if every and every > 0 else None)
    if os.environ.get(confirm.CONFIRM_ENV):
        confirm_processes = 0  # this is a confirmation process: it measures, the one that started it judges
    confirming = confirm_processes > 0 and options.mode == "fail" and not options.update
    return GateState(options, BaselineStore(Path(root), profile), calibrator, json_path,
                     is_worker=xdist_worker.worker_id(config) is not None, devices=devices,
                     confirm_processes=confirm_processes,
                     confirm_queue=ConfirmQueue(spacing) if confirming else None)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    # A fixed layout needs a fresh interpreter (layout.py), so this process replaces itself,
    # as early as options are known: before conftests import torch (the plugin itself does
    # not), so the first process costs ~0.7 s.
    # Only for the process's own command line (not an in-process pytest.main, e.g.
    # pytester's) and never in an xdist worker (execnet talks to it over its pipes).
    config = early_config
    wanted = config.known_args_namespace.efficiency_fixed_layout
    if wanted is None:
        wanted = config.getini("efficiency_fixed_layout")
    if not wanted or hasattr(config, "workerinput"):
        return
    if layout.is_fixed(layout.current_layout()):
        return
    if sys.argv[:1] == ["-c"]:
        # `python -c ...`: how execnet starts an xdist worker (its controller already fixed
        # the layout it inherits; `workerinput` is not set yet at this hook).
        config.stash[LAYOUT_PROBLEM_KEY] = "not re-executed: started by `python -c` (an xdist worker inherits its layout)"
        return
    if tuple(config.invocation_params.args) != tuple(sys.argv[1:]):
        config.stash[LAYOUT_PROBLEM_KEY] = "not re-executed: pytest was started in-process, not from its command line"
        return
    # pytest already captures fds 1 and 2 here; the new process must write to the real ones.
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.stop_global_capturing()
    config.stash[LAYOUT_PROBLEM_KEY] = layout.reexec_fixed(list(sys.orig_argv))
    if capture is not None:  # not re-executed: carry on as pytest would have
        capture.start_global_capturing()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "efficiency(" + ", ".join(f"{a}=" for a in PROTOCOL_ARGS) + ", **budgets): measure this test's workload "
        "with the `efficiency` fixture; budgets like latency='<= 50 ms' or tolerances like latency='+5%'",
    )
    # Before anything can initialise CUDA: the device this worker may see.
    try:
        devices = xdist_worker.parse_devices(str(_setting(config, "devices") or ""))
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    device, shared = xdist_worker.pin_device(devices, xdist_worker.worker_id(config), xdist_worker.worker_count(config))
    try:
        eff = config.stash[SESSION_KEY] = EfficiencySession(options_from_config(config))
    except ProfileError as exc:
        raise pytest.UsageError(str(exc)) from None
    eff.layout_problem = config.stash.get(LAYOUT_PROBLEM_KEY, "")
    state = config.stash[GATE_KEY] = gate_state_from_config(config, eff.profile)
    # A test measured on the CPU (`--gpu=cpu`) takes no GPU lock; one measured on a GPU does,
    # wherever another worker may measure on that GPU (pinned or not).
    state.device = device
    if eff.profile != "cpu":
        state.locked_device = xdist_worker.lock_device(device, shared, xdist_worker.worker_count(config))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_setupnodes(config: pytest.Config, specs: list[Any]) -> None:
    # The controller, before execnet starts the workers: under a fixed layout, they start
    # with the stack a serial run has (layout.pad_for_xdist_workers).
    eff = config.stash.get(SESSION_KEY, None)
    if eff is not None and layout.is_fixed(eff.fingerprint["process_layout"]):
        config.stash[WORKERS_LAYOUT_KEY] = layout.pad_for_xdist_workers(specs)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    eff = config.stash[SESSION_KEY]
    problems = []
    for item in items:
        marker = item.get_closest_marker("efficiency")
        try:
            kwargs = dict(marker.kwargs) if marker else {}
            args = tuple(marker.args) if marker else ()
            item.stash[SPEC_KEY] = parse_marker(kwargs, args, eff.options.defaults)
        except MarkerError as exc:
            problems.append(f"{item.nodeid}: efficiency marker: {exc}")
    if problems:
        raise pytest.UsageError("\n".join(problems))


@pytest.fixture
def efficiency(request: pytest.FixtureRequest) -> Efficiency:
    """Measure this test's workload: `efficiency.measure(fn, tokens=...)` and friends."""
    eff = request.config.stash[SESSION_KEY]
    state = request.config.stash[GATE_KEY]
    if state.calibrator is not None:
        # Lazily at the first measured test (a run without one pays nothing), then again
        # whenever the last calibration is older than the interval.
        eff.fingerprint["calibration"] = state.calibrator.ensure().to_dict()
    if state.locked_device is not None:
        lock = xdist_worker.device_lock(state.locked_device)
        lock.acquire()
        request.addfinalizer(lock.release)
    spec = request.node.stash.get(SPEC_KEY, None) or parse_marker({}, (), eff.options.defaults)
    fixture = Efficiency(eff, request.node.nodeid, spec)
    request.node.stash[FIXTURE_KEY] = fixture
    return fixture


def _failure_text(failed: list[Verdict]) -> str:
    budgets = [v for v in failed if v.kind == "budget"]
    others = [v for v in failed if v.kind != "budget"]
    parts = []
    if budgets:
        parts.append("efficiency budget exceeded:\n" + "\n".join("  " + v.render() for v in budgets))
    if others:
        parts.append("efficiency gate (against the baseline):\n" + "\n".join("  " + v.render() for v in others))
    return "\n".join(parts)


def _baseline_of(state: GateState, nodeid: str) -> tuple[Record | None, dict[str, RunPrior], str]:
    """The test's baseline, the run-to-run spread its file shares, and why there is none."""
    try:
        return state.store.lookup(nodeid), state.store.run_priors(nodeid), ""
    except BaselineError as exc:
        return None, {}, str(exc)


def pytest_collection_finish(session: pytest.Session) -> None:
    # What exists after collection (modules, models built at import) lives for the run;
    # freezing it (after a collection, so no garbage is frozen with it) keeps Python's own
    # full collections short when one lands inside a measured round (the Meter collects
    # only the young generations before a window).
    gc.collect()
    gc.freeze()


def _child_settings(config: pytest.Config, call_s: float) -> confirm.ChildSettings:
    eff = config.stash[SESSION_KEY]
    args = list(config.invocation_params.args)
    plugins = tuple(args[i + 1] if arg == "-p" else arg[2:] for i, arg in enumerate(args)
                    if (arg == "-p" and i + 1 < len(args)) or (arg.startswith("-p") and len(arg) > 2))
    current = eff.fingerprint["process_layout"]  # read once at start-up; it cannot change in a process
    defaults = eff.options.defaults
    return confirm.ChildSettings(
        rootdir=config.rootpath, inifile=config.inipath, profile=eff.profile, threads=eff.threads,
        rounds=defaults.rounds, warmup=defaults.warmup, min_time_s=defaults.min_time_s, plugins=plugins,
        fixed_layout=current["aslr"] is False and current["hash_seed"] != "random",
        xdist=config.pluginmanager.hasplugin("xdist"),
        # A fresh process pays start-up and collection on top of the test itself.
        timeout_s=max(120.0, 20 * call_s))


def _voting_processes(state: GateState, record: Record, error: str) -> int:
    """How many processes must all find a measured regression of `record` before it fails."""
    if state.confirm_queue is None or error or record.world_size != 1:
        return 1  # no vote: under torchrun the ranks are one measurement, and a fresh process is not
    return 1 + state.confirm_processes


@dataclass
class _HeldTest:
    """What a test held for confirmation still needs when its vote is decided."""

    item: pytest.Item
    record: Record
    call_report: pytest.TestReport
    functional: str
    extra: list[Verdict]  # findings that are not put to the vote (a leak)
    reports: list[pytest.TestReport] = field(default_factory=list)  # setup, call, teardown: logged on release


def _hold(test: _HeldTest, verdicts: list[Verdict], suspects: list[str], limits: tuple[Limit, ...],
          baseline: Record | None, priors: dict[str, RunPrior], processes: int, call_s: float) -> None:
    """Hold the test's reports until fresh processes, spaced apart in time, have voted (`confirm_queue`)."""
    state = test.item.config.stash[GATE_KEY]
    settings = _child_settings(test.item.config, call_s)
    nodeid = test.record.nodeid

    def judge_record(other: Record) -> list[Verdict]:
        add_derived(other)
        return judge(other, limits, baseline, "", state.options, priors, processes)

    def measure_again() -> Record | str:
        # Never two measurements on one GPU at once: the fresh process measures under this worker's lock.
        locked = state.locked_device
        with xdist_worker.device_lock(locked) if locked is not None else contextlib.nullcontext():
            return confirm.measure_in_child(nodeid, settings)

    vote = confirm.Vote(verdicts, suspects, state.confirm_processes)
    test.item.stash[HELD_KEY] = state.confirm_queue.hold(vote, measure_again, judge_record, test)  # type: ignore[union-attr]


def _settle(report: pytest.TestReport, record: Record, verdicts: list[Verdict], functional: str) -> None:
    """Apply the gate's verdicts to the test's call report and attach its result for the controller."""
    failed = [v for v in verdicts if v.failed]
    if failed:
        report.outcome = "failed"
        report.longrepr = _failure_text(failed)
    notes = [v.render() for v in verdicts if v.status in ("warn", "improved")]
    if notes:
        report.sections.append(("efficiency", "\n".join(notes)))
    record.outcome = report.outcome
    record.verdicts = [v.to_dict() for v in verdicts]
    xdist_worker.attach(report, TestResult(record, verdicts, functional))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    fixture = item.stash.get(FIXTURE_KEY, None)
    if call.when != "call" or fixture is None or not fixture.record.metrics:
        return report
    record = fixture.record
    state = item.config.stash[GATE_KEY]
    functional = report.outcome
    verdicts: list[Verdict] = []
    add_derived(record)
    if report.passed:
        baseline, priors, error = _baseline_of(state, record.nodeid)
        limits = effective_limits(fixture.spec.limits, state.options, record.metrics)
        processes = _voting_processes(state, record, error)
        verdicts = judge(record, limits, baseline, error, state.options, priors, processes)
        leak = find_leak(record)
        extra = [leak.as_verdict()] if leak is not None else []
        suspects = confirm.suspects(record, verdicts) if processes > 1 else []
        if suspects:
            _hold(_HeldTest(item, record, report, functional, extra), verdicts, suspects, limits, baseline, priors,
                  processes, call.duration)
            return report
        verdicts += extra
    _settle(report, record, verdicts, functional)
    return report


def _log(item: pytest.Item, reports: list[pytest.TestReport]) -> None:
    for report in reports:
        item.ihook.pytest_runtest_logreport(report=report)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)


def _release(held: Held) -> None:
    """A held test whose vote is decided (or abandoned): its final verdicts, then its reports logged."""
    test: _HeldTest = held.payload
    vote = held.vote
    test.record.confirmations = list(vote.records)
    test.record.settings["confirmation_s"] = round(vote.seconds, 3)
    test.record.settings["confirmation_spacing_s"] = test.item.config.stash[GATE_KEY].confirm_queue.spacing_s
    _settle(test.call_report, test.record, vote.final_verdicts() + test.extra, test.functional)
    with xdist_worker.logging_late(test.item):
        _log(test.item, test.reports)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    # pytest's own protocol, except that a test held for confirmation logs its reports when
    # its vote is decided, and that between tests the fresh processes that are due run.
    queue = item.config.stash[GATE_KEY].confirm_queue
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
    queue = session.config.stash[GATE_KEY].confirm_queue
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


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object | None) -> None:
    state = node.config.stash.get(GATE_KEY, None)
    if state is not None:
        xdist_controller.node_down(state, node, error)


def pytest_sessionstart(session: pytest.Session) -> None:
    # Keep a handle for `pytest_runtest_logreport`, which receives no config.
    session.config.pluginmanager.register(_ReportReceiver(session.config), "efficiency-receiver")


class _ReportReceiver:
    """Collects the results attached to reports, in the process that prints the summary."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logstart(self, nodeid: str, location: Any) -> None:
        state = self.config.stash[GATE_KEY]
        if not state.is_worker:
            state.unreported[nodeid] = None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        state = self.config.stash[GATE_KEY]
        if state.is_worker:
            return  # forwarded to the controller with the attached result; it collects there
        if report.when in ("teardown", "???"):  # a test's last report; "???": xdist's for a crashed worker's test
            state.unreported.pop(report.nodeid, None)
        result = xdist_controller.receive(state, report)
        if result is not None:
            self.config.stash[SESSION_KEY].records.append(result.record)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    state = config.stash.get(GATE_KEY, None)
    eff = config.stash.get(SESSION_KEY, None)
    if state is None or eff is None:
        return
    if state.is_worker:
        config.workeroutput[xdist_worker.WORKEROUTPUT_KEY] = xdist_worker.worker_summary(  # type: ignore[attr-defined]
            state, eff.threads, usable_cores(), eff.fingerprint["process_layout"])
        return
    _note_workers_layout(config, eff, state)
    if not is_reporting_rank():
        return  # under torchrun every rank runs the session; rank 0 alone writes baselines and JSON
    if xdist_controller.finish(state, eff.profile, eff.fingerprint) and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED  # asked-for baselines or JSON are missing


def _note_workers_layout(config: pytest.Config, eff: EfficiencySession, state: GateState) -> None:
    """The summary's layout line names the controller's layout; where workers measured under
    another one, it says so (and why, where known)."""
    note = layout.workers_note(eff.fingerprint["process_layout"],
                               {wid: w.get("process_layout") or {} for wid, w in state.workers.items()})
    why = config.stash.get(WORKERS_LAYOUT_KEY, "")
    if note:
        note += f" ({why})" if why else ""
        eff.layout_problem = "; ".join(p for p in (eff.layout_problem, note) if p)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not is_reporting_rank():
        return
    eff = config.stash.get(SESSION_KEY, None)
    state = config.stash.get(GATE_KEY, None)
    if eff is None or state is None:
        return
    from pytest_efficientllm.glue.summary import summary_lines

    lines = summary_lines(eff, state)
    if lines:
        terminalreporter.section("efficiency")
        for line in lines:
            terminalreporter.write_line(line)

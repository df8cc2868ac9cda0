"""pytest glue: the plugin's hooks. Each gathers what pytest knows and hands it to plain Python.

* options: `glue.options.Settings`, built once at configure time;
* per process: one `RunState` (`glue.state`), with the controller's or the worker's side of
  the xdist wire registered as a plugin of its own (`glue.controller`, `glue.worker`);
* per test: the marker's spec (`glue.marker`), the `efficiency` fixture (`glue.fixture`),
  and the gate's `Decision` (`judging.evaluate`), applied to the report by `glue.outcome`
  or held for a vote (`glue.holding`, whose hooks are `confirmation.hooks`);
* at the end: the terminal summary (`glue.summary`).
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Generator
from typing import Any

import pytest

from pytest_efficientllm.confirmation.queue import ConfirmQueue
from pytest_efficientllm.confirmation.vote import CONFIRM_ENV
from pytest_efficientllm.core.devices import ProfileError
from pytest_efficientllm.glue import worker
from pytest_efficientllm.glue.controller import ControllerPlugin
from pytest_efficientllm.glue.fixture import Efficiency
from pytest_efficientllm.glue.holding import HeldTest, hold
from pytest_efficientllm.glue.marker import PROTOCOL_ARGS, MarkerError, parse_marker
from pytest_efficientllm.glue.options import Settings, add_options, no_test_option
from pytest_efficientllm.glue.outcome import (
    UNMEASURED,
    ShownCollectionErrors,
    fail_collection,
    fail_report,
    settle,
    unmeasured_limits,
)
from pytest_efficientllm.glue.state import (
    FIXTURE_KEY,
    LAYOUT_PROBLEM_KEY,
    RUN_KEY,
    SPEC_KEY,
    RunState,
)
from pytest_efficientllm.glue.summary import has_something_to_say, section_lines
from pytest_efficientllm.judging.evaluate import BaselineView, evaluate
from pytest_efficientllm.measuring import process_layout
from pytest_efficientllm.measuring.calibration import Calibrator
from pytest_efficientllm.measuring.session import EfficiencySession
from pytest_efficientllm.storage.baselines import BaselineError
from pytest_efficientllm.storage.cpu_folders import BaselineFolders


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    # A fixed layout needs a fresh interpreter (process_layout.py), so this process replaces itself,
    # as early as options are known: before conftests import torch (the plugin itself does
    # not), so the first process costs ~0.7 s.
    # Only for the process's own command line (not an in-process pytest.main, e.g.
    # pytester's) and never in an xdist worker (execnet talks to it over its pipes).
    config = early_config
    wanted = config.known_args_namespace.efficiency_fixed_layout
    if wanted is None:
        wanted = config.getini("efficiency_fixed_layout")
    if not wanted or hasattr(config, "workerinput") or no_test_option(config.known_args_namespace):
        return
    if process_layout.is_fixed(process_layout.current_layout()):
        return
    if sys.argv[:1] == ["-c"]:
        # `python -c ...`: how execnet starts an xdist worker (its controller already fixed
        # the layout it inherits; `workerinput` is not set yet at this hook).
        config.stash[LAYOUT_PROBLEM_KEY] = (
            "not re-executed: started by `python -c` (an xdist worker inherits its layout)"
        )
        return
    if tuple(config.invocation_params.args) != tuple(sys.argv[1:]):
        config.stash[LAYOUT_PROBLEM_KEY] = "not re-executed: pytest was started in-process, not from its command line"
        return
    # pytest already captures fds 1 and 2 here; the new process must write to the real ones.
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.stop_global_capturing()
    config.stash[LAYOUT_PROBLEM_KEY] = process_layout.reexec_fixed(list(sys.orig_argv))
    if capture is not None:  # not re-executed: carry on as pytest would have
        capture.start_global_capturing()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "efficiency(" + ", ".join(f"{a}=" for a in PROTOCOL_ARGS) + ", **budgets): measure this test's workload "
        "with the `efficiency` fixture; budgets like latency='<= 50 ms' or tolerances like latency='+5%'",
    )
    settings = Settings.from_config(config)
    workerid, workers = worker.worker_id(config), worker.worker_count(config)
    # Before anything can initialise CUDA: the device this worker may see.
    device, shared = worker.pin_device(settings.devices, workerid, workers)
    layout_problem = config.stash.get(LAYOUT_PROBLEM_KEY, "")
    # Read now, as the process started: the session may open later, after the controller has set
    # the variables that pad its xdist workers' stacks, which would read as another layout.
    layout = process_layout.current_layout()
    if workerid is None:  # where collection errors are shown; a worker sends them on as strings
        config.pluginmanager.register(ShownCollectionErrors(), "efficiency-collection-errors")

    def open_session(state: RunState) -> EfficiencySession:
        try:
            session = EfficiencySession(settings.measuring)
        except ProfileError as exc:
            raise pytest.UsageError(str(exc)) from None
        session.fingerprint["process_layout"] = layout
        session.layout_problem = layout_problem
        # A test measured on the CPU (`--gpu=cpu`) takes no GPU lock; one measured on a GPU does,
        # wherever another worker may measure on that GPU (pinned or not).
        if session.profile != "cpu":
            state.locked_device = worker.lock_device(device, shared, workers)
        return session

    state = config.stash[RUN_KEY] = RunState(
        settings,
        open_session,
        Calibrator(settings.calibrate_every_s) if settings.calibrate else None,
        is_worker=workerid is not None,
        layout=layout,
        device=device,
        confirm_queue=ConfirmQueue(settings.confirm_spacing_s) if settings.confirming else None,
    )
    # The session opens here only where the run asks something of the GPU, so that a GPU that is
    # absent or other, or a promise the runner does not keep, is a usage error before anything
    # runs; otherwise at the first measured test (`pytest_collection_finish`), and a run that
    # measures nothing neither imports torch nor opens NVML for the plugin.
    if settings.no_tests:
        return  # nothing runs: nothing to measure, judge or write
    if settings.measuring.gpu not in ("auto", "cpu") or settings.require:
        state.open()
    # Checked once, where the run starts: an xdist worker or a confirming process starts while
    # this run's own processes use the GPU, which `idle-gpu` would take for strangers.
    if settings.require and workerid is None and not os.environ.get(CONFIRM_ENV):
        unmet = state.session.unmet_requirements(settings.require)
        if unmet:
            raise pytest.UsageError("\n".join(f"--efficiency-require={name}: {why}" for name, why in unmet))
    plugin = worker.WorkerPlugin(state) if state.is_worker else ControllerPlugin(state)
    config.pluginmanager.register(plugin, "efficiency-" + ("worker" if state.is_worker else "controller"))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_setupnodes(config: pytest.Config, specs: list[Any]) -> None:
    # The controller, before execnet starts the workers: under a fixed layout, they start
    # with the stack a serial run has (process_layout.pad_for_xdist_workers).
    state = config.stash.get(RUN_KEY, None)
    if state is not None and process_layout.is_fixed(state.layout):
        state.workers_layout = process_layout.pad_for_xdist_workers(specs)


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    # Each item's marker is parsed where it is collected, and a bad one is a collection error of
    # its module: pytest reports those the same way in a serial run and from an xdist worker,
    # where an error raised later, from the collection hooks, crashes the controller.
    report = yield
    if report.passed:
        defaults = collector.config.stash[RUN_KEY].settings.measuring.defaults
        problems = []
        for item in report.result:
            if not isinstance(item, pytest.Item):
                continue
            marker = item.get_closest_marker("efficiency")
            try:
                kwargs = dict(marker.kwargs) if marker else {}
                args = tuple(marker.args) if marker else ()
                spec = item.stash[SPEC_KEY] = parse_marker(kwargs, args, defaults)
            except MarkerError as exc:
                problems.append(f"{item.nodeid}: efficiency marker: {exc}")
                continue
            # The test's own marker (not a module's `pytestmark`, which sets defaults for its measured
            # tests) on a test that cannot measure; `world_size=N` alone starts ranks, a use of its own.
            own = any(m.name == "efficiency" for m in item.own_markers)
            if own and spec.world_size == 1 and not _requests_fixture(item):
                problems.append(f"{item.nodeid}: efficiency marker: {UNMEASURED}")
            if marker is None and _requests_fixture(item):
                # A test measured through the fixture alone is marked too, so that `-m efficiency`
                # and `-m "not efficiency"` select every measured test (collected here, before
                # pytest deselects by marker); it had escaped a fast job's `-m "not efficiency"`.
                item.add_marker("efficiency")
        if problems:
            fail_collection(report, problems)
    return report


def pytest_collection_finish(session: pytest.Session) -> None:
    # Before the first test runs, where one is measured: the session sets torch's threads for the
    # whole run, the tests before the first measured one included, and what it imports is frozen
    # below with the rest.
    state = session.config.stash[RUN_KEY]
    if not state.settings.no_tests and any(_measured(item) for item in session.items):
        state.open()
    # What exists after collection (modules, models built at import) lives for the run;
    # freezing it (after a collection, so no garbage is frozen with it) keeps Python's own
    # full collections short when one lands inside a measured round (the Meter collects
    # only the young generations before a window).
    gc.collect()
    gc.freeze()


def _requests_fixture(item: pytest.Item) -> bool:
    return "efficiency" in getattr(item, "fixturenames", ())


def _measured(item: pytest.Item) -> bool:
    return item.get_closest_marker("efficiency") is not None or _requests_fixture(item)


@pytest.fixture
def efficiency(request: pytest.FixtureRequest) -> Efficiency:
    """Measure this test's workload: `efficiency.measure(fn, tokens=...)` and friends."""
    state = request.config.stash[RUN_KEY]
    eff = state.session
    if state.calibrator is not None:
        # Lazily at the first measured test (a run without one pays nothing), then again
        # whenever the last calibration is older than the interval.
        eff.fingerprint["calibration"] = state.calibrator.ensure().to_dict()
    if state.locked_device is not None:
        lock = worker.device_lock(state.locked_device)
        lock.acquire()
        request.addfinalizer(lock.release)
    spec = request.node.stash.get(SPEC_KEY, None) or parse_marker({}, (), eff.options.defaults)
    fixture = Efficiency(eff, request.node.nodeid, spec)
    request.node.stash[FIXTURE_KEY] = fixture
    return fixture


def _baseline_of(store: BaselineFolders, nodeid: str) -> BaselineView:
    try:
        return BaselineView(store.lookup(nodeid), store.run_priors(nodeid))
    except BaselineError as exc:
        return BaselineView(error=str(exc))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    fixture = item.stash.get(FIXTURE_KEY, None)
    if call.when != "call" or fixture is None:
        return report
    if not fixture.record.metrics:
        if report.passed and fixture.spec.limits:
            # Limits the marker declares on a test that measured nothing would pass unchecked (in a
            # distributed test: no rank measured; ranks that measure unevenly meet at no barrier).
            fail_report(report, unmeasured_limits(fixture.spec.limits))
        return report
    record = fixture.record
    state = item.config.stash[RUN_KEY]
    functional = report.outcome
    baseline = _baseline_of(state.store, record.nodeid) if report.passed else BaselineView()
    decision = evaluate(record, fixture.spec.limits, baseline, state.options, state.confirm_processes, functional)
    state.run_changes.add(decision.verdicts)
    if decision.limits:
        # What the test was judged by, kept with its record: `ab` judges the pairs by the same limits.
        record.settings["limits"] = [f"{limit.metric}={limit.text}" for limit in decision.limits]
    if decision.suspects:
        hold(HeldTest(item, record, report, functional, decision), call.duration)
    else:
        settle(report, record, decision.final, functional)
    return report


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(RUN_KEY, None)
    if state is None or not state.reporting or not has_something_to_say(state):
        return
    lines = section_lines(state, verbose=config.get_verbosity())
    if lines:
        terminalreporter.section("efficiency")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    # After every other plugin's last word: the session's telemetry is released (nvmlShutdown).
    state = config.stash.get(RUN_KEY, None)
    if state is not None and state.session_opened:
        state.session.close()

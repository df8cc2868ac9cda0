"""pytest hooks of the reports (registered by `plugin` through `pytest_plugins`).

`--efficiency-report=PATH` (repeatable) writes the run's records as a report when the session ends, on
the process that holds every record (the xdist controller, or the only process);
`--efficiency-progress` shows which technique is being measured (on a terminal; with `on`
in a redirected log too). Both only gather and
hand over: rendering lives in `write`, bookkeeping in `progress`.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_efficientllm.glue.state import RUN_KEY
from pytest_efficientllm.report.inputs import (
    REPORT_FORMATS,
    ReportError,
    check_report_path,
)
from pytest_efficientllm.report.progress import MODES, Progress
from pytest_efficientllm.report.write import write_report
from pytest_efficientllm.storage.runfile import Run

PLUGIN_NAME = "efficiency-report"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("efficiency")
    group.addoption(
        "--efficiency-report",
        dest="efficiency_report",
        action="append",
        default=[],
        metavar="PATH",
        help=f"write a report of the measured tests, format by extension: {', '.join(REPORT_FORMATS)}; "
        "repeat for several (report.md for the step summary, report.html to keep)",
    )
    group.addoption(
        "--efficiency-progress",
        dest="efficiency_progress",
        default="auto",
        choices=MODES,
        help="one line per measured technique as it starts: auto (suite tests, on a terminal), "
        "on (every test, also into a redirected log), off",
    )


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    if _is_worker(config):
        return  # workers neither write reports nor touch the terminal
    paths = config.getoption("efficiency_report", None) or []
    for path in paths:
        try:
            check_report_path(path)  # fail before a long run, not after it
        except ReportError as exc:
            raise pytest.UsageError(f"--efficiency-report: {exc}") from None
    config.pluginmanager.register(ReportPlugin(config, paths), PLUGIN_NAME)


def _on_terminal(config: pytest.Config) -> bool:
    """Whether pytest writes to a terminal: its reporter's own `isatty`, which decides its live
    "collecting ..." line (not `hasmarkup`, which FORCE_COLOR or PY_COLORS turn on in a log)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    isatty = getattr(reporter, "isatty", None)
    if isatty is None:
        return False
    return bool(isatty() if callable(isatty) else isatty)


class ReportPlugin:
    def __init__(self, config: pytest.Config, paths: list[str]) -> None:
        self.config = config
        self.paths = list(dict.fromkeys(paths))  # one report per path, in the order given
        quiet = config.get_verbosity() < 0
        self.outcomes: list[tuple[str, str]] = []  # what the report step says in the summary
        self.progress = Progress(mode="off" if quiet else config.getoption("efficiency_progress", "auto"))

    # -- progress ---------------------------------------------------------------------

    @pytest.hookimpl(trylast=True)  # the terminal reporter exists (registered at configure)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        # `auto` writes only to a terminal, as pytest's own live lines ("collecting ...") do:
        # a redirected CI log gets pytest's lines alone. `on` writes anyway.
        if self.progress.mode == "auto" and not _on_terminal(self.config):
            self.progress.mode = "off"

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.progress.collected(item.nodeid for item in session.items)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        self.progress.collected(ids)

    @pytest.hookimpl(tryfirst=True)  # before pytest writes this test's own prefix
    def pytest_runtest_logstart(self, nodeid: str, location: Any) -> None:
        line = self.progress.start(nodeid)
        if line is None:
            return
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        writer = getattr(reporter, "_tw", None)
        if reporter is None or writer is None:
            return
        if writer.width_of_current_line:
            writer.line()  # after a row of dots or a test's own line
        xdist = self.config.pluginmanager.get_plugin("dsession") is not None  # the xdist controller
        if xdist and self.config.get_verbosity() <= 0:
            # xdist appends result letters to whatever line is open: end ours.
            writer.line(line, cyan=True)
            return
        # Leave the line open and mark it so, as pytest does itself (`currentfspath = -2`):
        # pytest's next write of a file or test prefix then starts a fresh line, with no
        # blank line between ours and pytest's own.
        writer.write(line, cyan=True)
        reporter.currentfspath = -2

    # -- the report ---------------------------------------------------------------------

    @pytest.hookimpl(trylast=True)  # after every record (xdist workers' included) has arrived
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if not self.paths:
            return
        state = self.config.stash.get(RUN_KEY, None)
        records = state.records if state is not None else []
        if state is None or not records:
            where = ", ".join(self.paths)
            self.outcomes.append(
                (f"efficiency report not written to {where}: no test recorded a measurement", "yellow")
            )
            return
        run = Run(records=records, runs=[state.run_info()])
        for wanted in self.paths:
            try:
                path = write_report(run, wanted)
            except (ReportError, OSError) as exc:
                self.outcomes.append((f"efficiency report not written: {exc}", "red"))
                session.exitstatus = pytest.ExitCode.INTERNAL_ERROR  # a report CI relies on is missing
                continue
            self.outcomes.append((f"efficiency report: {path} ({len(records)} record(s))", ""))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for text, color in self.outcomes:
            terminalreporter.write_line(text, **({color: True} if color else {}))

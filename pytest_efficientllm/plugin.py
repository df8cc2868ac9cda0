"""pytest glue: options, the `efficiency` fixture and marker, verdicts in reports, the summary.

Hooks stay thin: they parse options into `session.Options`, hand work to plain modules
(`marker`, `fixture`, `verdicts`, `summary`) and attach the results to pytest's reports.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from .devices import PROFILES, ProfileError
from .fixture import Efficiency
from .marker import MarkerError, MarkerSpec, parse_marker
from .measure import Protocol
from .session import EfficiencySession, Options
from .units import UnitError, parse_seconds
from .verdicts import check_budgets

pytest_plugins = ["pytest_efficientllm.report.hooks", "pytest_efficientllm.distributed.hooks"]

SESSION_KEY = pytest.StashKey[EfficiencySession]()
SPEC_KEY = pytest.StashKey[MarkerSpec]()
FIXTURE_KEY = pytest.StashKey[Efficiency]()


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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "efficiency(rounds=, warmup=, min_time=, workload=, flops=, **budgets): measure this test's workload "
        "with the `efficiency` fixture; budgets like latency='<= 50 ms' or tolerances like latency='+5%'",
    )
    try:
        config.stash[SESSION_KEY] = EfficiencySession(options_from_config(config))
    except ProfileError as exc:
        raise pytest.UsageError(str(exc)) from None


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
    spec = request.node.stash.get(SPEC_KEY, None) or parse_marker({}, (), eff.options.defaults)
    fixture = Efficiency(eff, request.node.nodeid, spec)
    request.node.stash[FIXTURE_KEY] = fixture
    return fixture


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    fixture = item.stash.get(FIXTURE_KEY, None)
    if call.when != "call" or fixture is None or not fixture.record.metrics:
        return report
    record = fixture.record
    record.outcome = report.outcome
    eff = item.config.stash[SESSION_KEY]
    eff.records.append(record)
    if report.passed:
        verdicts = check_budgets(record, fixture.spec.limits)
        failed = [v for v in verdicts if v.failed]
        if failed:
            report.outcome = "failed"
            report.longrepr = "efficiency budget exceeded:\n" + "\n".join("  " + v.render() for v in failed)
            record.outcome = "failed"
        for v in verdicts:
            if v.status == "warn":
                report.sections.append(("efficiency", v.render()))
    return report


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    eff = config.stash.get(SESSION_KEY, None)
    if eff is None:
        return
    from .summary import summary_lines

    lines = summary_lines(eff)
    if lines:
        terminalreporter.section("efficiency")
        for line in lines:
            terminalreporter.write_line(line)

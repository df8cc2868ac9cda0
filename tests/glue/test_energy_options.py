"""`--efficiency-energy-resolution`, `--efficiency-energy-max-time`, `--efficiency-cooldown`
and the session's end (nvmlShutdown), through pytest on the CPU."""

from __future__ import annotations

import re

import hypothesis  # noqa: F401 - loaded here once: pytester's in-process runs would re-import it every run
import pytest

from pytest_efficientllm.glue.options import parse_energy_window
from pytest_efficientllm.measuring.meter import EnergyWindow
from pytest_efficientllm.measuring.session import EfficiencySession

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestAssertRewriteWarning")

INI = "[pytest]\nefficiency_calibrate_every = off\n"
MEASURED = """
def test_measured(efficiency):
    efficiency.measure(lambda: sum(range(1000)), tokens=4)
"""


def test_the_defaults_extend_to_5_percent_capped_at_10_s_without_cooldown() -> None:
    assert parse_energy_window("5%", "10 s", "off") == EnergyWindow(0.05, 10.0, 0.0) == EnergyWindow()
    assert parse_energy_window("2%", "10 s", "off") == EnergyWindow(0.02, 10.0, 0.0)
    assert EnergyWindow().updates_wanted() == 20


@pytest.mark.parametrize(
    "resolution, max_time, cooldown, expected",
    [
        ("off", "10 s", "off", EnergyWindow(None, 10.0, 0.0)),
        ("0.5 %", "1 min", "5 s", EnergyWindow(0.005, 60.0, 5.0)),
        ("10%", "500 ms", "0 s", EnergyWindow(0.1, 0.5, 0.0)),
    ],
)
def test_energy_window_options_are_parsed(resolution: str, max_time: str, cooldown: str, expected) -> None:
    assert parse_energy_window(resolution, max_time, cooldown) == expected


@pytest.mark.parametrize(
    "resolution, max_time, cooldown, message",
    [
        ("2", "10 s", "off", "--efficiency-energy-resolution=2: expected a percentage"),
        ("150%", "10 s", "off", "--efficiency-energy-resolution=150%"),
        ("0%", "10 s", "off", "--efficiency-energy-resolution=0%"),
        ("2%", "0 s", "off", "--efficiency-energy-max-time=0 s: expected a duration above 0 s"),
        ("2%", "10 s", "-1 s", "--efficiency-cooldown=-1 s"),
    ],
)
def test_bad_energy_window_options_name_the_option(resolution: str, max_time: str, cooldown: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_energy_window(resolution, max_time, cooldown)


@pytest.mark.parametrize(
    "arg, expected",
    [
        ("--efficiency-energy-resolution=150%", "*--efficiency-energy-resolution=150%*percentage*"),
        ("--efficiency-cooldown=soon", "*--efficiency-cooldown=soon: expected a duration*"),
    ],
)
def test_bad_energy_options_are_usage_errors(pytester: pytest.Pytester, arg: str, expected: str) -> None:
    pytester.makepyfile(test_suite=MEASURED)
    pytester.makeini(INI)
    result = pytester.runpytest("-p", "no:cacheprovider", arg)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])


def _record(pytester: pytest.Pytester, *args: str):
    from pytest_efficientllm.storage.runfile import read_run

    pytester.makepyfile(test_suite=MEASURED)
    pytester.makeini(INI)
    pytester.runpytest("-p", "no:cacheprovider", "--efficiency-json=run.json", *args).assert_outcomes(passed=1)
    (record,) = read_run(pytester.path / "run.json").records
    return record


def test_a_cpu_run_records_no_energy_window_by_default(pytester: pytest.Pytester) -> None:
    record = _record(pytester)
    assert "energy_window" not in record.settings and "energy_per_token_net" not in record.metrics


def test_cooldown_from_the_ini_is_recorded_with_why_there_is_no_temperature(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI + "efficiency_cooldown = 50 ms\n")
    from pytest_efficientllm.storage.runfile import read_run

    pytester.makepyfile(test_suite=MEASURED)
    pytester.runpytest("-p", "no:cacheprovider", "--efficiency-json=run.json").assert_outcomes(passed=1)
    (record,) = read_run(pytester.path / "run.json").records
    assert record.settings["energy_window"] == {
        "cooldown_s": 0.05,
        "temperature_c": {"*": "no GPU temperature on this backend"},
    }


def test_the_session_is_closed_once_at_the_end_of_the_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[EfficiencySession] = []
    monkeypatch.setattr(EfficiencySession, "close", lambda self: closed.append(self))
    pytester.makepyfile(test_suite=MEASURED)
    pytester.makeini(INI)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert len(closed) == 1


def test_energy_devices_visible_is_passed_to_the_session(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []
    original = EfficiencySession.__init__

    def spy(self, options) -> None:
        seen.append(options.all_devices)
        original(self, options)

    monkeypatch.setattr(EfficiencySession, "__init__", spy)
    pytester.makepyfile(test_suite=MEASURED)
    pytester.makeini(INI)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    pytester.runpytest("-p", "no:cacheprovider", "--efficiency-energy-devices=visible").assert_outcomes(passed=1)
    assert seen == [False, True]
    pytester.makeini(INI + "efficiency_energy_devices = all\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*efficiency_energy_devices='all': expected current or visible*"])

"""Baselines and gating through pytest: update, verdicts in reports, modes, overrides, JSON, faults."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET

import hypothesis  # noqa: F401 - loaded here once: pytester's in-process runs would re-import it every run
import pytest

from pytest_efficientllm.measuring.fingerprint import host_fingerprint
from pytest_efficientllm.storage.cpu_folders import cpu_folder_name
from tests.helpers.read_only_folders import make_read_only, undo_read_only

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestAssertRewriteWarning")

# A counted fact scaled by an environment variable: the "regression" is exact and known.
COUNTED_TESTS = """
import os, pytest

SCALE = float(os.environ.get("EFF_SCALE", "1"))

@pytest.mark.efficiency(MARKER)
def test_memory(efficiency):
    efficiency.count("peak_memory", int(1_000_000 * SCALE))

def test_plain():
    assert True
"""
INI = "[pytest]\nefficiency_calibrate_every = off\n"


def make_suite(pytester: pytest.Pytester, marker: str = "", ini: str = INI) -> None:
    pytester.makepyfile(test_suite=COUNTED_TESTS.replace("MARKER", marker))
    pytester.makeini(ini)


def run(pytester: pytest.Pytester, *args: str, scale: float = 1.0) -> pytest.RunResult:
    os.environ["EFF_SCALE"] = str(scale)
    try:
        return pytester.runpytest("-p", "no:cacheprovider", *args)
    finally:
        del os.environ["EFF_SCALE"]


def baseline_doc(pytester: pytest.Pytester) -> dict:
    return json.loads((pytester.path / "baselines/cpu/test_suite.py.json").read_text())


def test_new_then_recorded_then_a_regression_fails_with_its_numbers(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    result = run(pytester)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_suite.py::test_memory*new*"])
    assert not (pytester.path / "baselines").exists()

    result = run(pytester, "--update-baselines")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["*baselines*test_suite.py.json: 1 added, 0 updated, 0 unchanged, 0 kept", "  + test_suite.py::test_memory"]
    )
    assert list(baseline_doc(pytester)["tests"]) == ["test_suite.py::test_memory"]

    run(pytester).assert_outcomes(passed=2)
    result = run(pytester, scale=1.01)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*efficiency gate (against the baseline):*",
            "*peak_memory: 986.33 KiB vs baseline 976.56 KiB (+1.0%; counted, exact): regression*",
        ]
    )
    result.stdout.fnmatch_lines(["test_suite.py::test_memory * peak +1.0% * FAIL"])
    # The short test summary shows a failure's first line: it names the metric and its change.
    result.stdout.fnmatch_lines(["FAILED test_suite.py::test_memory - efficiency: peak_memory +1.0%*"])
    assert max(len(line) for line in result.stdout.lines if "test_suite.py::" in line) <= 100


def test_a_regression_reads_by_its_first_line_wherever_pytest_shows_a_failure_in_one(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The failure was a plain string: pytest 8 put no message in the short summary, pytest 9
    # on CI the whole text, `--tb=line` its first 50 characters and JUnit the whole text.
    make_suite(pytester)
    run(pytester, "--update-baselines").assert_outcomes(passed=2)
    monkeypatch.setenv("CI", "true")  # where pytest shows a failure's whole message in the summary
    first_line = "efficiency: peak_memory +1.0%"
    for xdist in ((), ("-n", "2")):  # a worker's report crosses to the controller as JSON
        result = run(pytester, "-rf", "--junitxml=junit.xml", *xdist, scale=1.01)
        result.assert_outcomes(passed=1, failed=1)
        lines = result.stdout.lines  # pytest's short summary, not the efficiency section's list of failures
        start = next(i for i, line in enumerate(lines) if "short test summary info" in line)
        summary = [line for line in lines[start:] if line.startswith("FAILED ")]
        assert summary == [f"FAILED test_suite.py::test_memory - {first_line}"], xdist
        result.stdout.fnmatch_lines(["*peak_memory: 986.33 KiB vs baseline 976.56 KiB (+1.0%; counted, exact)*"])
        failure = ET.parse(pytester.path / "junit.xml").find(".//failure")
        assert failure is not None and failure.get("message") == first_line, xdist
        assert "efficiency gate (against the baseline):" in (failure.text or ""), xdist
    result = run(pytester, "--tb=line", scale=1.01)
    source = (pytester.path / "test_suite.py").read_text().splitlines()
    lineno = source.index("@pytest.mark.efficiency()") + 1  # the test's first line, as pytest locates it
    assert f"test_suite.py:{lineno}: {first_line}" in result.stdout.lines


def test_improvements_are_reported_not_failed(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    run(pytester, "--update-baselines")
    result = run(pytester, scale=0.5)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "test_suite.py::test_memory * 488 KiB * peak -50.0% improved",
            "improved, refresh with --update-baselines (1 test):",
            "  peak_memory better than the baseline (counted): 1 test (-50.0%)",
        ]
    )
    # Each test's numbers under -v.
    verbose = run(pytester, "-v", scale=0.5)
    verbose.stdout.fnmatch_lines(["    test_suite.py::test_memory: 488.28 KiB vs baseline 976.56 KiB (-50.0%;*"])


@pytest.mark.parametrize(
    ("mode", "outcome", "expected"),
    [
        ("warn", {"passed": 2}, "  peak_memory regression (counted) (gate=warn: not failing): 1 test (+100.0%)"),
        ("off", {"passed": 2}, "test_suite.py::test_memory * -  *-"),
    ],
)
def test_gate_modes_warn_and_off_never_fail(pytester: pytest.Pytester, mode: str, outcome: dict, expected: str) -> None:
    make_suite(pytester)
    run(pytester, "--update-baselines")
    result = run(pytester, f"--efficiency-gate={mode}", scale=2.0)
    result.assert_outcomes(**outcome)
    result.stdout.fnmatch_lines([expected])


def test_strict_fails_a_test_without_baseline(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    result = run(pytester, "--efficiency-strict")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*no baseline for this test and --efficiency-strict is set*"])
    # Recording it is allowed under strict, and then it passes.
    run(pytester, "--efficiency-strict", "--update-baselines").assert_outcomes(passed=2)
    run(pytester, "--efficiency-strict").assert_outcomes(passed=2)


def test_update_writes_only_tests_that_passed_their_own_assertions_and_keeps_the_others(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_suite="""
        import os, pytest

        @pytest.mark.parametrize("n", [1, 2, 3])
        def test_count(efficiency, n):
            efficiency.count("flops", n * 10, unit="FLOP", direction="lower")
            assert not (os.environ.get("BREAK") and n == 2)
    """
    )
    pytester.makeini(INI)
    run(pytester, "--update-baselines").assert_outcomes(passed=3)
    os.environ["BREAK"] = "1"
    try:
        result = run(pytester, "--update-baselines", "-k", "not 3")
    finally:
        del os.environ["BREAK"]
    result.assert_outcomes(passed=1, failed=1, deselected=1)
    result.stdout.fnmatch_lines(["*: 0 added, 0 updated, 1 unchanged, 2 kept"])
    assert sorted(baseline_doc(pytester)["tests"]) == [f"test_suite.py::test_count[{n}]" for n in (1, 2, 3)]


def test_a_test_whose_fixture_teardown_fails_does_not_become_a_baseline(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_suite="""
        import pytest

        @pytest.fixture
        def resource():
            yield
            raise RuntimeError("teardown broke")

        def test_ok(efficiency):
            efficiency.count("flops", 10, unit="FLOP", direction="lower")

        def test_torn(efficiency, resource):
            efficiency.count("flops", 20, unit="FLOP", direction="lower")
    """
    )
    pytester.makeini(INI)
    result = run(pytester, "--update-baselines")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*: 1 added, 0 updated, 0 unchanged, 0 kept"])
    assert sorted(baseline_doc(pytester)["tests"]) == ["test_suite.py::test_ok"]


def test_ini_limits_are_defaults_the_marker_overrides_and_the_command_line_overrides_all(
    pytester: pytest.Pytester,
) -> None:
    make_suite(pytester, marker="peak_memory='+30%'", ini=INI + "efficiency_limits =\n    peak_memory=+10%\n")
    run(pytester, "--update-baselines")
    run(pytester, scale=1.2).assert_outcomes(passed=2)  # marker +30% beats ini +10%
    result = run(pytester, "--efficiency-limit=peak_memory=+5%", scale=1.2)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*+20.0%; counted, tolerance +5%): regression*"])
    result = run(pytester, "--efficiency-limit=peak_memory=<= 1 MB", scale=1.2)
    result.stdout.fnmatch_lines(["*budget <= 1 MB, counted): over budget*"])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--efficiency-limit=latency"], "*--efficiency-limit*'latency': expected METRIC=LIMIT*"),
        (["--efficiency-limit=latencyy=+5%"], "*--efficiency-limit*unknown metric 'latencyy'*"),
        (["--efficiency-devices=0,zero"], "*--efficiency-devices='0,zero'*'zero' is not a device index*"),
        (["--efficiency-calibrate-every=often"], "*--efficiency-calibrate-every=often: expected a duration*"),
        (["--efficiency-min-time=fast"], "*--efficiency-min-time=fast: expected a duration of 0 s or more*"),
        (["--efficiency-threads=0"], "*--efficiency-threads=0: expected a whole number of 1 or more*"),
        (["--efficiency-warmup=-1"], "*--efficiency-warmup=-1: expected a whole number of 0 or more*"),
        (["--efficiency-energy-max-time=long"], "*--efficiency-energy-max-time=long: expected a duration above 0 s*"),
    ],
)
def test_bad_gate_options_are_usage_errors_naming_the_option(
    pytester: pytest.Pytester, args: list[str], expected: str
) -> None:
    make_suite(pytester)
    result = run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])


@pytest.mark.parametrize(
    ("ini", "expected"),
    [
        ("efficiency_rounds = five", "*ini efficiency_rounds = five: expected a whole number of 1 or more*"),
        ("efficiency_min_time = soon", "*ini efficiency_min_time = soon: expected a duration*"),
        ("efficiency_gpu = h900", "*ini efficiency_gpu='h900' is not a known profile; choose one of*"),
    ],
)
def test_bad_ini_settings_are_usage_errors_naming_the_ini_key(
    pytester: pytest.Pytester, ini: str, expected: str
) -> None:
    make_suite(pytester, ini=f"{INI.rstrip()}\n{ini}\n")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])


def test_json_has_every_record_with_raw_rounds_and_verdicts(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_suite="""
        def test_measured(efficiency):
            efficiency.measure(lambda: sum(range(1000)), tokens=4)
    """
    )
    pytester.makeini(INI)
    result = run(pytester, "--efficiency-json=out/run.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # the folder must exist: said before the run
    result.stderr.fnmatch_lines(["*--efficiency-json=out/run.json: folder*does not exist*"])
    result = run(pytester, "--efficiency-json=run.json")
    result.stdout.fnmatch_lines(["efficiency json: *run.json (1 record(s))"])
    from pytest_efficientllm.storage.runfile import read_run

    data = read_run(pytester.path / "run.json")
    (record,) = data.records
    assert len(record["AL"].samples) == 5
    assert record.verdicts[0]["status"] == "new"


def test_a_run_that_recorded_no_measurement_keeps_the_last_run_file(pytester: pytest.Pytester) -> None:
    # A `-k` that matches nothing, or one that runs only plain tests: an empty run file written
    # over the last one would lose that run's evidence (as the report, it writes none).
    make_suite(pytester)
    run(pytester, "--efficiency-json=run.json").assert_outcomes(passed=2)
    written = (pytester.path / "run.json").read_text()
    for extra in (("-k", "no_such_test"), ("-k", "no_such_test", "-n", "2"), ("-k", "test_plain")):
        result = run(pytester, "--efficiency-json=run.json", *extra)
        result.stdout.fnmatch_lines(
            ["efficiency json not written: no test recorded a measurement; *run.json is left as it was"]
        )
        assert (pytester.path / "run.json").read_text() == written, extra
    (pytester.path / "run.json").unlink()
    result = run(pytester, "--efficiency-json=run.json", "-k", "test_plain")
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines(["efficiency json not written: no test recorded a measurement"])
    assert not (pytester.path / "run.json").exists()


def test_a_corrupt_baseline_names_file_and_position_and_is_not_overwritten(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    run(pytester, "--update-baselines")
    path = pytester.path / "baselines/cpu/test_suite.py.json"
    broken = path.read_text()[:-40]
    path.write_text(broken)
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_suite.py.json: corrupt baseline file: not valid JSON at line * column *"])
    result = run(pytester, "--update-baselines")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "nothing was overwritten" in " ".join(result.stdout.str().split())
    result.stdout.fnmatch_lines(["baselines NOT written: *"])
    assert path.read_text() == broken


def test_a_newer_schema_baseline_is_an_error_not_a_silent_downgrade(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    path = pytester.path / "baselines/cpu/test_suite.py.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"format": "pytest-efficientllm-baselines", "schema": 2, "profile": "cpu", "tests": {}}))
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*newer pytest-efficientllm (baseline schema 2*upgrade the plugin*"])


def test_a_read_only_baselines_folder_fails_the_update_clearly(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    run(pytester, "--update-baselines")
    folder = pytester.path / "baselines/cpu"
    before = (folder / "test_suite.py.json").read_text()
    if not make_read_only(folder):
        undo_read_only(folder)
        pytest.skip("cannot make a folder read-only here")
    try:
        result = run(pytester, "--update-baselines", scale=2.0)
    finally:
        undo_read_only(folder)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["baselines NOT written: *"])
    text = " ".join(result.stdout.str().split())
    assert "cannot write baseline file (" in text and "read-only? nothing was changed" in text
    assert (folder / "test_suite.py.json").read_text() == before


def test_baselines_dir_option_and_ini(pytester: pytest.Pytester) -> None:
    make_suite(pytester, ini=INI + "efficiency_baselines_dir = ci/base\n")
    run(pytester, "--update-baselines")
    assert (pytester.path / "ci/base/cpu/test_suite.py.json").is_file()
    run(pytester, "--update-baselines", "--baselines-dir=elsewhere")
    assert (pytester.path / "elsewhere/cpu/test_suite.py.json").is_file()


def test_calibration_is_recorded_in_the_fingerprint_and_said_in_the_summary(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_suite="""
        def test_one(efficiency):
            run = efficiency.measure(lambda: None)
            cal = run.fingerprint["calibration"]
            assert cal["matmul_s"] > 0 and cal["copy_s"] > 0 and cal["index_s"] > 0
    """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["calibration: * matmul, * copy (1 measurement(s))"])


def test_a_counted_regression_under_other_declared_settings_names_them(pytester: pytest.Pytester) -> None:
    # A suite run at another scale once failed its baseline's FLOPs by +13,090% with nothing saying why.
    pytester.makepyfile(
        test_suite="""
        import os, pytest

        HIDDEN = int(os.environ.get("EFF_HIDDEN", "64"))

        def test_model(efficiency):
            efficiency.settings(hidden=HIDDEN)
            efficiency.count("flops", HIDDEN * 1000, unit="FLOP")
        """
    )
    pytester.makeini(INI)
    run(pytester, "--update-baselines").assert_outcomes(passed=1)
    os.environ["EFF_HIDDEN"] = "256"
    try:
        result = run(pytester)
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(["*flops*+300.0%*regression; the test's settings differ*(hidden 64 -> 256)*"])
    finally:
        del os.environ["EFF_HIDDEN"]


def test_another_cpu_s_baseline_is_kept_and_this_cpu_records_and_reads_its_own(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    run(pytester, "--update-baselines").assert_outcomes(passed=2)
    main = pytester.path / "baselines/cpu/test_suite.py.json"
    doc = json.loads(main.read_text())
    entry = doc["tests"]["test_suite.py::test_memory"]
    entry["fingerprint"]["cpu_model"] = "Another CPU"  # as if a runner of another model had recorded it
    entry["metrics"]["peak_memory"]["value"] = 2_000_000
    main.write_text(json.dumps(doc))
    before = main.read_bytes()
    own = cpu_folder_name("cpu", host_fingerprint(1))

    result = run(pytester)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*cpu_model: 'Another CPU' -> *", "*this CPU has no baselines of its own*"])
    assert f"records them in baselines/{own}, beside the others" in " ".join(result.stdout.str().split())

    result = run(pytester, "--update-baselines")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "baselines: baselines/cpu",
            f"baselines baselines/{own}/test_suite.py.json: 1 added, 0 updated, 0 unchanged, 0 kept",
        ]
    )
    assert main.read_bytes() == before, "this CPU's update rewrote another CPU's baseline"

    result = run(pytester, scale=1.5)  # +50% against this CPU's own; -25% against the other's
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        [f"baselines: baselines/{own} (this CPU's own), else baselines/cpu", "*+50.0%*regression*"]
    )
    assert "cpu_model" not in result.stdout.str()  # compared like with like: no fingerprint warning
    assert "no baselines of its own" not in result.stdout.str()

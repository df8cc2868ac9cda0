"""`--efficiency-roofline=PROFILES` (ini `efficiency_roofline`): parsing, the usage error, and a
CPU run that records the GPU roofline estimates of its counted FLOPs and bytes, never gated."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pytest_efficientllm.glue.fixture import Efficiency
from pytest_efficientllm.glue.marker import parse_marker
from pytest_efficientllm.glue.options import parse_roofline
from pytest_efficientllm.measuring.backends import cpu_backend
from pytest_efficientllm.measuring.meter import MeasureProtocol
from pytest_efficientllm.measuring.session import Options
from pytest_efficientllm.storage.runfile import read_run

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestAssertRewriteWarning")


def test_profiles_parse_in_order_once_and_lowercase() -> None:
    assert parse_roofline("h200,h100") == ("h200", "h100")
    assert parse_roofline(" H100 , a100,h100 ") == ("h100", "a100")
    assert parse_roofline("") == ()


@pytest.mark.parametrize("text", ["h300", "cpu", "auto", "h100,tpu"])
def test_an_unknown_profile_names_it_and_the_valid_ones(text: str) -> None:
    with pytest.raises(ValueError, match="unknown GPU profile") as info:
        parse_roofline(text)
    bad = text.split(",")[-1]
    assert repr(bad) in str(info.value)
    assert "choose from h100, h200, gh200, a100" in str(info.value)


def test_an_unknown_profile_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest("-p", "no:cacheprovider", "--efficiency-roofline=h100,h300")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--efficiency-roofline=h100,h300: unknown GPU profile 'h300'; choose from h100*"])
    pytester.makeini("[pytest]\nefficiency_roofline = cpu\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown GPU profile 'cpu'*"])


# FLOPs given per round; bytes and the dtype mix counted by the test after the measurement,
# as the counting branch's Meter will record them.
WORKLOAD = """
import os
import pytest

@pytest.mark.efficiency(rounds=2, warmup=0)
def test_decode(efficiency):
    run = efficiency.measure(lambda: sum(range(1000)), flops=10**15)
    efficiency.count("bytes_accessed", 10**9)
    efficiency.count("flops_share:" + os.environ["DTYPE"], 1.0)
    roof = run.metrics["roofline_time:h100"]
    assert roof.source == "estimated" and roof.unit == "s"
    assert "roofline_time" not in run.metrics  # the CPU profile has no GPU of its own
    assert "roofline_time:a100" in run.metrics
"""


def test_a_cpu_run_records_the_named_rooflines(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DTYPE", "bf16")
    pytester.makepyfile(WORKLOAD)
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--gpu=cpu", "--efficiency-roofline=h100,a100", "--efficiency-json=run.json"
    )
    result.assert_outcomes(passed=1)
    (record,) = read_run(pytester.path / "run.json").records
    h100, a100 = record.metrics["roofline_time:h100"], record.metrics["roofline_time:a100"]
    assert h100.value == pytest.approx(1e15 / 989e12)  # compute-bound: bytes alone take 1e9 / 3.35e12 s
    assert a100.value == pytest.approx(1e15 / 312e12)
    assert h100.method.startswith("estimate: roofline max(FLOPs / 989 TFLOP/s bf16 peak of H100 SXM 80GB")
    assert "compute-bound" in h100.method


def test_the_ini_names_the_profiles_too(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DTYPE", "bf16")
    pytester.makepyfile(WORKLOAD)
    pytester.makeini("[pytest]\nefficiency_roofline = h100, a100\n")
    pytester.runpytest("-p", "no:cacheprovider", "--gpu=cpu").assert_outcomes(passed=1)


def test_a_changed_roofline_never_fails_the_gate(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(WORKLOAD)
    # The 15 µs workload's own CPU time, 2 rounds a side, can read 3x on a busy runner (it did in
    # CI): this test is about the roofline, so its timing gets a tolerance it cannot break.
    untimed = "--efficiency-limit=cpu_time_per_round=+100000%"
    common = (
        "-p",
        "no:cacheprovider",
        "--gpu=cpu",
        "--efficiency-roofline=h100,a100",
        "--efficiency-confirm=0",
        untimed,
    )
    monkeypatch.setenv("DTYPE", "bf16")
    pytester.runpytest(*common, "--update-baselines").assert_outcomes(passed=1)
    # The same FLOPs and bytes, now in fp32: 989/67 = 14.8x the bf16 roofline on an H100.
    monkeypatch.setenv("DTYPE", "fp32")
    result = pytester.runpytest(*common, "--efficiency-json=run.json")
    result.assert_outcomes(passed=1)
    (record,) = read_run(pytester.path / "run.json").records
    assert record.metrics["roofline_time:h100"].value == pytest.approx(1e15 / 67e12)
    assert not [v for v in record.verdicts if str(v["metric"]).startswith("roofline")]  # not gated by default
    # Even with a tolerance and a budget it breaks, an estimate only warns.
    result = pytester.runpytest(
        *common,
        "--efficiency-json=run.json",
        "--efficiency-limit=roofline_time:h100=+5%",
        "--efficiency-limit=roofline_time:a100=<= 1 ms",
    )
    result.assert_outcomes(passed=1)
    (record,) = read_run(pytester.path / "run.json").records
    statuses = {v["metric"]: v["status"] for v in record.verdicts if str(v["metric"]).startswith("roofline")}
    assert statuses == {"roofline_time:h100": "warn", "roofline_time:a100": "warn"}


def fixture_on(profile: str, gpu_name: str | None, named: tuple[str, ...] = ()) -> Efficiency:
    """The fixture of a session on `profile` whose detected device is `gpu_name`, timed by the CPU
    backend: what the roofline reads of a GPU session is its profile and its device's name."""
    session = SimpleNamespace(
        profile=profile,
        backend=cpu_backend(threads=1),
        fingerprint={"gpu_name": gpu_name} if gpu_name else {},
        threads=1,
        options=Options(roofline=named),
    )
    protocol = MeasureProtocol(rounds=2, warmup=0)
    return Efficiency(session, "test_x.py::test_decode", parse_marker({}, (), protocol))  # type: ignore[arg-type]


def test_a_gpu_run_records_the_roofline_of_its_detected_device() -> None:
    eff = fixture_on("h100", "NVIDIA H100 PCIe", ("h100",))
    run = eff.measure(lambda: None, flops=10**9)
    assert run.metrics["roofline_time"].value is None  # flops= given: no counting run, so no bytes
    assert "bytes_accessed unavailable" in run.metrics["roofline_time"].note
    eff.count("bytes_accessed", 10**9)  # after the measurement: the estimate follows
    assert run.metrics["roofline_time"].value == pytest.approx(1e9 / 2.0e12)  # H100 PCIe, as detected
    assert run.metrics["roofline_time:h100"].value == pytest.approx(1e9 / 3.35e12)  # the profile: SXM
    assert "of H100 PCIe" in run.metrics["roofline_time"].method


def test_without_a_roofline_input_nothing_is_estimated() -> None:
    eff = fixture_on("cpu", None, ("h100",))
    eff.count("trainable_params", 10)
    assert not [n for n in eff.record.metrics if n.startswith("roofline")]
    eff.count("bytes_accessed", 10**9)  # counted alone: the roofline says what it lacks
    assert "flops not recorded" in eff.record.metrics["roofline_time:h100"].note

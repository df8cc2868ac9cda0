"""`--efficiency-require` and `--gpu` against the GPU found at start-up: usage errors that name
what to fix. The GPU is the test doubles of torch.cuda and pynvml (nothing runs on a GPU)."""

from __future__ import annotations

import pytest

from pytest_efficientllm.core.devices import ProfileError, resolve_profile
from pytest_efficientllm.glue.options import parse_requirements
from pytest_efficientllm.measuring import session as session_module
from pytest_efficientllm.measuring.backends import Backend, cuda_backend
from tests.helpers.nvml_double import FakeGpu, FakePynvml
from tests.helpers.torch_cuda_double import UUID, FakeTorchCuda

H200 = "NVIDIA H200"


def doubles_backend(gpu: FakeGpu) -> Backend:
    return cuda_backend(
        "h200",
        1,
        0.002,
        cuda=FakeTorchCuda(name=H200),
        nvml_loader=lambda: FakePynvml([gpu]),
        environ={},
        nvml_probe_s=0.05,
    )


@pytest.fixture
def on_an_h200(monkeypatch: pytest.MonkeyPatch):
    """Sessions built in this process see an H200 through the doubles; the test sets its state."""
    gpu = FakeGpu("GPU-" + UUID, name=H200)
    monkeypatch.setattr(session_module, "detect_cuda_name", lambda: H200)
    monkeypatch.setattr(
        session_module, "select_backend", lambda profile, threads, interval, all_devices=False: doubles_backend(gpu)
    )
    return gpu


def test_requirement_names_are_parsed_and_an_unknown_one_lists_the_valid_ones() -> None:
    assert parse_requirements(" idle-gpu, Locked-Clocks,idle-gpu ") == ("idle-gpu", "locked-clocks")
    assert parse_requirements("") == ()
    with pytest.raises(ValueError, match="unknown requirement 'fast'; choose from locked-clocks, idle-gpu"):
        parse_requirements("locked-clocks,fast")


def test_an_unknown_requirement_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest("-p", "no:cacheprovider", "--gpu=cpu", "--efficiency-require=quiet-room")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--efficiency-require=quiet-room: unknown requirement*locked-clocks, idle-gpu*"])


def test_requiring_gpu_state_without_a_gpu_is_a_usage_error_naming_that(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    pytester.makeini("[pytest]\nefficiency_require = idle-gpu\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--gpu=cpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--efficiency-require=idle-gpu: there is no GPU*"])


def test_unlocked_clocks_are_a_usage_error_naming_the_gpu_and_the_fix(
    pytester: pytest.Pytester, on_an_h200: FakeGpu
) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest("-p", "no:cacheprovider", "--gpu=h200", "--efficiency-require=locked-clocks")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"*--efficiency-require=locked-clocks: GPU 0 ({H200}) has no locked/application clocks set; lock them*"]
    )
    on_an_h200.app_sm_clock_mhz = 1410  # nvidia-smi -ac: now the promise holds
    assert pytester.runpytest("-p", "no:cacheprovider", "--gpu=h200", "--efficiency-require=locked-clocks").ret == 0


def test_another_process_on_the_gpu_is_a_usage_error_naming_it(pytester: pytest.Pytester, on_an_h200: FakeGpu) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    on_an_h200.processes = [(999_999, 2**30)]
    result = pytester.runpytest("-p", "no:cacheprovider", "--gpu=h200", "--efficiency-require=idle-gpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--efficiency-require=idle-gpu: GPU 0 ({H200}) is used by 1 other*pid 999999*"])
    on_an_h200.processes = []
    assert pytester.runpytest("-p", "no:cacheprovider", "--gpu=h200", "--efficiency-require=idle-gpu").ret == 0


def test_asking_for_an_h200_on_an_h100_is_an_error_naming_both() -> None:
    with pytest.raises(
        ProfileError, match=r"--gpu=h200 was asked for, but the detected device is 'NVIDIA H100 80GB HBM3'"
    ):
        resolve_profile("h200", "NVIDIA H100 80GB HBM3")
    assert resolve_profile("h200", H200) == "h200"


def test_asking_for_an_h200_on_an_h100_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_module, "detect_cuda_name", lambda: "NVIDIA H100 80GB HBM3")
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest("-p", "no:cacheprovider", "--gpu=h200")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--gpu=h200 was asked for, but the detected device is 'NVIDIA H100 80GB HBM3'*"])


def test_throttled_windows_are_counted_as_one_kind_of_warning_whatever_their_reasons() -> None:
    from pytest_efficientllm.core.metrics import measured
    from pytest_efficientllm.core.record import Record
    from pytest_efficientllm.glue.summary_findings import finding_kind
    from pytest_efficientllm.judging.throttle import find_throttle

    kinds = set()
    for note in ("throttled: SW power cap", "throttled: HW thermal slowdown, sync boost"):
        record = Record("t.py::test_x", "h200")
        record.add(measured("gpu_throttled", 1.0, "NVML clocks event reasons", note=note))
        verdict = find_throttle(record)
        assert verdict is not None and note.removeprefix("throttled: ") in verdict.message
        kinds.add(finding_kind(verdict))
    # Throttling only the violation counters saw (between the window's two edges) is the same kind.
    record = Record("t.py::test_y", "h200")
    record.add(measured("gpu_throttled", 0.0, "NVML clocks event reasons"))
    held = "held below application clocks by: thermal"  # the probe's note (telemetry.gpu_state)
    record.add(measured("gpu_throttled_share", 0.05, "NVML violation counters", note=held))
    verdict = find_throttle(record)
    assert verdict is not None and f"{held} for 5.0% of the window" in verdict.message
    kinds.add(finding_kind(verdict))
    assert kinds == {"gpu_throttled in a window where the GPU throttled (its clocks limited)"}

"""The GPU test doubles speak the real APIs: same names, parameters, constants and structures.

Every GPU code path is tested against FakePynvml and FakeTorchCuda only, so a name the
plugin calls that real pynvml lacks, or a double that takes arguments the real function
refuses, would pass here and break on the first GPU run. These checks hold the doubles
and the plugin's source to the installed nvidia-ml-py and torch, which need no GPU.
"""

from __future__ import annotations

import ctypes
import inspect
import re
from pathlib import Path
from typing import Any

import pynvml
import pytest
import torch

import pytest_efficientllm
from pytest_efficientllm.telemetry.nvml import open_nvml
from pytest_efficientllm.telemetry.nvml_sampling import NvmlTensorActivityProbe
from tests.helpers.nvml_double import FakeGpu, FakePynvml
from tests.helpers.torch_cuda_double import FakeTorchCuda

PACKAGE = Path(pytest_efficientllm.__file__).parent

# Names in the source that look like NVML's but are not pynvml attributes: comment prose
# naming a family of constants, and fields of a ctypes struct.
NOT_MODULE_ATTRIBUTES = {"nvmlClocksEventReason", "nvmlClocksThrottleReason", "nvmlReturn", "nvmlGpmMetricsGet_t"}

# The doubles' own controls, which tests call and the plugin never does.
DOUBLE_ONLY = {"allocate", "free", "fail", "mark", "count"}


def _shape(function: object, drop_self: bool) -> list[tuple[str, bool]]:
    """(kind, has default) for each parameter; names may differ (pynvml's are not stable)."""
    parameters = list(inspect.signature(function).parameters.values())  # type: ignore[arg-type]
    if drop_self:
        parameters = parameters[1:]
    return [(p.kind.name, p.default is not inspect.Parameter.empty) for p in parameters]


def _real_accepts_every_call_of(real: list[tuple[str, bool]], double: list[tuple[str, bool]]) -> bool:
    """True where each call the double takes is one the real function takes too.

    torch adds optional parameters over time, and a double may demand an argument the real
    function defaults; both are fine. An argument the real function would refuse is not.
    """
    if len(real) < len(double) or not all(has_default for _, has_default in real[len(double) :]):
        return False
    return all(
        r_kind == d_kind and (r_default or not d_default)
        for (r_kind, r_default), (d_kind, d_default) in zip(real, double)
    )


def _public_functions(cls: type) -> dict[str, object]:
    return {
        name: member
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_") and name not in DOUBLE_ONLY
    }


def test_every_nvml_name_the_plugin_uses_exists_in_pynvml() -> None:
    pattern = re.compile(r"\b(nvml[A-Z]\w*|NVML_[A-Z0-9_]+|c_nvml\w+)\b")
    used: dict[str, str] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for name in pattern.findall(path.read_text()):
            used.setdefault(name, str(path.relative_to(PACKAGE)))
    assert len(used) > 30, f"the scan found too few NVML names to be reading the source: {sorted(used)}"
    missing = {
        name: where for name, where in used.items() if name not in NOT_MODULE_ATTRIBUTES and not hasattr(pynvml, name)
    }
    assert not missing, f"pynvml {getattr(pynvml, '__version__', '?')} has no {missing}"


@pytest.mark.parametrize("name", sorted(n for n in _public_functions(FakePynvml) if n.startswith("nvml")))
def test_nvml_double_takes_the_same_parameters_as_pynvml(name: str) -> None:
    real = getattr(pynvml, name, None)
    assert real is not None, f"FakePynvml.{name} stands in for a function pynvml does not have"
    assert _real_accepts_every_call_of(
        _shape(real, drop_self=False), _shape(getattr(FakePynvml, name), drop_self=True)
    ), f"FakePynvml.{name}{inspect.signature(getattr(FakePynvml, name))} vs pynvml.{name}{inspect.signature(real)}"


def test_nvml_double_has_no_public_function_outside_pynvml() -> None:
    # A helper named like an API call, but absent from pynvml, would be tested code no GPU runs.
    extra = [n for n in _public_functions(FakePynvml) if n.startswith("nvml") and not hasattr(pynvml, n)]
    assert extra == []


@pytest.mark.parametrize("name", sorted(_public_functions(FakeTorchCuda)))
def test_torch_cuda_double_takes_the_same_parameters_as_torch_cuda(name: str) -> None:
    real = getattr(torch.cuda, name, None)
    assert real is not None, f"FakeTorchCuda.{name} stands in for a function torch.cuda does not have"
    double = _shape(getattr(FakeTorchCuda, name), drop_self=True)
    assert _real_accepts_every_call_of(_shape(real, drop_self=False), double), (
        f"FakeTorchCuda.{name}{inspect.signature(getattr(FakeTorchCuda, name))} "
        f"vs torch.cuda.{name}{inspect.signature(real)}"
    )


def test_torch_cuda_double_event_takes_the_real_event_arguments() -> None:
    real = inspect.signature(torch.cuda.Event)
    double = inspect.signature(FakeTorchCuda().Event)
    assert set(double.parameters) <= set(real.parameters), f"{double} vs torch.cuda.Event{real}"


def test_nvml_double_constants_have_pynvml_values() -> None:
    constants = {n: v for n, v in vars(FakePynvml).items() if n.startswith("NVML_") or n == "nvmlMemory_v2"}
    assert len(constants) >= 8
    wrong = {n: (v, getattr(pynvml, n, "missing")) for n, v in constants.items() if getattr(pynvml, n, None) != v}
    assert wrong == {}, "FakePynvml constant: (double's value, pynvml's)"


def test_nvml_double_gpm_struct_sets_only_fields_the_real_struct_has() -> None:
    # A ctypes Structure takes any attribute silently; a field the real one lacks would never reach NVML.
    real = {name for name, _ in pynvml.c_nvmlGpmMetricsGet_t._fields_}
    real_metric = {name for name, _ in pynvml.c_nvmlGpmMetric_t._fields_}
    double = FakePynvml.c_nvmlGpmMetricsGet_t()
    assert set(vars(double)) <= real
    assert set(vars(double.metrics[0])) <= real_metric
    assert len(double.metrics) <= pynvml.NVML_GPM_METRIC_MAX


class FakePynvmlWithRealGpmStructs(FakePynvml):
    """FakePynvml whose GPM calls take and give pynvml's own ctypes structures (still a double:
    no driver is called). A field the plugin misnames on a ctypes Structure is set silently as
    a plain attribute; here it leaves the real field at 0, which these calls refuse."""

    c_nvmlGpmMetricsGet_t = pynvml.c_nvmlGpmMetricsGet_t
    NVML_GPM_METRIC_ANY_TENSOR_UTIL = pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL
    NVML_GPM_METRICS_GET_VERSION = pynvml.NVML_GPM_METRICS_GET_VERSION

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.taken: dict[int, float] = {}  # address of each sample taken -> the tensor share it stands for

    def nvmlGpmSampleAlloc(self) -> Any:
        self._enter("nvmlGpmSampleAlloc")
        return ctypes.pointer(pynvml.struct_c_nvmlGpmSample_t())

    def nvmlGpmSampleGet(self, handle: Any, sample: Any) -> Any:
        self._enter("nvmlGpmSampleGet")
        self.taken[ctypes.addressof(sample.contents)] = self._gpu(handle).tensor_percent
        return sample

    def nvmlGpmMetricsGet(self, get: Any) -> Any:
        self._enter("nvmlGpmMetricsGet")
        assert isinstance(get, pynvml.c_nvmlGpmMetricsGet_t)
        assert get.version == pynvml.NVML_GPM_METRICS_GET_VERSION and get.numMetrics == 1
        assert get.metrics[0].metricId == pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL
        first, second = ctypes.addressof(get.sample1.contents), ctypes.addressof(get.sample2.contents)
        assert first != second and {first, second} <= set(self.taken), "sample1/sample2 are not the samples taken"
        get.metrics[0].value = self.taken[second]
        return get


def test_the_tensor_activity_probe_fills_pynvmls_own_gpm_structures() -> None:
    nv = FakePynvmlWithRealGpmStructs([FakeGpu("GPU-aaaa1111-0000", tensor_percent=37.5)])
    devices = open_nvml(nv, None, (0,), sleep=lambda s: None)
    probe = next(p for p in devices.make_probes(0.01) if isinstance(p, NvmlTensorActivityProbe))
    probe.open()
    probe.close()
    (reading,) = probe.readings(1.0)
    assert reading.value == pytest.approx(0.375), reading.note


@pytest.mark.parametrize(
    "call, args, real_struct",
    [
        ("nvmlDeviceGetMemoryInfo", (pynvml.nvmlMemory_v2,), pynvml.c_nvmlMemory_v2_t),
        ("nvmlDeviceGetUtilizationRates", (), pynvml.c_nvmlUtilization_t),
        ("nvmlGpmQueryDeviceSupport", (), pynvml.c_nvmlGpmSupport_t),
        ("nvmlDeviceGetComputeRunningProcesses", (), pynvml.c_nvmlProcessInfo_t),
        ("nvmlDeviceGetViolationStatus", (pynvml.NVML_PERF_POLICY_POWER,), pynvml.c_nvmlViolationTime_t),
    ],
)
def test_nvml_double_answers_carry_only_fields_of_pynvmls_structures(call: str, args: tuple, real_struct: type) -> None:
    nv = FakePynvml([FakeGpu("GPU-aaaa1111-0000", processes=[(4242, 2**20)])])
    answer = getattr(nv, call)(nv.nvmlDeviceGetHandleByIndex(0), *args)
    shaped = answer[0] if isinstance(answer, list) else answer
    assert set(vars(shaped)) <= {name for name, _ in real_struct._fields_}, f"{call}: {vars(shaped)}"

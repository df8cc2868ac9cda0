"""Fault injection into the telemetry sources, through the measuring loop and the plugin.

Per-source unit faults are covered where the sources are tested: NVML raising mid-window,
unavailable, counter backwards, not supported (telemetry/test_nvml.py); RAPL wrapping,
unreadable, failing mid-window (telemetry/test_rapl.py); clear_refs not writable
(telemetry/test_procfs.py). Here the same faults are followed end to end: what the CPU
backend, the derived metrics and a pytest run do with them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pytest_efficientllm.core.record import Metric
from pytest_efficientllm.measuring.backends import Backend, cpu_backend
from pytest_efficientllm.measuring.meter import (
    MeasureProtocol,
    Meter,
    Work,
    derive_metrics,
)
from pytest_efficientllm.telemetry import rapl
from tests.helpers import REPO_ROOT
from tests.helpers.fault_harness import RECORDS_CONFTEST, recorded

MiB = 2**20
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestAssertRewriteWarning")


def _measure(backend: Backend, fn, rounds: int = 3) -> dict[str, Metric]:
    work = Work(count_flops=False)
    meter = Meter(backend)
    result = meter.run_window(fn, MeasureProtocol(rounds=rounds, warmup=0))
    return derive_metrics(result, work, meter.flops_of(fn, work), backend)


# -- RAPL unreadable: what the derived metrics do --------------------------------------------------------------


def _rapl_tree(root: Path, energy_uj: int, max_uj: int = 2**32) -> Path:
    zone = root / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "max_energy_range_uj").write_text(f"{max_uj}\n")
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    return zone


@pytest.fixture
def powercap_at(monkeypatch: pytest.MonkeyPatch):
    """Point the CPU backend's RaplReader at a fake powercap tree (files we write)."""

    def use(root: Path) -> None:
        monkeypatch.setattr(rapl.RaplReader.__init__, "__defaults__", (root,))

    return use


def test_rapl_becoming_unreadable_mid_window_makes_energy_unavailable_not_estimated(
    tmp_path: Path, powercap_at
) -> None:
    zone = _rapl_tree(tmp_path, 10_000)
    powercap_at(tmp_path)
    backend = cpu_backend(threads=1)

    def round_that_breaks_the_counter() -> None:
        counter = zone / "energy_uj"
        if counter.is_file():
            counter.unlink()
            counter.mkdir()  # reading it now fails with IsADirectoryError

    m = _measure(backend, round_that_breaks_the_counter)
    energy = m["energy"]
    assert energy.value is None and "window close" in energy.note
    # The window's energy is unknown: no per-unit figure and no silent fallback to an estimate.
    for name in ("AEC", "energy_per_round"):
        assert m[name].value is None and m[name].note == energy.note
    assert m["AL"].value is not None  # the rest of the measurement stands


def test_rapl_unreadable_at_start_up_falls_back_to_a_named_estimate(tmp_path: Path, powercap_at) -> None:
    zone = _rapl_tree(tmp_path, 10_000)
    (zone / "energy_uj").unlink()
    (zone / "energy_uj").mkdir()
    powercap_at(tmp_path)
    backend = cpu_backend(threads=1)
    assert any("RAPL counter not readable" in n and "estimated" in n for n in backend.notices)
    m = _measure(backend, lambda: sum(range(20_000)))
    assert m["energy"].source == "estimated" and "estimate" in m["energy"].method
    assert m["AEC"].source == "estimated"


# -- NVML failing mid-window, through a pytest run ----------------------------------------------

NVML_CONFTEST = (
    RECORDS_CONFTEST
    + f'''
import sys
sys.path.insert(0, {str(REPO_ROOT)!r})
import pytest
from tests.helpers.nvml_double import FakePynvml
from pytest_efficientllm.measuring.backends import Backend
from pytest_efficientllm.telemetry.nvml import open_nvml
from pytest_efficientllm.telemetry.procfs import PerfCounterTimer

@pytest.fixture(autouse=True)
def fake_gpu(request):
    """Each test gets a fresh FakePynvml (a test double) as its session's GPU telemetry."""
    nv = FakePynvml()
    devs = open_nvml(nv, None, probe_max_s=0.05)
    eff = request.config.stash[RUN_KEY].session
    eff.backend = Backend("h100", PerfCounterTimer(), lambda: devs.make_probes(0.002), lambda: None, None)
    return nv
'''
)


def test_nvml_failing_mid_window_fails_that_test_only_and_keeps_no_record(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(NVML_CONFTEST)
    pytester.makepyfile(
        """
        import time

        def test_gpu_lost(efficiency, fake_gpu):
            def work():
                fake_gpu.fail("nvmlDeviceGetTotalEnergyConsumption", fake_gpu.NVML_ERROR_GPU_IS_LOST)
                time.sleep(0.01)
            efficiency.measure(work, tokens=4, flops=0)

        def test_after(efficiency):
            run = efficiency.measure(lambda: time.sleep(0.02), tokens=4, flops=0)
            assert run["energy"].value is not None and run["energy"].source == "measured"
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--efficiency-calibrate-every=off")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*TelemetryError*nvmlDeviceGetTotalEnergyConsumption failed*"])
    kept = recorded(pytester)
    assert "test_gpu_lost" not in kept, "a window with a failed energy read must not be recorded"
    assert kept["test_after"]["metrics"]["energy"]["source"] == "measured"


if sys.platform != "linux":  # pragma: no cover - procfs and powercap are Linux interfaces
    pytest.skip("Linux only", allow_module_level=True)

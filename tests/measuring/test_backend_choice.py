"""Which telemetry a session gets (`select_backend`, `cpu_backend`): the profile decides CPU or CUDA,
and on the CPU a readable RAPL tree decides measured energy or the estimate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pytest_efficientllm.measuring import backends
from pytest_efficientllm.measuring.backends import cpu_backend, select_backend
from pytest_efficientllm.telemetry.rapl import RaplProbe, RaplReader
from tests.helpers.powercap_tree import zone


def test_the_cpu_profile_gets_cpu_telemetry_without_asking_cuda() -> None:
    backend = select_backend("cpu", 1)
    assert backend.profile == "cpu" and backend.device_type == "cpu"
    assert not any("CUDA" in notice for notice in backend.notices)


def test_a_gpu_profile_asks_cuda_and_says_so_where_there_is_none() -> None:
    backend = select_backend("h100", 1)
    if torch.cuda.is_available():
        assert backend.profile == "h100" and backend.device_type == "cuda"
    else:
        assert backend.profile == "cpu" and "--gpu profile 'h100' asked for CUDA telemetry" in backend.notices[0]


@pytest.mark.parametrize("readable", [True, False])
def test_the_cpu_backend_measures_energy_with_rapl_where_it_reads_and_estimates_it_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, readable: bool
) -> None:
    root = tmp_path if readable else tmp_path / "no-powercap"
    if readable:
        zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000)
    monkeypatch.setattr(backends, "RaplReader", lambda: RaplReader(root))
    backend = cpu_backend(threads=1)
    probes = backend.make_probes()
    energy_notices = [n for n in backend.notices if n.startswith("CPU energy:")]
    if readable:
        assert any(isinstance(p, RaplProbe) for p in probes) and energy_notices == []
        assert backend.sources["energy"] == "RAPL energy_uj"
    else:
        assert not any(isinstance(p, RaplProbe) for p in probes) and len(energy_notices) == 1
        assert backend.sources["energy"] == "estimate (no RAPL)" and "estimated" in energy_notices[0]

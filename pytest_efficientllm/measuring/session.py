"""Per-run state: the resolved profile, the telemetry backend, defaults, and the records made.

Built once per process from the options, at its first use (`glue.state.RunState.session`); the
pytest hooks only read and append.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from pytest_efficientllm.core.devices import (
    detect_cuda_name,
    resolve_profile,
    usable_cores,
)
from pytest_efficientllm.measuring.backends import select_backend
from pytest_efficientllm.measuring.fingerprint import host_fingerprint
from pytest_efficientllm.measuring.meter import EnergyWindow, MeasureProtocol


@dataclass
class Options:
    """The plugin's settings after CLI and ini are merged. Units: seconds for min_time_s."""

    gpu: str = "auto"
    defaults: MeasureProtocol = field(default_factory=MeasureProtocol)
    threads: int | None = None
    sample_interval_s: float = 0.02
    # GPU profiles whose roofline estimate every record gets (`--efficiency-roofline`).
    roofline: tuple[str, ...] = ()
    # How long energy windows must be, and the cooldown before each (`--efficiency-energy-*`,
    # `--efficiency-cooldown`).
    energy: EnergyWindow = field(default_factory=EnergyWindow)
    # Measure every CUDA device this process sees (`--efficiency-energy-devices=visible`),
    # not only the current one.
    all_devices: bool = False


def default_threads(workers: int | None = None) -> int:
    """The cores this process may use, shared among xdist workers on one machine."""
    if workers is None:
        workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    return max(1, usable_cores() // max(1, workers))


class EfficiencySession:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.profile = resolve_profile(options.gpu, detect_cuda_name() if options.gpu != "cpu" else None)
        self.threads = options.threads or default_threads()
        self._configure_threads()
        self.backend = select_backend(self.profile, self.threads, options.sample_interval_s, options.all_devices)
        self.fingerprint: dict[str, Any] = host_fingerprint(self.threads)
        self.fingerprint["profile"] = self.profile
        # Not the compute source: it names the peak MFU is divided by, which every record's
        # `peak_flops_per_s` and `MFU` methods carry; on the CPU it repeats `torch_threads` and
        # embeds the clock /proc/cpuinfo showed at start-up, which frequency scaling moves
        # between runs, so comparing it would warn (and calibrate) on nothing.
        self.fingerprint["sources"] = {k: v for k, v in self.backend.sources.items() if k != "compute"}
        self.fingerprint.update(self.backend.device_fingerprint)
        # Why `--efficiency-fixed-layout` could not fix the layout ("" when not asked or done).
        self.layout_problem = ""

    def _configure_threads(self) -> None:
        import torch

        torch.set_num_threads(self.threads)

    def unmet_requirements(self, required: tuple[str, ...]) -> list[tuple[str, str]]:
        """(requirement, why it is not met) for each of `required` (`telemetry.gpu_state.REQUIREMENTS`)
        this session's GPU does not meet, as read at start-up; every one, where there is no GPU."""
        state = self.backend.gpu_state
        if state is None:
            return [(name, self.backend.gpu_state_problem) for name in required]
        return [(name, why) for name in required if (why := state.unmet(name)) is not None]

    @property
    def notices(self) -> list[str]:
        return self.backend.notices

    def close(self) -> None:
        """Release what the backend holds (NVML: `nvmlShutdown`); at the end of the session."""
        self.backend.close()

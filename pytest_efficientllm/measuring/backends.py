"""Which telemetry a session uses: the round timer, the probes, the peak for MFU.

`select_backend` looks at the resolved profile and what the machine offers, and returns
one `Backend` whose `notices` say once per session which sources are missing and why.
Callers never branch on "is there a GPU": a CPU backend simply has CPU probes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_efficientllm.core.devices import clock_derived_peak, cpu_peak_estimate
from pytest_efficientllm.core.metrics import estimated
from pytest_efficientllm.core.record import Metric
from pytest_efficientllm.telemetry.base import Probe, RoundTimer
from pytest_efficientllm.telemetry.cuda import (
    HOPPER_FLOP_PER_CLOCK_PER_SM,
    CudaAllocatorProbe,
    CudaEventTimer,
    check_same_device,
    cuda_runtime_version,
    gpu_peak_flops,
    torch_cuda,
)
from pytest_efficientllm.telemetry.gpu_state import GpuState, NvmlThrottleProbe, NvmlViolationProbe, read_gpu_state
from pytest_efficientllm.telemetry.nvml import open_nvml
from pytest_efficientllm.telemetry.nvml_devices import load_pynvml
from pytest_efficientllm.telemetry.nvml_energy import PROBE_MAX_S
from pytest_efficientllm.telemetry.procfs import (
    PerfCounterTimer,
    ProcessCpuTimeProbe,
    ProcessMemoryProbe,
    ProcPaths,
    reset_hwm,
)
from pytest_efficientllm.telemetry.rapl import RaplProbe, RaplReader


def _no_sync() -> None:
    return None


@dataclass
class Backend:
    profile: str
    timer: RoundTimer
    make_probes: Callable[[], list[Probe]]
    synchronize: Callable[[], None]
    peak_flops: Metric | None
    sources: dict[str, str] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    device_fingerprint: dict[str, object] = field(default_factory=dict)
    # Where the workload's tensors live: "cuda" counts host-device copies and synchronizations.
    device_type: str = "cpu"
    # The GPU's pre-flight state (telemetry.gpu_state); None with why in `gpu_state_problem`.
    gpu_state: GpuState | None = None
    gpu_state_problem: str = (
        "there is no GPU to check: the profile is 'cpu' (--gpu=cpu, or --gpu=auto found no CUDA device)"
    )
    # Update period of the energy counter (Units: s), where it has one and it is known: the
    # meter extends windows to span enough updates. None: RAPL, the CPU estimate, unknown.
    energy_period_s: float | None = None
    # The measured GPUs' temperatures now ({"cuda:0": 41}, degrees C), for the cooldown record.
    temperature_c: Callable[[], dict[str, Any]] | None = None
    # Releases what the backend holds (NVML's nvmlInit) at session end.
    close: Callable[[], None] = _no_sync


def cpu_backend(threads: int, sample_interval_s: float = 0.02) -> Backend:
    """Wall clock, procfs memory and CPU time, RAPL energy when readable (else an estimate)."""
    notices: list[str] = []
    hwm_problem = reset_hwm(ProcPaths())
    if hwm_problem:
        notices.append(f"CPU peak memory: {hwm_problem}; the peak is the maximum of sampled RSS instead")
    rapl = RaplReader()
    rapl_problem = rapl.problem()
    if rapl_problem:
        notices.append(
            f"CPU energy: {rapl_problem}; energy is estimated "
            "(process CPU-seconds x a per-core power model), never gated"
        )

    def probes() -> list[Probe]:
        out: list[Probe] = [ProcessMemoryProbe(interval_s=sample_interval_s)]
        if not rapl_problem:
            out.append(RaplProbe(rapl))
        # Last, so it opens last and closes first: the other probes' opening and closing (a
        # sampler thread started and joined, VmHWM reset) is the plugin's CPU, not the work's.
        return [*out, ProcessCpuTimeProbe()]

    est = cpu_peak_estimate(threads)
    peak = estimated("peak_flops_per_s", est.flops_per_s, est.method)
    sources = {
        "timer": PerfCounterTimer.method,
        "memory": "procfs VmHWM + sampled RSS",
        "energy": "RAPL energy_uj" if not rapl_problem else "estimate (no RAPL)",
        "compute": "MFU against " + est.method,
    }
    return Backend("cpu", PerfCounterTimer(), probes, _no_sync, peak, sources, notices)


def cuda_backend(
    profile: str,
    threads: int,
    sample_interval_s: float = 0.02,
    *,
    cuda: Any = None,
    nvml_loader: Callable[[], Any] = load_pynvml,
    environ: Mapping[str, str] | None = None,
    nvml_probe_s: float = PROBE_MAX_S,
    all_devices: bool = False,
) -> Backend:
    """CUDA events and allocator, NVML energy/memory/kernel-busy/GPM, host RSS and CPU time.

    Measures the current CUDA device (distributed tests run one process per rank), or with
    `all_devices` every device CUDA shows this process (`--efficiency-energy-devices=visible`):
    NVML then reads each one's energy counter and sums them; the allocator peaks stay the
    current device's. Without CUDA it returns the CPU backend with
    a notice saying so.
    """
    cuda = cuda if cuda is not None else torch_cuda()
    environ = os.environ if environ is None else environ
    if not cuda.is_available():
        backend = cpu_backend(threads, sample_interval_s)
        backend.notices.insert(
            0,
            f"--gpu profile {profile!r} asked for CUDA telemetry, but torch.cuda.is_available() "
            "is false: CPU telemetry used",
        )
        backend.gpu_state_problem = "there is no GPU: torch.cuda.is_available() is false"
        return backend

    ordinal = int(cuda.current_device())
    props = cuda.get_device_properties(ordinal)
    ordinals = tuple(range(int(cuda.device_count()))) if all_devices else (ordinal,)
    torch_uuids = [str(getattr(cuda.get_device_properties(o), "uuid", "") or "") or None for o in ordinals]
    nvml = open_nvml(nvml_loader(), environ.get("CUDA_VISIBLE_DEVICES"), ordinals, probe_max_s=nvml_probe_s)
    nvml = check_same_device(nvml, torch_uuids)

    name = str(props.name)
    sm_count = int(getattr(props, "multi_processor_count", 0) or 0) or None
    max_clock = nvml.fingerprint.get("gpu_max_sm_clock_mhz")
    peak = gpu_peak_flops(name, sm_count, max_clock)
    fingerprint: dict[str, Any] = dict(nvml.fingerprint)
    fingerprint.update(
        {
            "gpu_name": name,
            "gpu_memory_total_bytes": int(props.total_memory),
            "gpu_sm_count": sm_count,
            "gpu_compute_capability": f"{getattr(props, 'major', '?')}.{getattr(props, 'minor', '?')}",
            "cuda_ordinal": ordinal,
            "cuda_visible_devices": environ.get("CUDA_VISIBLE_DEVICES"),
            "cuda_runtime_version": cuda_runtime_version(),
        }
    )
    if sm_count and max_clock:
        fingerprint["peak_flops_clock_derived"] = clock_derived_peak(
            sm_count, max_clock * 1e6, HOPPER_FLOP_PER_CLOCK_PER_SM
        )
    # The GPU's state before anything is measured: stable facts compared in the fingerprint,
    # values of the moment under `gpu_preflight` (never compared).
    state: GpuState | None = None
    state_problem = ""
    throttle_handles: list[Any] | None = None  # the whole GPUs whose clocks event reasons each window reads
    if nvml.problem is None:
        state = read_gpu_state(nvml.nv, nvml.devices[0], os.getpid())
        fingerprint.update(state.fingerprint)
        fingerprint["gpu_preflight"] = state.preflight
        throttle_handles = list({id(d.parent): d.parent for d in nvml.devices}.values())
    else:
        state_problem = f"the GPU's state cannot be read: NVML is unavailable ({nvml.problem})"

    # One for the session, so a limiter NVML refused once is not asked again in every window.
    violations = NvmlViolationProbe(nvml.nv, throttle_handles) if throttle_handles is not None else None

    def probes() -> list[Probe]:
        # Open order: host memory, allocator, then NVML with its energy counter next to last, so
        # the counter is read nearest the timed rounds (probes close in reverse order). CPU time
        # is last: the NVML reads at open and close are the plugin's CPU, not the work's, and
        # its own two clock reads cost the energy window about a microsecond.
        return [
            ProcessMemoryProbe(interval_s=sample_interval_s, prefix="host_"),
            CudaAllocatorProbe(cuda, ordinal),
            # Opened before the NVML probes and closed after them: its two reads stay
            # outside the energy counter's window.
            *(
                [NvmlThrottleProbe(nvml.nv, throttle_handles, state.throttle_unsupported if state else None)]
                if throttle_handles is not None
                else []
            ),
            *([violations] if violations is not None else []),
            *nvml.make_probes(sample_interval_s),
            ProcessCpuTimeProbe(),
        ]

    energy_source = (
        "unavailable: " + (nvml.problem or nvml.unsupported.get("energy", ""))
        if nvml.problem or "energy" in nvml.unsupported
        else "NVML total energy counter (mJ)"
    )
    sources = {
        "timer": CudaEventTimer.method,
        "memory": "torch.cuda allocator peaks + NVML memory v2 sampled"
        if nvml.problem is None
        else "torch.cuda allocator peaks",
        "energy": energy_source,
        "compute": "NVML utilization.gpu (PCU) + MFU against " + (peak.method if peak else "no peak (device unknown)"),
        "device": f"cuda:{ordinal} {name}",
    }
    notices = list(nvml.notices) + (state.notices if state is not None else [])
    if peak is None:
        notices.append(f"MFU: {name!r} is not in the device table and its SM clock is unknown: no peak to divide by")
    return Backend(
        profile,
        CudaEventTimer(cuda),
        probes,
        cuda.synchronize,
        peak,
        sources,
        notices,
        fingerprint,
        device_type="cuda",
        gpu_state=state,
        gpu_state_problem=state_problem,
        # None where there is no counter or its start-up probe failed: no step was measured.
        energy_period_s=nvml.step.period_s,
        temperature_c=nvml.temperatures,
        close=nvml.close,
    )


def select_backend(profile: str, threads: int, sample_interval_s: float = 0.02, all_devices: bool = False) -> Backend:
    """The one place a session's telemetry is chosen: CPU probes for `cpu`, CUDA and NVML otherwise.

    `all_devices`: measure every CUDA device this process sees, not only the current one."""
    if profile == "cpu":
        return cpu_backend(threads, sample_interval_s)
    return cuda_backend(profile, threads, sample_interval_s, all_devices=all_devices)

"""Which telemetry a session uses: the round timer, the probes, the peak for MFU.

`select_backend` looks at the resolved profile and what the machine offers, and returns
one `Backend` whose `notices` say once per session which sources are missing and why.
Callers never branch on "is there a GPU": a CPU backend simply has CPU probes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pytest_efficientllm.core.devices import cpu_peak_estimate
from pytest_efficientllm.core.record import Metric
from pytest_efficientllm.telemetry.base import Probe, RoundTimer
from pytest_efficientllm.telemetry.procfs import PerfCounterTimer, ProcessCpuTimeProbe, ProcessMemoryProbe


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


def _no_sync() -> None:
    return None


def cpu_backend(threads: int, sample_interval_s: float = 0.02) -> Backend:
    """Wall clock, procfs memory and CPU time, RAPL energy when readable (else an estimate)."""
    from pytest_efficientllm.telemetry.rapl import RaplReader, RaplProbe

    from pytest_efficientllm.telemetry.procfs import ProcPaths, reset_hwm

    notices: list[str] = []
    hwm_problem = reset_hwm(ProcPaths())
    if hwm_problem:
        notices.append(f"CPU peak memory: {hwm_problem}; the peak is the maximum of sampled RSS instead")
    rapl = RaplReader()
    rapl_problem = rapl.problem()
    if rapl_problem:
        notices.append(f"CPU energy: {rapl_problem}; energy is estimated (process CPU-seconds x a per-core power model), never gated")

    def probes() -> list[Probe]:
        out: list[Probe] = [ProcessCpuTimeProbe(), ProcessMemoryProbe(interval_s=sample_interval_s)]
        if not rapl_problem:
            out.append(RaplProbe(rapl))
        return out

    est = cpu_peak_estimate(threads)
    peak = Metric("peak_flops_per_s", est.flops_per_s, "FLOP/s", "info", "estimated", est.method)
    sources = {
        "timer": PerfCounterTimer.method,
        "memory": "procfs VmHWM + sampled RSS",
        "energy": "RAPL energy_uj" if not rapl_problem else "estimate (no RAPL)",
        "compute": "MFU against " + est.method,
    }
    return Backend("cpu", PerfCounterTimer(), probes, _no_sync, peak, sources, notices)

"""Where the plugin's fixed cost per measurement goes: `efficiency.measure` of a no-op, with the
probe and metric functions wrapped by a timer, 8 times in one process (the first is printed
apart: it carries the process's first calls).

    python -m pytest benchmarks/side_by_side/fixed_cost_tests.py -q -s -p no:cacheprovider \
        --efficiency-calibrate-every=off --efficiency-threads=1
"""

import statistics
import time

import pytest

import pytest_efficientllm.glue.fixture as fixture
import pytest_efficientllm.measuring.meter as measure
import pytest_efficientllm.telemetry.procfs as procfs
import pytest_efficientllm.telemetry.sampler as sampler

PHASES: dict[str, list[float]] = {}


def _timed(owner, name: str, label: str) -> None:
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            PHASES.setdefault(label, []).append((time.perf_counter() - t0) * 1e3)

    setattr(owner, name, wrapper)


for _cls in (procfs.ProcessMemoryProbe, procfs.ProcessCpuTimeProbe):
    for _name in ("open", "close", "readings"):
        _timed(_cls, _name, f"{_cls.__name__}.{_name}")
_timed(sampler.Sampler, "start", "Sampler.start (inside ProcessMemoryProbe.open)")
_timed(sampler.Sampler, "stop", "Sampler.stop (inside ProcessMemoryProbe.close)")
_timed(measure.Meter, "run_window", "Meter.run_window (probes + 20 no-op rounds)")
_timed(fixture.Efficiency, "_finish", "Efficiency._finish (derive_metrics, record)")
_timed(fixture.Efficiency, "measure", "efficiency.measure, whole call")


@pytest.mark.efficiency(rounds=20, warmup=2, flops=False)
@pytest.mark.parametrize("i", range(8))
def test_noop(i, efficiency):
    efficiency.measure(lambda: None)


def test_report():
    print("\nms per call: first call | median (min .. max) of the other 7")
    for label, values in PHASES.items():
        rest = values[1:]
        print(f"  {label}: {values[0]:.3f} | {statistics.median(rest):.3f} ({min(rest):.3f} .. {max(rest):.3f})")

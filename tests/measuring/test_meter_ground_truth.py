"""The measuring loop against ground truth: known bytes, known FLOPs, known durations."""

from __future__ import annotations

import dataclasses
import time

import pytest
import torch

from pytest_efficientllm.core.metrics import counted, estimated, measured, unavailable
from pytest_efficientllm.measuring.backends import cpu_backend
from pytest_efficientllm.measuring.meter import (
    MeasureProtocol,
    Meter,
    WindowResult,
    Work,
    derive_metrics,
)
from pytest_efficientllm.telemetry.base import Probe, TelemetryError

MiB = 2**20
NO_WORK = Work()
THREE_ROUNDS = MeasureProtocol(rounds=3, warmup=0)


@pytest.fixture(scope="module")
def meter() -> Meter:
    return Meter(cpu_backend(threads=1))


def measure(meter: Meter, fn, work: Work = NO_WORK, protocol: MeasureProtocol = THREE_ROUNDS):
    flops = meter.flops_of(fn, work)
    result = meter.run_window(fn, protocol)
    return derive_metrics(result, work, flops, meter.backend)


def test_a_tensor_of_known_size_appears_in_the_window_peak(meter: Meter) -> None:
    # 128 MiB is far above glibc's mmap threshold, so the allocation is fresh pages that
    # torch.ones touches. VmHWM counts the whole process, so other pages touched or
    # released in the window move it too: allowed 1 MiB below (pages released) and
    # 4 MiB above (allocator headers, page rounding, interpreter work).
    n_bytes = 128 * MiB

    def allocate() -> None:
        t = torch.ones(n_bytes // 4, dtype=torch.float32)
        assert t.numel() * t.element_size() == n_bytes

    metrics = measure(meter, allocate, Work(count_flops=False))
    delta = metrics["peak_memory_delta"]
    assert delta.source == "measured" and delta.unit == "B"
    assert n_bytes - MiB <= delta.value <= n_bytes + 4 * MiB, delta


def test_a_matmul_counts_exactly_2mnk_flops(meter: Meter) -> None:
    m, n, k = 96, 80, 64
    a, b = torch.randn(m, k), torch.randn(k, n)
    metrics = measure(meter, lambda: a @ b)
    assert metrics["flops"].value == 2 * m * n * k
    assert metrics["flops"].source == "counted"
    assert metrics["flops_per_s"].value == pytest.approx(2 * m * n * k / metrics["AL"].value)


def test_a_workload_of_known_duration_is_measured_within_tolerance(meter: Meter) -> None:
    # sleep() only guarantees a lower bound; 10 ms of slack covers scheduler wake-up on a busy CI box.
    metrics = measure(
        meter, lambda: time.sleep(0.05), Work(tokens=10, count_flops=False), MeasureProtocol(rounds=4, warmup=0)
    )
    al = metrics["AL"]
    assert len(al.samples) == 4
    assert all(0.05 <= s < 0.06 for s in al.samples), al.samples
    assert metrics["tokens_per_s"].value == pytest.approx(10 / al.value)
    assert metrics["AT"].unit == "tok/s"


def test_rounds_continue_until_min_time_is_met(meter: Meter) -> None:
    metrics = measure(
        meter, lambda: time.sleep(0.01), Work(count_flops=False), MeasureProtocol(rounds=1, warmup=0, min_time_s=0.1)
    )
    assert metrics["rounds"].value >= 9


def test_study_throughput_forms_follow_the_workload_kind(meter: Meter) -> None:
    work = Work(tokens=100, samples=4, params=1000, kind="pretrain", count_flops=False)
    metrics = measure(meter, lambda: time.sleep(0.01), work)
    assert metrics["AT"].unit == "tok/param/s"
    assert metrics["AT"].value == pytest.approx(100 / 1000 / metrics["AL"].value)
    work = Work(tokens=100, samples=4, params=1000, kind="finetune", count_flops=False)
    metrics = measure(meter, lambda: time.sleep(0.01), work)
    assert metrics["AT"].unit == "samples/param/s"
    assert metrics["AT"].value == pytest.approx(4 / 1000 / metrics["AL"].value)


@pytest.mark.parametrize(
    ("work", "what"),
    [
        (Work(params=1000, kind="pretrain", count_flops=False), "tokens"),  # no count
        (Work(tokens=100, kind="pretrain", count_flops=False), "tokens"),  # no params
        (Work(tokens=100, params=1000, kind="finetune", count_flops=False), "samples"),  # tokens, not samples
    ],
)
def test_a_study_throughput_without_its_count_or_params_is_unavailable_saying_what_to_pass(
    meter: Meter, work: Work, what: str
) -> None:
    at = measure(meter, lambda: None, work, MeasureProtocol(rounds=2, warmup=0))["AT"]
    assert at.value is None and at.note == f"pass {what}= and params= to measure it"


def test_cpu_energy_without_rapl_is_an_estimate_that_names_its_model(meter: Meter) -> None:
    if not meter.backend.notices or "RAPL" not in " ".join(meter.backend.notices):
        pytest.skip("this machine exposes RAPL; the estimate path is covered in test_rapl")
    metrics = measure(meter, lambda: sum(range(200_000)), Work(tokens=1, count_flops=False))
    for name in ("energy", "AEC", "energy_per_token"):
        assert metrics[name].source == "estimated"
        assert "estimate" in metrics[name].method and "W per busy core" in metrics[name].method
    assert metrics["energy"].value > 0


def test_unavailable_metrics_are_none_with_a_reason_never_zero(meter: Meter) -> None:
    metrics = measure(meter, lambda: None, Work(count_flops=False))
    for name in ("PCU", "samples_per_s", "flops"):
        assert metrics[name].value is None
        assert metrics[name].note


def test_each_round_carries_its_cpu_seconds_and_sleep_costs_none(meter: Meter) -> None:
    metrics = measure(meter, lambda: time.sleep(0.02), Work(count_flops=False), MeasureProtocol(rounds=3, warmup=0))
    per_round = metrics["cpu_time_per_round"]
    assert len(per_round.samples) == 3
    # A sleeping round waits 20 ms of wall clock but burns (almost) no CPU.
    assert all(s < 0.005 for s in per_round.samples), per_round.samples
    metrics = measure(meter, lambda: sum(range(300_000)), Work(count_flops=False), MeasureProtocol(rounds=3, warmup=0))
    per_round, wall = metrics["cpu_time_per_round"], metrics["AL"]
    # A pure-Python loop on one thread: its CPU seconds are at most its wall seconds.
    assert all(0 < c <= w * 1.05 + 1e-4 for c, w in zip(per_round.samples, wall.samples))


def test_cyclic_garbage_left_by_set_up_is_freed_before_the_first_round(meter: Meter) -> None:
    # A reference cycle holding a finaliser: only the cyclic collector can free it. It must go
    # before the window's first round starts, not inside a round as this workload's cost.
    events: list[str] = []

    class Node:
        def __init__(self) -> None:
            self.other = self

        def __del__(self) -> None:
            events.append("freed")

    Node()
    result = meter.run_window(lambda: events.append("round"), MeasureProtocol(rounds=2, warmup=0))
    assert events[:1] == ["freed"], events
    assert events.count("round") == len(result.latencies_s) >= 2


@pytest.mark.parametrize("output_tokens", [5, 2, 1, None])
def test_tpot_is_the_time_after_the_first_token_per_later_token_and_needs_two_tokens(
    meter: Meter, output_tokens: int | None
) -> None:
    # Two generate rounds of 0.5 and 0.7 s whose first token came at 0.1 s: with 5 tokens the
    # 4 later ones took 0.4 and 0.6 s, 0.1 and 0.15 s each; with 2 tokens, the one later token did.
    window = WindowResult([0.5, 0.7], 1.2, {}, ttft_s=[0.1, 0.1], output_tokens=output_tokens)
    metrics = derive_metrics(window, Work(count_flops=False), counted("flops", 0.0, "none"), meter.backend)
    assert metrics["TTFT"].value == pytest.approx(0.1)
    if output_tokens == 5:
        assert metrics["TPOT"].samples == pytest.approx((0.1, 0.15)) and metrics["TPOT"].value == pytest.approx(0.125)
    elif output_tokens == 2:
        assert metrics["TPOT"].samples == pytest.approx((0.4, 0.6)) and metrics["TPOT"].value == pytest.approx(0.5)
    else:  # one token (or an uncounted output) has no time per later token
        assert metrics["TPOT"].value is None and metrics["TPOT"].note == "needs at least 2 generated tokens"


def _energy_window(readings: dict, wall_s: float = 1.2) -> dict:
    # Two rounds of 4 tokens in a 1.2 s window.
    window = WindowResult([0.5, 0.5], wall_s, readings)
    return derive_metrics(window, Work(tokens=4, count_flops=False), counted("flops", 0.0, "none"), cpu_backend(1))


def test_energy_per_token_and_its_net_of_idle_follow_from_the_window_s_joules() -> None:
    # 10 J over 1.2 s and 8 tokens, with the GPU drawing 2 W idle: 2.4 J of it is idle.
    metrics = _energy_window(
        {"energy": measured("energy", 10.0, "counter"), "idle_power": measured("idle_power", 2.0, "at start-up")}
    )
    assert metrics["energy_per_token"].value == pytest.approx(10 / 8)
    assert metrics["energy_per_token_net"].value == pytest.approx((10 - 2 * 1.2) / 8)
    assert metrics["AEC"].value == pytest.approx(10 / 1.2) and metrics["AEC_net"].value == pytest.approx(10 / 1.2 - 2)
    assert metrics["energy_per_round"].value == pytest.approx(5.0)


def test_net_energy_is_unavailable_with_the_reason_and_absent_where_no_idle_power_was_measured() -> None:
    lost = unavailable("energy", "measured", "counter", "the counter went backwards")
    idle = measured("idle_power", 2.0, "at start-up")
    metrics = _energy_window({"energy": lost, "idle_power": idle})
    for name in ("AEC_net", "energy_per_token_net"):
        assert metrics[name].value is None and metrics[name].note == "the counter went backwards"
    unknown_idle = unavailable("idle_power", "measured", "at start-up", "no update in 2 s")
    metrics = _energy_window({"energy": measured("energy", 10.0, "counter"), "idle_power": unknown_idle})
    assert metrics["AEC"].value == pytest.approx(10 / 1.2)
    for name in ("AEC_net", "energy_per_token_net"):
        assert metrics[name].value is None and metrics[name].note == "idle power unknown: no update in 2 s"
    # No idle power measured (RAPL, the CPU estimate): no net figure at all, known or not.
    for readings in ({"energy": lost}, {"energy": measured("energy", 10.0, "counter")}):
        metrics = _energy_window(readings)
        assert "AEC_net" not in metrics and "energy_per_token_net" not in metrics


def test_a_window_of_no_wall_time_has_no_average_power_and_says_why() -> None:
    idle = measured("idle_power", 2.0, "at start-up")
    metrics = _energy_window({"energy": measured("energy", 10.0, "counter"), "idle_power": idle}, wall_s=0.0)
    for name in ("AEC", "AEC_net"):
        assert metrics[name].value is None and metrics[name].note == "the window's wall time was 0 s"
    assert metrics["energy_per_token"].value == pytest.approx(10 / 8)  # joules per token need no time


def test_latency_percentiles_follow_numpys_linear_rule() -> None:
    from pytest_efficientllm.measuring.meter import _percentiles

    assert _percentiles(tuple(float(x) for x in range(1, 102)), (50, 90, 99)) == [51.0, 91.0, 100.0]
    assert _percentiles((0.25,), (50, 99)) == [0.25, 0.25]
    assert _percentiles((), (50,)) == [None]
    rounds = tuple(float(x) for x in torch.rand(37, generator=torch.Generator().manual_seed(1)))
    expected = torch.quantile(
        torch.tensor(rounds, dtype=torch.float64), torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64)
    )
    assert _percentiles(rounds, (50, 90, 99)) == pytest.approx(expected.tolist(), rel=1e-12)


def test_the_window_s_cpu_time_is_the_rounds_not_the_other_probes_opening_and_closing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The memory probe made to cost 30 ms of CPU at open and again at close (as NVML reads at a
    # GPU window's edges do): three sleeping rounds cost the process almost no CPU of their own.
    from pytest_efficientllm.telemetry.procfs import ProcessMemoryProbe

    def burn(seconds: float) -> None:
        start = time.thread_time()
        while time.thread_time() - start < seconds:
            pass

    for name in ("open", "close"):
        real = getattr(ProcessMemoryProbe, name)

        def costly(self, real=real) -> None:
            burn(0.03)
            real(self)

        monkeypatch.setattr(ProcessMemoryProbe, name, costly)
    metrics = measure(Meter(cpu_backend(threads=1)), lambda: time.sleep(0.01))
    assert metrics["cpu_time"].value < 0.01


class ProbeRecordingClose(Probe):
    """Test double of a telemetry probe: says when it was closed; `fails`: its close raises that."""

    def __init__(self, name: str, closed: list[str], fails: Exception | None = None) -> None:
        self.name, self.closed, self.fails = name, closed, fails

    def open(self) -> None:
        pass

    def close(self) -> None:
        self.closed.append(self.name)
        if self.fails is not None:
            raise self.fails

    def readings(self, wall_s: float) -> list:
        return []


def _meter_with(probes: list[Probe]) -> Meter:
    return Meter(dataclasses.replace(cpu_backend(threads=1), make_probes=lambda: list(probes)))


def test_a_probe_that_fails_to_close_fails_the_window_and_every_other_probe_is_still_closed() -> None:
    # An NVML error at close means the window's readings are wrong: never a silent pass. The first
    # error wins, and no sampler thread may outlive the window.
    closed: list[str] = []
    first, second = TelemetryError("NVML failed at close"), TelemetryError("a later probe failed too")
    probes = [
        ProbeRecordingClose("a", closed, second),
        ProbeRecordingClose("b", closed, first),
        ProbeRecordingClose("c", closed),
    ]
    with pytest.raises(TelemetryError, match="NVML failed at close"):
        _meter_with(probes).run_window(lambda: None, THREE_ROUNDS)
    assert closed == ["c", "b", "a"]  # in reverse, every one


def test_the_workloads_own_error_is_the_one_raised_when_a_probe_also_fails_to_close() -> None:
    closed: list[str] = []
    probes = [ProbeRecordingClose("a", closed, TelemetryError("NVML failed at close"))]

    def workload() -> None:
        raise ValueError("the model's own bug")

    with pytest.raises(ValueError, match="the model's own bug"):
        _meter_with(probes).run_window(workload, THREE_ROUNDS)
    assert closed == ["a"]


def test_mfu_is_the_counted_flops_per_second_over_the_backends_peak() -> None:
    # Four rounds of 10 ms, 1 MFLOP each: 100 MFLOP/s achieved; against a 1 GFLOP/s peak, 10%.
    peak = estimated("peak_flops_per_s", 1e9, "estimate: a chosen peak for this test")
    backend = dataclasses.replace(cpu_backend(threads=1), peak_flops=peak)
    result = WindowResult([0.01] * 4, 0.04, {})
    metrics = derive_metrics(result, Work(flops=10**6), counted("flops", 1e6, "given by the test"), backend)
    assert metrics["flops_per_s"].value == pytest.approx(1e8)
    assert metrics["MFU"].value == pytest.approx(0.1) and metrics["MFU"].source == "estimated"
    assert metrics["peak_flops_per_s"] is peak
    # Without a peak there is no utilisation to state.
    no_peak = dataclasses.replace(backend, peak_flops=None)
    assert "MFU" not in derive_metrics(result, Work(flops=10**6), counted("flops", 1e6, "given"), no_peak)

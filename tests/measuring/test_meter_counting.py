"""`Meter.count`: the counted cost of a workload from its untimed counting run(s).

What must hold: the counted metrics come from one run under both counters (two when the
workload showed data-dependent operators), switching counting off makes them unavailable
with the reason, a workload's own error propagates as itself before any round is timed, a
failure of the counters alone makes the metrics unavailable, and the counts of a model are
the same in fresh processes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

from pytest_efficientllm.measuring.backends import cpu_backend
from pytest_efficientllm.measuring.meter import COUNTING_OFF, MeasureProtocol, Meter, Work, derive_metrics
from tests.helpers import REPO_ROOT
from tests.helpers.fault_harness import RECORDS_CONFTEST, recorded

COUNTED = ("bytes_accessed", "arithmetic_intensity", "tensor_peak_bytes", "allocations", "allocated_bytes", "operators")


@pytest.fixture(scope="module")
def meter() -> Meter:
    return Meter(cpu_backend(threads=1))


def test_a_matmul_is_counted_with_its_flops_in_one_run(meter: Meter) -> None:
    m, k, n = 64, 32, 16
    a, b = torch.randn(m, k), torch.randn(k, n)
    cost = meter.count(lambda: a @ b, Work())
    assert cost.flops.value == 2 * m * n * k and cost.flops.method == "torch FlopCounterMode, one untimed run"
    values = {name: cost.metrics[name].value for name in COUNTED}
    assert values == {
        "bytes_accessed": (m * k + k * n + m * n) * 4,
        "arithmetic_intensity": 2 * m * n * k / ((m * k + k * n + m * n) * 4),
        "tensor_peak_bytes": m * n * 4,
        "allocations": 1,
        "allocated_bytes": m * n * 4,
        "operators": 1,
    }
    assert all(cost.metrics[name].source == "counted" for name in COUNTED)
    assert cost.details["runs"] == 1 and cost.details["top_by_bytes"] == [["aten.mm", (m * k + k * n + m * n) * 4]]
    assert "synchronizations" not in cost.metrics  # a CPU backend: not recorded, not 0
    result = meter.run_window(lambda: a @ b, MeasureProtocol(rounds=2, warmup=0))
    derived = derive_metrics(result, Work(), cost.flops, meter.backend, cost)
    assert derived["bytes_accessed"] == cost.metrics["bytes_accessed"] and derived["flops"] == cost.flops


def test_switching_counting_off_makes_every_counted_metric_unavailable_with_the_reason(meter: Meter) -> None:
    calls = []
    cost = meter.count(lambda: calls.append(1), Work(count_flops=False))
    assert calls == []
    assert cost.flops.value is None and "switched off" in cost.flops.note
    for name in COUNTED:
        assert cost.metrics[name].value is None and cost.metrics[name].note == COUNTING_OFF
    given = meter.count(lambda: calls.append(1), Work(flops=10))
    assert calls == [] and given.flops.value == 10
    assert given.metrics["bytes_accessed"].value is None and "flops= was given" in given.metrics["bytes_accessed"].note


class WorkloadFault(Exception):
    """The workload's own error."""


def test_a_workload_error_propagates_as_itself_with_its_traceback(meter: Meter) -> None:
    calls = []

    def broken() -> None:
        calls.append(1)
        torch.ones(4) @ torch.ones(4)
        raise WorkloadFault("the workload's own")

    with pytest.raises(WorkloadFault, match="the workload's own") as caught:
        meter.count(broken, Work())
    frames = [frame.name for frame in traceback.extract_tb(caught.value.__traceback__)]
    assert frames[-1] == "broken"
    assert caught.value.__context__ is None  # not raised while handling the counting run's copy of it
    assert len(calls) == 2  # the counting run, then the same call without the counters


def test_a_failure_of_the_counters_alone_makes_the_counted_metrics_unavailable(meter: Meter) -> None:
    def refuses_dispatch_modes() -> None:  # stands for a tensor subclass that cannot run under a mode
        if _get_current_dispatch_mode_stack():
            raise RuntimeError("no dispatch mode, please")
        torch.ones(4).sum()

    cost = meter.count(refuses_dispatch_modes, Work())
    for name in COUNTED:
        metric = cost.metrics[name]
        assert metric.value is None and "no dispatch mode, please" in metric.note, metric
    assert cost.flops.value is None


def test_a_single_pass_meter_calls_the_workload_once_whatever_happens() -> None:
    # The ranks of a distributed test: each must call the workload (and its collectives) equally often.
    meter = Meter(cpu_backend(threads=1))
    meter.single_pass = True
    calls = []

    def broken() -> None:
        calls.append(1)
        raise WorkloadFault("in one rank")

    cost = meter.count(broken, Work())
    assert calls == [1] and "in one rank" in cost.metrics["bytes_accessed"].note
    x = torch.randn(1000)
    masked = meter.count(lambda: x[torch.rand(1000) > 0.5], Work())
    assert masked.details["runs"] == 1 and masked.details["variation"] == "not checked: one counting run per rank"


def test_a_meta_workload_is_counted(meter: Meter) -> None:
    a, b = torch.empty(256, 128, device="meta"), torch.empty(128, 64, device="meta")
    cost = meter.count(lambda: a @ b, Work())
    assert cost.flops.value == 2 * 256 * 64 * 128
    assert cost.metrics["bytes_accessed"].value == (256 * 128 + 128 * 64 + 256 * 64) * 4
    assert cost.metrics["tensor_peak_bytes"].value == 256 * 64 * 4


def test_a_count_that_varies_run_to_run_is_reported_as_varying(meter: Meter) -> None:
    torch.manual_seed(0)
    x = torch.randn(10_000)

    def random_mask() -> torch.Tensor:
        return torch.masked_select(x, torch.rand(10_000) > 0.5)

    cost = meter.count(random_mask, Work())
    assert cost.details["runs"] == 2 and cost.details["data_dependent"] == ["aten.masked_select"]
    varying = cost.metrics["bytes_accessed"]
    assert len(set(varying.samples)) == 2 and varying.value == max(varying.samples)
    assert "varies run to run" in varying.note
    assert cost.metrics["operators"].samples == ()  # the same operators, different shapes


def test_a_data_dependent_workload_whose_count_does_not_vary_is_counted_twice_and_plain(meter: Meter) -> None:
    x = torch.arange(100.0)
    cost = meter.count(lambda: x[x > 49.5], Work())
    assert cost.details["runs"] == 2
    assert cost.metrics["bytes_accessed"].samples == ()


def test_in_a_pytest_run_the_counted_cost_is_recorded_and_a_raising_workload_times_no_round(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(RECORDS_CONFTEST)
    pytester.makepyfile(
        """
        import pytest, torch

        calls = []

        @pytest.mark.efficiency(rounds=3, warmup=1)
        def test_mlp(efficiency):
            x, w = torch.randn(8, 16, dtype=torch.bfloat16), torch.randn(16, 16, dtype=torch.bfloat16)
            efficiency.measure(lambda: (x @ w).relu())

        @pytest.mark.efficiency(rounds=3, warmup=1, flops=False)
        def test_off(efficiency):
            efficiency.measure(lambda: torch.ones(4) + 1)

        @pytest.mark.efficiency(rounds=5, warmup=1)
        def test_raises(efficiency):
            def work():
                calls.append(1)
                if len(calls) > 1:  # the warm-up passes; the counting run is the first to raise
                    raise ValueError("broken workload")
            efficiency.measure(work)

        def test_calls():
            assert len(calls) == 3  # warm-up, the counting run and its check without the counters: no round
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--efficiency-calibrate-every=off")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*ValueError: broken workload*"])
    records = recorded(pytester)
    mlp = records["test_mlp"]
    assert mlp["metrics"]["bytes_accessed"]["value"] == (8 * 16 + 16 * 16 + 8 * 16 + 8 * 16 + 8 * 16) * 2
    assert mlp["metrics"]["bytes_share:bf16"]["value"] == 1.0
    assert mlp["settings"]["counted_cost"]["top_by_flops"] == [["aten.mm", 2 * 8 * 16 * 16]]
    off = records["test_off"]["metrics"]
    assert off["bytes_accessed"]["value"] is None and off["bytes_accessed"]["note"] == COUNTING_OFF


# Counts the forward of a small transformers model built from a seeded config; prints the counted metrics.
FORWARD = """
import json, torch
from transformers import LlamaConfig, LlamaForCausalLM
from pytest_efficientllm.measuring.backends import cpu_backend
from pytest_efficientllm.measuring.meter import Meter, Work

torch.manual_seed(0)
torch.set_num_threads(1)
config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
model = LlamaForCausalLM(config).eval()
ids = torch.arange(24).unsqueeze(0) % 128

def forward():
    with torch.no_grad():
        return model(ids).logits

forward()
cost = Meter(cpu_backend(threads=1)).count(forward, Work())
print(json.dumps({"metrics": {n: [m.value, m.samples] for n, m in sorted(cost.metrics.items())},
                  "flops": cost.flops.value, "details": cost.details}))
"""


def test_the_counted_cost_of_a_model_forward_is_the_same_in_three_fresh_processes() -> None:
    def one(_: int) -> dict:
        done = subprocess.run(
            [sys.executable, "-c", FORWARD],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO_ROOT,
            env={**__import__("os").environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"},
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    with ThreadPoolExecutor(max_workers=3) as pool:
        first, *others = list(pool.map(one, range(3)))
    assert first["metrics"]["bytes_accessed"][0] > 0 and first["flops"] > 0
    assert first["metrics"]["operators"][0] > 50
    for other in others:
        assert other == first

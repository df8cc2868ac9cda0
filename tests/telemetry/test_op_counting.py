"""The operator counter (telemetry/op_counting.py) against ground truth computed by hand.

Every expected number below is derived from the shapes and dtypes alone: bytes are
numel x itemsize of what an operator reads and writes, FLOPs 2·M·N·K for a matmul.
"""

from __future__ import annotations

import gc
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch.utils._pytree import tree_map

from pytest_efficientllm.telemetry.op_counting import count_run, counted_cost
from pytest_efficientllm.telemetry.op_tally import OpTally, _plan, classify_transfer, dtype_name

aten = torch.ops.aten


def tally_of(fn) -> OpTally:
    run = count_run(fn)
    assert run.tally.problem is None, run.tally.problem
    return run.tally


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64])
def test_an_in_place_add_reads_both_tensors_and_writes_one_once(dtype: torch.dtype) -> None:
    a, b = torch.ones(3, 5, dtype=dtype), torch.ones(3, 5, dtype=dtype)
    size = a.numel() * a.element_size()
    t = tally_of(lambda: a.add_(b))
    assert (t.bytes_read, t.bytes_written, t.bytes_accessed) == (2 * size, size, 3 * size)
    assert (t.allocations, t.allocated_bytes, t.tensor_peak_bytes, t.operators) == (0, 0, 0, 1)
    assert dict(t.bytes_by_dtype) == {dtype_name(dtype): 3 * size}


def test_a_matmul_reads_its_inputs_writes_its_output_and_counts_flopcountermodes_flops() -> None:
    m, k, n = 32, 48, 16
    a, b = torch.randn(m, k, dtype=torch.bfloat16), torch.randn(k, n, dtype=torch.bfloat16)
    run = count_run(lambda: a @ b)
    t = run.tally
    assert t.bytes_read == (m * k + k * n) * 2 and t.bytes_written == m * n * 2
    assert run.flops == t.flops == 2 * m * n * k
    assert (t.allocations, t.allocated_bytes, t.tensor_peak_bytes) == (1, m * n * 2, m * n * 2)
    cost = counted_cost([run], transfers=False)
    shares = {name: metric.value for name, metric in cost.metrics.items() if ":" in name}
    assert shares == {"bytes_share:bf16": 1.0, "flops_share:bf16": 1.0}
    assert cost.metrics["arithmetic_intensity"].value == 2 * m * n * k / ((m * k + k * n + m * n) * 2)
    assert cost.details["top_by_flops"] == [["aten.mm", 2 * m * n * k]]


def test_a_chain_of_views_moves_no_bytes_and_allocates_nothing() -> None:
    x = torch.randn(4, 6)

    def views() -> torch.Tensor:
        y = x.view(24).view(6, 4).t().transpose(0, 1).unsqueeze(0).expand(3, 6, 4).permute(2, 0, 1)
        y = y[1:, :, :2].detach()
        y = aten.alias(aten._unsafe_view(x, [2, 12]))
        return y.as_strided((2, 2), (1, 1))

    t = tally_of(views)
    assert (t.bytes_accessed, t.allocations, t.tensor_peak_bytes) == (0, 0, 0)
    assert t.operators >= 12  # every view is an operator executed, at no cost in bytes


def test_an_upcast_reads_2n_and_writes_4n() -> None:
    n = 1000
    x = torch.ones(n, dtype=torch.bfloat16)
    run = count_run(lambda: x.float())
    assert (run.tally.bytes_read, run.tally.bytes_written) == (2 * n, 4 * n)
    shares = counted_cost([run], transfers=False).metrics
    assert shares["bytes_share:bf16"].value == pytest.approx(1 / 3)
    assert shares["bytes_share:fp32"].value == pytest.approx(2 / 3)


def test_an_expanded_input_reads_only_the_storage_it_spans() -> None:
    x, bias = torch.ones(4, 100), torch.ones(100)
    t = tally_of(lambda: x + bias.expand(4, 100))
    assert (t.bytes_read, t.bytes_written) == ((400 + 100) * 4, 400 * 4)


def test_a_tensor_passed_twice_is_read_once() -> None:
    x = torch.ones(100)
    t = tally_of(lambda: x * x)
    assert (t.bytes_read, t.bytes_written) == (400, 400)


def test_copy_and_out_arguments_are_written_not_read() -> None:
    src, dst, other = torch.ones(100), torch.zeros(100), torch.ones(100)
    assert tally_of(lambda: dst.copy_(src)).bytes_accessed == 2 * 400
    assert tally_of(lambda: dst.zero_()).bytes_accessed == 400
    t = tally_of(lambda: torch.add(src, other, out=dst))
    assert (t.bytes_read, t.bytes_written, t.allocations) == (800, 400, 0)
    # out= right after the positional arguments (mm.out(self, mat2, *, out)).
    a, b, c = torch.ones(10, 10), torch.ones(10, 10), torch.zeros(10, 10)
    t = tally_of(lambda: torch.mm(a, b, out=c))
    assert (t.bytes_read, t.bytes_written, t.allocations, t.flops) == (800, 400, 0, 2 * 10**3)


def test_factories_count_what_they_write_and_allocate() -> None:
    x = torch.ones(64)
    empty = tally_of(lambda: torch.empty(64))
    assert (empty.bytes_accessed, empty.allocations, empty.allocated_bytes) == (0, 1, 256)
    assert tally_of(lambda: torch.zeros(64)).bytes_accessed == 256
    assert tally_of(lambda: torch.full((64,), 2.0)).bytes_accessed == 256
    assert tally_of(lambda: torch.arange(64)).bytes_accessed == 64 * 8
    assert tally_of(lambda: torch.rand(64)).bytes_accessed == 256
    assert tally_of(lambda: torch.empty_like(x)).bytes_accessed == 0
    assert tally_of(lambda: torch.zeros_like(x)).bytes_accessed == 256  # reads only x's metadata


def test_peak_of_k_tensors_held_together_and_of_k_freed_one_by_one() -> None:
    k, n = 5, 1024

    def held() -> None:
        tensors = [torch.ones(n) for _ in range(k)]
        del tensors

    def one_at_a_time() -> None:
        for _ in range(k):
            torch.ones(n)

    together = tally_of(held)
    assert (together.allocations, together.allocated_bytes, together.tensor_peak_bytes) == (k, k * n * 4, k * n * 4)
    assert together.bytes_written == k * n * 4
    serial = tally_of(one_at_a_time)
    assert (serial.allocations, serial.allocated_bytes, serial.tensor_peak_bytes) == (k, k * n * 4, n * 4)


def test_a_storage_that_outlives_the_run_stays_in_the_peak_and_is_not_followed_after() -> None:
    kept: list[torch.Tensor] = []
    t = tally_of(lambda: kept.append(torch.ones(256)))
    assert (t.tensor_peak_bytes, t.live_bytes) == (1024, 1024)
    kept.clear()
    gc.collect()
    assert t.live_bytes == 1024  # the run is over: frees after it are not this run's


def test_what_the_run_leaves_alive_is_retained_and_its_dropped_result_and_cycles_are_not() -> None:
    kept: list[torch.Tensor] = []

    def leaks_one_per_call() -> torch.Tensor:
        out = torch.ones(1024) * 2  # two 4 KiB storages: the ones and the result
        kept.append(out[:256])  # a view keeps its whole storage alive
        return torch.ones(512)  # the result, dropped by the caller

    assert tally_of(leaks_one_per_call).retained_bytes == 4096

    class Cycle:
        pass

    def cyclic_garbage() -> None:
        node = Cycle()
        node.me, node.tensor = node, torch.ones(1024)  # type: ignore[attr-defined]

    assert tally_of(cyclic_garbage).retained_bytes == 0
    metrics = counted_cost([count_run(leaks_one_per_call)], transfers=False).metrics
    assert metrics["retained_tensor_bytes"].value == 4096
    assert metrics["retained_tensor_bytes"].unit == "B" and metrics["retained_tensor_bytes"].source == "counted"


def test_meta_tensors_are_counted_from_their_shapes() -> None:
    m, k, n = 128, 64, 32
    a, b = torch.empty(m, k, device="meta"), torch.empty(k, n, device="meta")
    run = count_run(lambda: (a @ b).relu())
    t = run.tally
    assert run.flops == t.flops == 2 * m * n * k
    assert t.bytes_read == (m * k + k * n + m * n) * 4 and t.bytes_written == 2 * m * n * 4
    assert (t.allocations, t.allocated_bytes) == (2, 2 * m * n * 4)
    cpu = count_run(lambda: (torch.ones(m, k) @ torch.ones(k, n)).relu()).tally
    assert cpu.bytes_accessed == t.bytes_accessed + (m * k + k * n) * 4  # plus the two ones() it writes


def test_data_dependent_operators_are_named() -> None:
    x = torch.randn(100)
    assert tally_of(lambda: x[x > 0]).data_dependent == {"aten.index"}
    assert tally_of(lambda: x.nonzero()).data_dependent == {"aten.nonzero"}
    assert tally_of(lambda: x.sum().item()).data_dependent == {"aten._local_scalar_dense"}
    assert tally_of(lambda: x[torch.arange(3)] @ torch.ones(3)).data_dependent == set()
    # Repeats given as a tensor set the output's length from the data, unless output_size= says it.
    repeats, values = torch.tensor([1, 2, 0, 1]), torch.arange(4)
    assert tally_of(lambda: values.repeat_interleave(repeats)).data_dependent == {"aten.repeat_interleave"}
    assert tally_of(lambda: values.repeat_interleave(repeats, output_size=4)).data_dependent == set()
    assert tally_of(lambda: values.repeat_interleave(2)).data_dependent == set()


def test_profiler_ranges_are_instrumentation_not_operators() -> None:
    x = torch.ones(8)

    def ranged() -> torch.Tensor:
        with torch.profiler.record_function("step"):
            return x + 1

    t = tally_of(ranged)
    assert (t.operators, t.not_counted, t.data_dependent) == (1, {}, set())


def test_dtype_names_are_short() -> None:
    names = [dtype_name(d) for d in (torch.bfloat16, torch.float32, torch.float16, torch.int8, torch.int64, torch.bool)]
    assert names == ["bf16", "fp32", "fp16", "int8", "int64", "bool"]
    assert dtype_name(torch.float8_e4m3fn) == "fp8_e4m3fn"


# -- CUDA only: copies and synchronizations ---------------------------------------------------


def test_copies_between_host_and_device_are_classified() -> None:
    assert classify_transfer("cpu", "cuda", False) == (1, 0, 0)
    assert classify_transfer("cuda", "cpu", False) == (0, 1, 1)  # a blocking copy to the host waits
    assert classify_transfer("cuda", "cpu", True) == (0, 1, 0)
    assert classify_transfer("cuda", "cuda", False) == (0, 0, 0)
    assert classify_transfer("cpu", "meta", False) == (0, 0, 0)


def _on(device: str) -> Any:
    return SimpleNamespace(device=SimpleNamespace(type=device))


def test_transfers_and_synchronizations_are_counted_per_operator() -> None:
    # No GPU here: the per-operator rule is fed tensors that only say where they live.
    tally = OpTally(transfers=True)
    tally._transfers(_plan(aten._to_copy.default), (_on("cpu"),), {}, [_on("cpu")], [_on("cuda")], False)
    tally._transfers(_plan(aten._to_copy.default), (_on("cuda"),), {}, [_on("cuda")], [_on("cpu")], False)
    tally._transfers(
        _plan(aten.copy_.default), (_on("cpu"), _on("cuda"), True), {}, [_on("cpu"), _on("cuda")], [], False
    )
    tally._transfers(_plan(aten._local_scalar_dense.default), (_on("cuda"),), {}, [_on("cuda")], [], True)
    tally._transfers(_plan(aten._local_scalar_dense.default), (_on("cpu"),), {}, [_on("cpu")], [], True)
    assert (tally.host_to_device, tally.device_to_host, tally.synchronizations) == (1, 2, 2)


def test_a_copy_left_at_its_default_non_blocking_is_a_blocking_one() -> None:
    # `dst.copy_(src)` reaches aten with two arguments; non_blocking defaults to False.
    tally = OpTally(transfers=True)
    cpu_from_cuda = ((_on("cpu"), _on("cuda")), [_on("cpu"), _on("cuda")])
    tally._transfers(_plan(aten.copy_.default), cpu_from_cuda[0], {}, cpu_from_cuda[1], [], False)
    assert (tally.host_to_device, tally.device_to_host, tally.synchronizations) == (0, 1, 1)
    tally._transfers(_plan(aten.copy_.default), cpu_from_cuda[0], {"non_blocking": True}, cpu_from_cuda[1], [], False)
    assert (tally.host_to_device, tally.device_to_host, tally.synchronizations) == (0, 2, 1)
    # Any other operator with operands on both sides copies nothing itself.
    tally._transfers(_plan(aten.add.Tensor), cpu_from_cuda[0], {}, cpu_from_cuda[1], [_on("cuda")], False)
    assert (tally.host_to_device, tally.device_to_host, tally.synchronizations) == (0, 2, 1)


def test_on_the_cpu_transfers_are_not_recorded_rather_than_zero() -> None:
    x = torch.ones(8)
    assert not {"host_to_device_copies", "device_to_host_copies", "synchronizations"} & set(
        counted_cost([count_run(lambda: x.sum().item())], transfers=False).metrics
    )
    on_cuda_backend = counted_cost([count_run(lambda: x.sum().item(), transfers=True)], transfers=True).metrics
    assert on_cuda_backend["synchronizations"].value == 0  # a CPU tensor's .item() waits for no device


# -- what the counter cannot see inside -------------------------------------------------------


@pytest.fixture(scope="module")
def custom_op():
    if not hasattr(torch.ops.efficientllm_test, "twice"):
        lib = torch.library.Library("efficientllm_test", "FRAGMENT")
        lib.define("twice(Tensor x) -> Tensor")
        lib.impl("twice", lambda x: x * 2, "CompositeExplicitAutograd")
        test_op_counting_libs.append(lib)
    return torch.ops.efficientllm_test.twice


test_op_counting_libs: list[Any] = []


def test_a_custom_operator_is_listed_not_counted_inside_and_its_boundary_bytes_are_counted(custom_op) -> None:
    x = torch.ones(100)
    run = count_run(lambda: custom_op(x))
    assert run.tally.not_counted.keys() == {"efficientllm_test.twice"}
    assert (run.tally.bytes_read, run.tally.bytes_written) == (400, 400)
    cost = counted_cost([run], transfers=False)
    assert "efficientllm_test.twice" in cost.details["not_counted"]
    assert "not seen inside" in cost.metrics["bytes_accessed"].note


@pytest.mark.slow
def test_a_quantized_weight_counts_as_its_inner_tensors() -> None:
    quanto = pytest.importorskip("optimum.quanto")
    for weights, packed in ((quanto.qint8, 64 * 64), (quanto.qint4, 64 * 64 // 2)):
        linear = torch.nn.Linear(64, 64).to(torch.bfloat16)
        model = torch.nn.Sequential(linear)
        quanto.quantize(model, weights=weights)
        quanto.freeze(model)
        x = torch.randn(2, 64, dtype=torch.bfloat16)
        with torch.no_grad():
            run = count_run(lambda m=model, x=x: m(x))
        t = run.tally
        assert t.problem is None
        integer = "int8" if weights is quanto.qint8 else "uint8"
        assert t.bytes_by_dtype[integer] == packed  # the stored (packed) weight, read once
        assert t.not_counted  # quanto's own kernel or its subclass dispatch: listed by name


class Flattened(torch.Tensor):
    """A wrapper subclass sized by __tensor_flatten__, which also names a non-tensor attribute."""

    @staticmethod
    def __new__(cls, inner: torch.Tensor) -> Flattened:
        return torch.Tensor._make_wrapper_subclass(cls, inner.shape, dtype=inner.dtype, device=inner.device)

    def __init__(self, inner: torch.Tensor) -> None:
        self.inner = inner
        self.mesh = "a device mesh"

    def __tensor_flatten__(self):
        return ["inner", "mesh"], None

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        unwrap = lambda t: t.inner if isinstance(t, Flattened) else t  # noqa: E731
        return func(*tree_map(unwrap, args), **tree_map(unwrap, kwargs or {}))


def test_a_subclass_counts_as_the_tensors_its_flatten_names() -> None:
    x = Flattened(torch.ones(16))
    t = tally_of(lambda: x * 3)
    assert (t.bytes_read, t.bytes_written) == (64, 64)
    assert t.not_counted.keys() == {"aten.mul on Flattened"}


class Opaque(torch.Tensor):
    """A wrapper subclass with its own dispatch and no __tensor_flatten__: nothing to size it by."""

    @staticmethod
    def __new__(cls, inner: torch.Tensor) -> Opaque:
        return torch.Tensor._make_wrapper_subclass(cls, inner.shape, dtype=inner.dtype, device=inner.device)

    def __init__(self, inner: torch.Tensor) -> None:
        self.inner = inner

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        unwrap = lambda t: t.inner if isinstance(t, Opaque) else t  # noqa: E731
        return func(*tree_map(unwrap, args), **tree_map(unwrap, kwargs or {}))


def test_a_subclass_the_counter_cannot_size_makes_the_counts_unavailable_but_not_the_workload() -> None:
    x = Opaque(torch.ones(4))
    results = []
    run = count_run(lambda: results.append(x + 1))
    assert results[0].tolist() == [2.0, 2.0, 2.0, 2.0]
    assert run.tally.problem is not None and "Opaque" in run.tally.problem
    cost = counted_cost([run], transfers=False)
    gone = cost.metrics["bytes_accessed"]
    assert gone.value is None and "cannot be sized" in gone.note
    assert cost.flops.value == 0  # FlopCounterMode itself had no trouble


def test_a_flop_formula_that_fails_makes_only_the_flops_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch.utils import flop_counter

    def rejects(*args: Any, **kwargs: Any) -> int:
        raise ValueError("no formula for these shapes")

    a, b = torch.ones(4, 8), torch.ones(8, 2)
    count_run(lambda: a @ b)  # the counter reads mm's formula once, the first time it sees mm
    monkeypatch.setitem(flop_counter.flop_registry, aten.mm, rejects)
    cost = counted_cost([count_run(lambda: a @ b)], transfers=False)
    assert cost.flops.value is None and "no formula for these shapes" in cost.flops.note
    assert cost.metrics["bytes_accessed"].value == (32 + 16 + 8) * 4
    intensity = cost.metrics["arithmetic_intensity"]
    assert intensity.value is None and "no formula for these shapes" in intensity.note


# -- several runs -----------------------------------------------------------------------------


def test_runs_that_agree_give_plain_counts_and_runs_that_differ_a_varying_one() -> None:
    x = torch.ones(100)
    same = counted_cost([count_run(lambda: x * 2), count_run(lambda: x * 2)], transfers=False)
    assert same.metrics["bytes_accessed"].samples == () and same.metrics["bytes_accessed"].value == 800
    masks = iter([x > 0, x < 0])
    runs = [count_run(lambda: x[next(masks)]) for _ in range(2)]
    differ = counted_cost(runs, transfers=False)
    varying = differ.metrics["bytes_accessed"]
    assert varying.samples == (100 * 4 + 100 + 400, 100 * 4 + 100) and varying.value == 900
    assert "varies run to run" in varying.note
    assert differ.metrics["operators"].samples == ()  # the same operators ran both times


def test_a_compiled_module_counts_without_torchs_warning_about_the_counters_own_hooks() -> None:
    # torch warns when a compiled module runs while global module hooks exist; in the counting
    # run those are FlopCounterMode's own, yet the warning named the user's line. A warning of
    # the workload's own still reaches the user.
    import warnings

    lin = torch.nn.Linear(16, 16)
    compiled = torch.compile(lin, backend="eager")
    x = torch.randn(4, 16)

    def fn() -> None:
        with torch.no_grad():
            compiled(x)
        warnings.warn("the workload's own", UserWarning, stacklevel=1)

    with torch.no_grad():
        compiled(x)  # compiled outside the counters, as the warm-up rounds do
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        run = count_run(fn)
    assert run.flops == 2 * 4 * 16 * 16
    assert [str(w.message) for w in seen] == ["the workload's own"]

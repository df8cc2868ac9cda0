"""The operator counter: what each aten operator of a run reads, writes, allocates and computes.

    tally = OpTally(transfers=False)
    with op_counter_mode(tally):              # `op_counting.count_run` enters it under FlopCounterMode
        fn()
    tally.close()
    tally.bytes_accessed, tally.tensor_peak_bytes, tally.not_counted

One untimed run of the workload under two `TorchDispatchMode`s entered together: torch's
`FlopCounterMode` (the `flops` metric) on top, and this module's counter under it,
so the counter sees exactly the operators FlopCounterMode did not decompose, i.e. the ones
it counts FLOPs for. For every aten operator the counter reads the shapes, strides and
dtypes of its tensors (never their data, so `meta` tensors count like any other):

* bytes: each tensor input is read and each new output written, in bytes of the storage
  region the view spans (`numel x itemsize` for a contiguous tensor; an expanded or strided
  view spans less or more). An operator whose outputs all alias its inputs (view, t,
  transpose, expand, slice, as_strided, alias, unsqueeze, permute, _unsafe_view, detach...)
  moves nothing and counts 0. An in-place operator reads its inputs and writes the mutated
  one once: `a.add_(b)` is 3 x size. One that overwrites without reading (copy_, fill_,
  zero_, the random fills) or an `out=` argument is written only. Factories count what they
  write (`empty` writes nothing); `*_like`/`new_*` read only their input's metadata. A
  tensor passed twice to one operator (`x * x`) is read once.
* allocations: an output whose storage is neither an input's nor one already seen is a new
  storage. A weak reference with a callback on its `UntypedStorage` (torch keeps one Python
  object per storage alive exactly as long as the C++ storage) sees it freed, so the live
  total and its high-water mark (`tensor_peak_bytes`) follow the workload's own tensors:
  the same on CPU, GPU and meta, blind to allocator caching and RSS. Storages that existed
  before the run (weights, inputs) count in neither. What is still live once the run has
  returned, its result dropped and the cyclic garbage collected, is `retained_tensor_bytes`:
  a tensor kept per call (appended to a list, stored on a module), a cache that grows.
* FLOPs per operator from torch's own formulas (`torch.utils.flop_counter.flop_registry`),
  attributed to the dtype holding most of the operator's input bytes; their total equals
  FlopCounterMode's.
* on CUDA only (`transfers=True`): copies between host and device (`_to_copy`, `copy_`) and
  the operators that make the host wait for the device (`.item()`, `nonzero`,
  `masked_select`, `unique`, a boolean-mask index, a blocking device-to-host copy...).

What the counter cannot see inside is listed by name in `OpTally.not_counted`, never
counted as 0: operators of custom namespaces (`quanto.qbytes_mm`: the bytes of its inputs
and outputs are counted, its FLOPs and the traffic inside it are not), operators a tensor
subclass handles with its own `__torch_dispatch__`, and higher-order operators. A tensor
subclass is sized by the inner tensors its `__tensor_flatten__` names (a quanto
`WeightQBytesTensor` is its int8 `_data` plus its `_scale`; a packed int4 `WeightQBitsTensor`
its packed `_data`, `_scale` and `_shift`); a subclass with its own dispatch and no
`__tensor_flatten__` cannot be sized, and that makes the counted metrics unavailable with
the reason (`OpTally.problem`). Kernels launched outside the dispatcher (a Triton kernel
called directly, a CUDA graph replay) and data read through `tolist()`/`numpy()` are not
seen at all. A `torch.compile`d function runs eagerly while a dispatch mode is active, so
its operators are counted as the eager ones, not as the fused kernels.

The cyclic garbage collector is paused for the run (`op_counting.count_run`), so a tensor that only the collector
frees counts as live until the run ends, wherever the collector would have struck; it is
collected before what the run retained is read.
"""

from __future__ import annotations

import functools
import weakref
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

# Operators torch's FlopCounterMode also passes over: queries of sizes and strides that a
# tensor subclass with its own sizes policy answers itself.
_METADATA_QUERIES = (
    "sym_is_contiguous.default",
    "is_contiguous.default",
    "is_contiguous.memory_format",
    "is_strides_like_format.default",
    "is_non_overlapping_and_dense.default",
    "size.default",
    "sym_size.default",
    "stride.default",
    "sym_stride.default",
    "storage_offset.default",
    "sym_storage_offset.default",
    "numel.default",
    "sym_numel.default",
    "dim.default",
)
# In-place operators that overwrite their `self` without reading it.
_OVERWRITES = frozenset(
    {"copy_", "fill_", "zero_", "uniform_", "normal_", "random_", "bernoulli_", "exponential_", "geometric_"}
    | {"log_normal_", "cauchy_"}
)
# Operators that change a tensor's metadata or storage, not its bytes.
_NO_TRAFFIC = frozenset(
    {"resize_", "resize_as_", "set_", "detach_", "as_strided_", "squeeze_", "unsqueeze_", "t_", "transpose_"}
    | {"swapdims_", "swapaxes_", "lift_fresh", "lift"}
)
# Factories that allocate without writing.
_ALLOCATE_ONLY = frozenset({"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "empty_permuted"})
# Operators whose output's shape depends on the input's values (and on CUDA wait for the device).
_DATA_SHAPED = frozenset(
    {"nonzero", "masked_select", "unique", "_unique", "_unique2", "unique_dim", "unique_consecutive", "bincount"}
    | {"unique_dim_consecutive", "argwhere", "nonzero_numpy"}
)
# Namespaces whose operators the counter sizes as any aten operator.
_OWN_NAMESPACES = frozenset({"aten", "prims", "prim"})
# Namespaces of instrumentation, which moves no tensor bytes (record_function ranges): not counted.
_IGNORED_NAMESPACES = frozenset({"profiler"})


def dtype_name(dtype: Any) -> str:
    """Short dtype names: bf16, fp32, fp16, fp64, fp8_e4m3fn, int8, int64, bool, complex64..."""
    name = str(dtype).removeprefix("torch.")
    if name == "bfloat16":
        return "bf16"
    if name.startswith("float"):
        return "fp" + name[len("float") :]
    return name


def classify_transfer(source: str, target: str, non_blocking: bool) -> tuple[int, int, int]:
    """(host-to-device, device-to-host, synchronization) counts of one copy between device types."""
    if source == target or "meta" in (source, target):
        return 0, 0, 0
    if source == "cpu":
        return 1, 0, 0
    if target == "cpu":
        return 0, 1, 0 if non_blocking else 1
    return 0, 0, 0  # device to device: neither the host's copy nor its wait


@dataclass(frozen=True)
class _Plan:
    """What the counter needs to know about one operator, read once from its schema."""

    name: str  # "aten.add_"
    base: str  # "add_"
    skip: bool = False  # a size/stride query: left to a subclass's sizes policy, as FlopCounterMode does
    higher_order: bool = False  # a higher-order operator: not seen inside
    ignored: bool = False  # instrumentation (profiler ranges): run, not counted
    own: bool = True  # an aten/prims operator (else a custom namespace: not seen inside)
    view: bool = False  # the schema says its output aliases its input (view, t, expand...)
    mutated: tuple[tuple[int, str, bool], ...] = ()  # (position, argument name, read as well as written)
    reads: bool = True  # reads its tensor inputs' bytes (not for *_like / new_* / empty*)
    writes: bool = True  # writes its new outputs (not for empty*)
    traffic: bool = True  # moves bytes at all (not resize_/set_/...)
    maybe_data_dependent: bool = False  # its output's shape may follow the data (nonzero, a bool index...)
    flop_formula: Callable[..., int] | None = None


# A region of one storage an operator touches, as a plain tuple (the hot path builds one per
# tensor per operator): (storage key, byte offset, bytes spanned, dtype name, UntypedStorage).
# The key is the storage's identity while it lives; the first three make the region's.
_Piece = tuple[int, int, int, str, Any]


@dataclass
class OpTally:
    """What one counting run saw. Bytes in B, FLOPs in FLOP."""

    transfers: bool = False
    bytes_read: int = 0
    bytes_written: int = 0
    flops: int = 0
    operators: int = 0
    allocations: int = 0
    allocated_bytes: int = 0
    live_bytes: int = 0
    tensor_peak_bytes: int = 0
    retained_bytes: int = 0  # live_bytes when the run returned: what it left alive
    bytes_by_dtype: Counter[str] = field(default_factory=Counter)
    flops_by_dtype: Counter[str] = field(default_factory=Counter)
    bytes_by_op: Counter[str] = field(default_factory=Counter)
    flops_by_op: Counter[str] = field(default_factory=Counter)
    not_counted: dict[str, str] = field(default_factory=dict)
    data_dependent: set[str] = field(default_factory=set)
    host_to_device: int = 0
    device_to_host: int = 0
    synchronizations: int = 0
    problem: str | None = None  # an error of the counter itself: the counts are not to be trusted
    _subclasses_seen: bool = field(default=False, repr=False)
    _live: dict[int, tuple[int, Any]] = field(default_factory=dict, repr=False)  # key -> (bytes, weakref)
    _closed: bool = field(default=False, repr=False)

    @property
    def bytes_accessed(self) -> int:
        return self.bytes_read + self.bytes_written

    # -- the operator hook -------------------------------------------------------------

    def dispatch(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run one operator and count it (called by the dispatch mode, which is off meanwhile)."""
        plan = _PLANS.get(func) or _plan(func)
        if plan.skip:
            return NotImplemented
        if plan.higher_order:
            self.operators += 1
            self.not_counted.setdefault(plan.name, "higher-order operator: the operators inside it are not seen")
            return func(*args, **kwargs)
        out = func(*args, **kwargs)
        if self.problem is None and not plan.ignored:
            try:
                self._count(plan, args, kwargs, out)
            except Exception as exc:  # the counter's own error: the workload's result stands
                self.problem = f"the counter failed on {plan.name}: {type(exc).__name__}: {exc}"
        return out

    def _count(self, plan: _Plan, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        self.operators += 1
        if plan.view and args and _KINDS.get(type(out)) == "plain" and _KINDS.get(type(args[0])) == "plain":
            return  # a view of a plain tensor: no bytes, no storage (the general path agrees, slower)
        ins = _tensors((*args, *kwargs.values()) if kwargs else args)
        outs = _tensors((out,))
        pieces = self._pieces
        in_pieces = [p for t in ins for p in pieces(t)]
        out_pieces = [p for t in outs for p in pieces(t)]
        if self._subclasses_seen:
            self._note_subclass(plan, ins, outs)
        if not plan.own:
            self.not_counted.setdefault(
                plan.name,
                "custom operator: its FLOPs and the traffic inside it are not seen; "
                "the bytes of its inputs and outputs are counted",
            )
        data_dependent = (
            # a value from the tensors' data reached Python (.item(), bool(t), torch.equal)
            isinstance(out, (bool, int, float, complex))
            # or set an output's shape
            or (plan.maybe_data_dependent and _shaped_by_data(plan, args, kwargs))
        )
        if data_dependent:
            self.data_dependent.add(plan.name)

        in_keys = {p[0] for p in in_pieces}
        # Mutated arguments: written, and read unless overwritten whole or an out= argument.
        written: dict[tuple[int, int, int], _Piece] = {}
        unread: set[tuple[int, int, int]] = set()
        for position, name, read in plan.mutated:
            value = args[position] if position < len(args) else kwargs.get(name)
            for t in _tensors((value,)):
                for p in pieces(t):
                    written[p[:3]] = p
                    if not read:
                        unread.add(p[:3])
                    self._grown(p)
        fresh = [p for p in out_pieces if p[0] not in in_keys]
        for p in fresh:
            if p[0] not in self._live:
                self._allocated(p)
        # An operator whose outputs all alias its inputs (a view) and that mutates nothing moves no bytes.
        if plan.traffic and (plan.mutated or fresh or not outs):
            total = 0
            by_dtype = self.bytes_by_dtype
            if plan.reads:
                reads = {p[:3]: p for p in in_pieces}
                for where, p in reads.items():
                    if where not in unread:
                        self.bytes_read += p[2]
                        by_dtype[p[3]] += p[2]
                        total += p[2]
            if plan.writes:
                for p in fresh:
                    written[p[:3]] = p
            for p in written.values():
                self.bytes_written += p[2]
                by_dtype[p[3]] += p[2]
                total += p[2]
            if total:
                self.bytes_by_op[plan.name] += total
        if plan.flop_formula is not None:
            flops = int(plan.flop_formula(*args, **kwargs, out_val=out))
            self.flops += flops
            self.flops_by_op[plan.name] += flops
            operands: Counter[str] = Counter()
            for p in in_pieces or out_pieces:
                operands[p[3]] += p[2]
            if operands and flops:
                self.flops_by_dtype[max(operands, key=lambda d: operands[d])] += flops
        if self.transfers:
            self._transfers(plan, args, kwargs, ins, outs, data_dependent)

    def _note_subclass(self, plan: _Plan, ins: list[Any], outs: list[Any]) -> None:
        handled_by = {type(t).__name__ for t in (*ins, *outs) if _kind(type(t)) == "subclass"}
        if handled_by:
            self.not_counted.setdefault(
                f"{plan.name} on {', '.join(sorted(handled_by))}",
                "handled by the tensor subclass's own __torch_dispatch__: the bytes of its inputs' inner "
                "tensors and of its outputs are counted, the work inside is not",
            )

    def _transfers(
        self,
        plan: _Plan,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        ins: list[Any],
        outs: list[Any],
        data_dependent: bool,
    ) -> None:
        if plan.base == "_to_copy" and ins and outs:
            h2d, d2h, sync = classify_transfer(
                ins[0].device.type, outs[0].device.type, bool(kwargs.get("non_blocking", False))
            )
        elif plan.base == "copy_" and len(ins) >= 2:  # copy_(self, src, non_blocking)
            non_blocking = args[2] if len(args) > 2 else kwargs.get("non_blocking", False)
            h2d, d2h, sync = classify_transfer(ins[1].device.type, ins[0].device.type, bool(non_blocking))
        else:
            h2d = d2h = 0
            sync = int(data_dependent and any(t.device.type == "cuda" for t in ins))
        self.host_to_device += h2d
        self.device_to_host += d2h
        self.synchronizations += sync

    # -- tensors and storages ----------------------------------------------------------

    def _pieces(self, t: Any) -> list[_Piece]:
        cls = type(t)
        kind = _KINDS.get(cls) or _kind(cls)
        if kind != "plain":
            if kind == "opaque":
                raise TypeError(
                    f"tensor subclass {cls.__name__} has its own __torch_dispatch__ and no __tensor_flatten__: "
                    "its bytes cannot be sized"
                )
            self._subclasses_seen = True
            inner_names, _ = t.__tensor_flatten__()
            inner = (getattr(t, name) for name in inner_names)
            return [p for x in inner if isinstance(x, _TENSOR[0]) for p in self._pieces(x)]
        storage = t.untyped_storage()
        dtype = t.dtype
        size = dtype.itemsize
        if t.is_contiguous():
            span = t.nbytes
        elif t.numel() == 0:
            span = 0
        else:
            span = size * (1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride())))
        name = _DTYPE_NAMES.get(dtype) or _dtype_name_cached(dtype)
        return [(storage._cdata, t.storage_offset() * size, span, name, storage)]

    def _allocated(self, p: _Piece) -> None:
        storage = p[4]
        nbytes = int(storage.nbytes())
        key = p[0]
        self._live[key] = (nbytes, weakref.ref(storage, lambda _ref: self._freed(key)))
        self.allocations += 1
        self.allocated_bytes += nbytes
        self.live_bytes += nbytes
        if self.live_bytes > self.tensor_peak_bytes:
            self.tensor_peak_bytes = self.live_bytes

    def _grown(self, p: _Piece) -> None:
        # An out= argument or resize_ can grow a storage in place: the growth is allocated.
        seen = self._live.get(p[0])
        if seen is None:
            return
        nbytes = int(p[4].nbytes())
        if nbytes > seen[0]:
            self.allocated_bytes += nbytes - seen[0]
            self.live_bytes += nbytes - seen[0]
            self.tensor_peak_bytes = max(self.tensor_peak_bytes, self.live_bytes)
            self._live[p[0]] = (nbytes, seen[1])

    def _freed(self, key: int) -> None:
        if self._closed:
            return
        seen = self._live.pop(key, None)
        if seen is not None:
            self.live_bytes -= seen[0]

    def close(self) -> None:
        """Stop following storages: what outlives the run is no longer this tally's business,
        beyond how much of it there is (`retained_bytes`)."""
        if not self._closed:
            self.retained_bytes = self.live_bytes
        self._closed = True
        self._live.clear()


def _is_tensor(value: Any) -> bool:
    return isinstance(value, _tables().tensor)


def _tensors(values: Iterable[Any]) -> list[Any]:
    """The tensors among operator arguments or results (aten nests at most one level: Tensor[])."""
    tensor = _TENSOR[0]
    out = []
    for v in values:
        if isinstance(v, tensor):
            out.append(v)
        elif isinstance(v, (tuple, list)):
            out.extend(x for x in v if isinstance(x, tensor))
    return out


def _shaped_by_data(plan: _Plan, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    if plan.base == "index":  # x[mask]: a boolean index is a nonzero
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        masks = (_tables().bool_dtype, _tables().uint8_dtype)
        return any(_is_tensor(i) and i.dtype in masks for i in indices or ())
    if plan.base == "repeat_interleave":  # repeats given as a tensor, without output_size=
        return bool(args) and _is_tensor(args[0]) and kwargs.get("output_size") is None
    return True


_KINDS: dict[type, str] = {}
_DTYPE_NAMES: dict[Any, str] = {}


def _kind(cls: type) -> str:
    """The kind of a tensor type: "plain" (a storage of its own), "subclass" (sized by
    __tensor_flatten__) or "opaque" (its own dispatch, nothing to size it by)."""
    base = _tables().tensor
    if cls.__torch_dispatch__ is base.__torch_dispatch__:  # type: ignore[attr-defined]
        kind = "plain"
    else:
        kind = "subclass" if hasattr(cls, "__tensor_flatten__") else "opaque"
    _KINDS[cls] = kind
    return kind


def _dtype_name_cached(dtype: Any) -> str:
    _DTYPE_NAMES[dtype] = name = dtype_name(dtype)
    return name


@dataclass(frozen=True)
class _Tables:
    tensor: type
    metadata: frozenset[Any]
    higher_order: type
    flop_counter: Any  # the torch.utils.flop_counter module: its registry is read when an operator is first seen
    bool_dtype: Any
    uint8_dtype: Any


@functools.cache
def _tables() -> _Tables:
    import torch
    from torch.utils import flop_counter

    aten = torch.ops.aten
    metadata = set()
    for dotted in _METADATA_QUERIES:
        packet, overload = dotted.split(".")
        op = getattr(getattr(aten, packet, None), overload, None)
        if op is not None:
            metadata.add(op)
    metadata.add(torch.ops.prim.layout.default)
    return _Tables(
        torch.Tensor,
        frozenset(metadata),
        torch._ops.HigherOrderOperator,
        flop_counter,
        torch.bool,
        torch.uint8,
    )


_PLANS: dict[Any, _Plan] = {}
_TENSOR: list[type] = []  # torch.Tensor, once torch is imported


def _plan(func: Any) -> _Plan:
    """The plan of an operator, read from its schema the first time it is seen."""
    tables = _tables()
    if not _TENSOR:
        _TENSOR.append(tables.tensor)
    if func in tables.metadata:
        plan = _Plan(str(func), "", skip=True)
    elif isinstance(func, tables.higher_order):
        plan = _Plan(f"higher_order.{getattr(func, '_name', func)}", "", higher_order=True)
    else:
        packet = func._overloadpacket
        base = packet.__name__
        namespace = func.namespace
        mutated = []
        for position, arg in enumerate(func._schema.arguments):
            if arg.alias_info is not None and arg.alias_info.is_write:
                read = not (arg.kwarg_only or (position == 0 and base in _OVERWRITES))
                mutated.append((position, arg.name, read))
        metadata_only = base.endswith("_like") or base.startswith("new_") or base in _ALLOCATE_ONLY
        plan = _Plan(
            name=f"{namespace}.{base}",
            base=base,
            ignored=namespace in _IGNORED_NAMESPACES,
            own=namespace in _OWN_NAMESPACES,
            view=bool(getattr(func, "is_view", False)) and not mutated,
            mutated=tuple(mutated),
            reads=not metadata_only,
            writes=base not in _ALLOCATE_ONLY,
            traffic=base not in _NO_TRAFFIC,
            maybe_data_dependent=base in _DATA_SHAPED or base in ("index", "repeat_interleave"),
            flop_formula=tables.flop_counter.flop_registry.get(packet),
        )
    _PLANS[func] = plan
    return plan


@functools.cache
def _mode_type() -> type:
    from torch.utils._python_dispatch import TorchDispatchMode

    class OpCounterMode(TorchDispatchMode):
        """Counts every aten operator that reaches it into an `OpTally`."""

        supports_higher_order_operators = True

        def __init__(self, tally: OpTally) -> None:
            super().__init__()
            self.tally = tally

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            return self.tally.dispatch(func, args, kwargs or {})

    return OpCounterMode


def op_counter_mode(tally: OpTally) -> Any:
    """The `TorchDispatchMode` that counts into `tally` (enter it with `with`)."""
    return _mode_type()(tally)

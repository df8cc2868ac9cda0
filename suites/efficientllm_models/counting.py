"""Exact counts the suites record and assert: cache bytes, stored bytes, parameters, optimizer state,
and the counted cost of one run of a workload.

Units are in the names: `_bytes` are bytes, `_params` are parameter counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn


def _tensors(obj: Any) -> Iterable[torch.Tensor]:
    """Every tensor held by a cache object: transformers `Cache` layers, or nested tuples/lists."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)
    elif hasattr(obj, "layers"):  # transformers >= 4.56 Cache: layers with .keys / .values
        for layer in obj.layers:
            for name in ("keys", "values"):
                t = getattr(layer, name, None)
                if isinstance(t, torch.Tensor):
                    yield t
    elif obj is not None:
        raise TypeError(f"cannot count the tensors of a {type(obj).__name__}")


def cache_bytes(cache: Any) -> int:
    """Bytes held by a KV cache (every layer, keys and values or latents)."""
    return sum(t.numel() * t.element_size() for t in _tensors(cache))


@torch.no_grad()
def kv_cache_bytes_per_token(model: nn.Module, tokens: int, device: torch.device | str = "cpu") -> tuple[int, int]:
    """Run one prefill of `tokens` tokens (batch 1) and return (cache bytes, bytes per token).

    Counted from the cache the model actually returns, not from its config.
    """
    ids = torch.arange(tokens, device=device).remainder(200).unsqueeze(0)
    out = model(ids, use_cache=True)
    total = cache_bytes(out.past_key_values)
    return total, total // tokens


def param_count(model: nn.Module, trainable_only: bool = False) -> int:
    """Parameters counted once each (tied weights are one parameter)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _flat(t: torch.Tensor) -> list[torch.Tensor]:
    """The plain tensors inside a tensor subclass (quanto's packed weights and scales)."""
    if hasattr(t, "__tensor_flatten__") and type(t) not in (torch.Tensor, nn.Parameter):
        names, _ = t.__tensor_flatten__()
        return [leaf for name in names for leaf in _flat(getattr(t, name))]
    return [t]


def storage_bytes(model: nn.Module, modules: type | tuple[type, ...] | None = None) -> int:
    """Bytes of the weights as stored: quanto's packed integers plus their scales and shifts.

    Each underlying storage is counted once, so tied embeddings count once. With `modules`,
    only parameters and buffers of modules of those types count (e.g. the Linear layers).
    """
    seen: set[int] = set()
    total = 0
    if modules is None:
        tensors = list(model.state_dict(keep_vars=True).values())
    else:
        tensors = [
            t
            for m in model.modules()
            if isinstance(m, modules)
            for t in list(m.parameters(recurse=False)) + list(m.buffers(recurse=False))
        ]
    for tensor in tensors:
        for leaf in _flat(tensor.detach() if isinstance(tensor, nn.Parameter) else tensor):
            storage = leaf.untyped_storage()
            key = storage.data_ptr()
            if key in seen and key != 0:
                continue
            seen.add(key)
            total += leaf.numel() * leaf.element_size()
    return total


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the optimizer's per-parameter state tensors (Adam: exp_avg and exp_avg_sq), scalar step
    counters excluded."""
    return sum(
        v.numel() * v.element_size()
        for state in optimizer.state.values()
        for v in state.values()
        if isinstance(v, torch.Tensor) and v.dim() > 0
    )


def round_cost(fn: Callable[[], Any]) -> dict[str, float | None]:
    """The counted cost of one run of `fn`, as the plugin records it for one measured round.

    Keys are the record's metric names: `flops` (FLOP), `bytes_accessed`, `tensor_peak_bytes`,
    `allocated_bytes` (B), `bytes_share:<dtype>` (fraction of `bytes_accessed`) and the rest of
    `pytest_efficientllm.telemetry.op_counting.NAMES`. Counted from shapes, strides and dtypes,
    so exact and the same on every machine; `None` where a count is unavailable.
    """
    from pytest_efficientllm.telemetry.op_counting import count_run, counted_cost

    cost = counted_cost([count_run(fn)], transfers=False)
    values: dict[str, float | None] = {name: metric.value for name, metric in cost.metrics.items()}
    values["flops"] = cost.flops.value
    return values


def bytes_in(cost: dict[str, float | None], dtypes: Iterable[str]) -> int:
    """Bytes of a `round_cost` that were tensors of the given dtypes (from its `bytes_share:<dtype>`)."""
    total = cost["bytes_accessed"] or 0
    return round(sum((cost.get(f"bytes_share:{d}") or 0) * total for d in dtypes))

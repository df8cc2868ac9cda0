"""Realistic regressions of LLM inference code, each a before/after pair on the suites' models.

`build(name, side)` returns a `Workload`: the round to measure (one call of the workload) and
its tokens. "before" is the code as it should be; "after" is the same code with one mistake
people make, and nothing else changed: same model (Llama blocks from the suites' builders at
the tiny scale, GQA, random weights from seed 0, bf16), same inputs, same shapes.

Importable without pytest; `benchmarks/regression_zoo.py` runs the pairs through the plugin
(`test_zoo.py`) and counts, for each, what the gate caught.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "suites"))  # the suites' `efficientllm_models`

from efficientllm_models.builders import attention_model, seed  # noqa: E402
from efficientllm_models.data import heldout_batch  # noqa: E402
from efficientllm_models.scales import get_scale  # noqa: E402

SIDES = ("before", "after")
SCALE = get_scale("tiny")  # hidden 64, 2 layers, 8 heads (GQA: 2 KV heads), vocabulary 256
PREFILL_BATCH, PREFILL_LEN = 2, 128
DECODE_PROMPT, DECODE_TOKENS = SCALE.decode_prompt, SCALE.decode_tokens  # 32 + 16


@dataclass(frozen=True)
class Regression:
    name: str
    mistake: str  # what "after" does, in one line


@dataclass
class Workload:
    round: Callable[[], Any]
    tokens: int


REGRESSIONS = (
    Regression(
        "dtype_upcast", "prefill with the model left in fp32 (the `.to(torch.bfloat16)` lost): weights, activations"
    ),
    Regression("clone_per_layer", "a defensive `.clone()` of every decoder layer's output (a forward hook)"),
    Regression("kv_cache_fp32", "decode with the KV cache kept in fp32 (cast up on store, down on read); model bf16"),
    Regression("eager_attention", "`attn_implementation='eager'`: softmax(QK^T)V materialised instead of SDPA"),
    Regression("lora_unmerged", "a LoRA adapter (rank 4, every projection) left unmerged at inference (peft)"),
    Regression("no_grad_lost", "prefill without `torch.no_grad()`: autograd records the graph and keeps activations"),
    Regression(
        "item_per_step", "`.item()` on every decoded token (a list of Python ints) instead of one `cat` at the end"
    ),
    Regression("tensor_leak", "each call appends its logits to a module-level list (kept 'for debugging')"),
    Regression("kv_cache_off", "decode with `use_cache=False`: every step runs the whole prefix again"),
)
NAMES = tuple(r.name for r in REGRESSIONS)

# transformers >= 5.x names the cache argument `cache`; older releases `past_key_values`.
CACHE_ARG = "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"

_LEAKED: list[torch.Tensor] = []  # tensor_leak's "after": grows by one logits tensor per call


def _model(attn: str = "sdpa", dtype: torch.dtype = torch.bfloat16) -> Any:
    seed(0)
    model = attention_model("gqa", SCALE)
    model.set_attn_implementation(attn)
    return model.to(dtype).eval()


def _prompt(batch: int, length: int) -> torch.Tensor:
    return heldout_batch(batch, length)


def _prefill(model: Any, ids: torch.Tensor, grad: bool = False) -> Workload:
    def run() -> torch.Tensor:
        with torch.set_grad_enabled(grad):
            return model(ids).logits[:, -1].argmax(-1)

    return Workload(run, ids.numel())


def _decode(model: Any, *, cache: Callable[[], Any] | None, item: bool = False) -> Workload:
    """Greedy decoding of DECODE_TOKENS tokens after a DECODE_PROMPT-token prompt (batch 1).

    `cache` makes the KV cache (None: `use_cache=False`, the whole prefix every step); `item`
    reads every new token into a Python list, one `.item()` per step.
    """
    prompt = _prompt(1, DECODE_PROMPT)

    @torch.no_grad()
    def run() -> Any:
        ids = prompt
        kv = cache() if cache is not None else None
        out = model(ids, **{CACHE_ARG: kv}, use_cache=kv is not None)
        new: list[Any] = []
        for step in range(DECODE_TOKENS):
            token = out.logits[:, -1:].argmax(-1)
            new.append(token.item() if item else token)
            if step + 1 == DECODE_TOKENS:
                break
            if kv is None:
                ids = torch.cat([ids, token], dim=1)
                out = model(ids, use_cache=False)
            else:
                out = model(token, **{CACHE_ARG: kv}, use_cache=True)
        return new if item else torch.cat(new, dim=1)

    return Workload(run, DECODE_PROMPT + DECODE_TOKENS)


def _dynamic_cache() -> Any:
    from transformers import DynamicCache

    return DynamicCache()


def _fp32_cache() -> Any:
    """A DynamicCache whose layers keep keys and values in fp32 and hand the model its own dtype back."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    class Fp32Layer(DynamicLayer):
        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            super().lazy_initialization(key_states.float(), value_states.float())

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            keys, values = super().update(key_states.float(), value_states.float(), *args, **kwargs)
            return keys.to(key_states.dtype), values.to(value_states.dtype)

    cache = DynamicCache()
    cache.layer_class_to_replicate = Fp32Layer
    return cache


def _clone_outputs(model: Any) -> None:
    def hook(_module: Any, _inputs: Any, output: Any) -> Any:
        if isinstance(output, torch.Tensor):
            return output.clone()
        return (output[0].clone(), *output[1:])

    for layer in model.model.layers:
        layer.register_forward_hook(hook)


def _lora(model: Any, merged: bool) -> Any:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=SCALE.lora_rank,
        lora_alpha=SCALE.lora_alpha,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    peft_model = get_peft_model(model, config)
    seed(1)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:  # a trained adapter: B is zero only at initialisation
            torch.nn.init.normal_(p, std=0.02)
    peft_model.eval()
    return peft_model.merge_and_unload() if merged else peft_model


def build(name: str, side: str) -> Workload:
    """The round of regression `name` on `side` ("before" or "after")."""
    if side not in SIDES:
        raise ValueError(f"side {side!r}: expected one of {', '.join(SIDES)}")
    if name not in NAMES:
        raise ValueError(f"unknown regression {name!r}; expected one of {', '.join(NAMES)}")
    after = side == "after"
    ids = _prompt(PREFILL_BATCH, PREFILL_LEN)
    if name == "dtype_upcast":
        return _prefill(_model(dtype=torch.float32 if after else torch.bfloat16), ids)
    if name == "clone_per_layer":
        model = _model()
        if after:
            _clone_outputs(model)
        return _prefill(model, ids)
    if name == "kv_cache_fp32":
        return _decode(_model(), cache=_fp32_cache if after else _dynamic_cache)
    if name == "eager_attention":
        return _prefill(_model(attn="eager" if after else "sdpa"), ids)
    if name == "lora_unmerged":
        return _prefill(_lora(_model(), merged=not after), ids)
    if name == "no_grad_lost":
        return _prefill(_model(), ids, grad=after)
    if name == "item_per_step":
        return _decode(_model(), cache=_dynamic_cache, item=after)
    if name == "tensor_leak":
        model = _model()

        def run() -> torch.Tensor:
            with torch.no_grad():
                logits = model(ids).logits
            if after:
                _LEAKED.append(logits)
            return logits[:, -1].argmax(-1)

        return Workload(run, ids.numel())
    assert name == "kv_cache_off"
    return _decode(_model(), cache=None if after else _dynamic_cache)

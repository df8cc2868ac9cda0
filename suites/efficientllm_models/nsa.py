"""A decoder-only LM whose attention is native sparse attention (NSA).

The attention itself is `native_sparse_attention_pytorch.SparseAttention` (compressed,
selected-block and sliding-window branches with a learned gate); around it the same
pre-norm block as the Llama-style variants (RMSNorm, SwiGLU FFN, untied head), so the
attention comparison changes one thing. It speaks the small part of the transformers
interface the suites use: `model(input_ids, labels=, cache=, use_cache=)` returning
`.loss`, `.logits`, `.past_key_values`.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn


class _SwiGLU(nn.Module):
    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class _Block(nn.Module):
    def __init__(
        self, hidden: int, heads: int, kv_heads: int, intermediate: int, window: int, block: int, selected: int
    ) -> None:
        super().__init__()
        from .builders import require

        SparseAttention = require("native_sparse_attention_pytorch", "native-sparse-attention-pytorch").SparseAttention

        self.input_layernorm = nn.RMSNorm(hidden, eps=1e-6)
        # norm=False: the block's own pre-norm above plays that role, as in the Llama blocks.
        self.self_attn = SparseAttention(
            dim=hidden,
            dim_head=hidden // heads,
            heads=heads,
            kv_heads=kv_heads,
            sliding_window_size=window,
            compress_block_size=block,
            compress_block_sliding_stride=block,
            selection_block_size=block,
            num_selected_blocks=selected,
            causal=True,
            norm=False,
        )
        self.post_attention_layernorm = nn.RMSNorm(hidden, eps=1e-6)
        self.mlp = _SwiGLU(hidden, intermediate)

    def forward(self, x: torch.Tensor, cache: object | None, use_cache: bool) -> tuple[torch.Tensor, object | None]:
        h = self.input_layernorm(x)
        if cache is not None:
            attn, new_cache = self.self_attn(h, cache=cache, return_cache=True)
        elif use_cache:
            attn, new_cache = self.self_attn(h, return_cache=True)
        else:
            attn, new_cache = self.self_attn(h), None
        x = x + attn
        return x + self.mlp(self.post_attention_layernorm(x)), new_cache


class NsaForCausalLM(nn.Module):
    def __init__(
        self,
        *,
        vocab: int,
        hidden: int,
        layers: int,
        heads: int,
        kv_heads: int,
        intermediate: int,
        window: int,
        block: int,
        selected: int,
    ) -> None:
        super().__init__()
        self.settings = dict(nsa_window=window, nsa_block=block, nsa_selected=selected, kv_heads=kv_heads)
        self.embed_tokens = nn.Embedding(vocab, hidden)
        self.layers = nn.ModuleList(
            _Block(hidden, heads, kv_heads, intermediate, window, block, selected) for _ in range(layers)
        )
        self.norm = nn.RMSNorm(hidden, eps=1e-6)
        self.lm_head = nn.Linear(hidden, vocab, bias=False)
        for module in self.modules():  # the Llama variants' initialisation (normal, std 0.02)
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        cache: list | None = None,
        use_cache: bool = False,
        past_key_values: list | None = None,
        **_: object,
    ) -> SimpleNamespace:
        past_key_values = cache if cache is not None else past_key_values
        if past_key_values is not None and input_ids.shape[1] != 1:
            raise ValueError("NSA cached decoding takes one token at a time")
        x = self.embed_tokens(input_ids)
        caches = []
        for i, layer in enumerate(self.layers):
            x, c = layer(x, past_key_values[i] if past_key_values is not None else None, use_cache)
            caches.append(c)
        logits = self.lm_head(self.norm(x))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1)
            )
        return SimpleNamespace(loss=loss, logits=logits, past_key_values=caches if use_cache else None)

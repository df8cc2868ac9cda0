"""The three workloads every side-by-side comparison uses, built the same way in every process.

* `matmul`: 10 fp32 256x256 matmuls (~10 ms on one core);
* `forward`: a tiny Llama (2 layers, hidden 64, GQA 4/2 heads) forward over 32 tokens;
* `generate`: the same model generating 8 new tokens (min_new_tokens = max_new_tokens).
Weights are random (built from a config, seeded): nothing is downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

NAMES = ("matmul", "forward", "generate")
MiB = 2**20


def _tiny_llama():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    return LlamaForCausalLM(config).eval()


def build(name: str) -> Callable[[], object]:
    """A zero-argument callable doing one round of the named workload."""
    if name == "matmul":
        a, b = torch.randn(256, 256), torch.randn(256, 256)

        def matmul() -> None:
            for _ in range(10):
                a @ b

        return matmul
    model = _tiny_llama()
    ids = torch.randint(0, 256, (1, 32), generator=torch.Generator().manual_seed(0))
    if name == "forward":

        def forward() -> None:
            with torch.no_grad():
                model(ids)

        return forward
    if name == "generate":

        def generate() -> None:
            with torch.no_grad():
                model.generate(ids, max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=0)

        return generate
    raise KeyError(name)


def allocate_64_mib() -> None:
    """A workload of known size: one 64 MiB fp32 tensor, written (so resident), then freed."""
    t = torch.ones(16 * MiB)
    assert t.numel() * t.element_size() == 64 * MiB

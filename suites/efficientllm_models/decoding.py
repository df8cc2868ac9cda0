"""Greedy decoding with a KV cache, the same loop for every model of an axis.

`CachedGreedy(model).generate(...)` has the signature `efficiency.generate` calls (it forces
`min_new_tokens = max_new_tokens` and passes a streamer: `put(prompt)`, then `put(token)`
per generated token, then `end()`), so TTFT and TPOT come from the same clock for
transformers models and for the NSA model, whose cache is its own. `decode_step(model, prompt)`
is one step of that loop on its own, for counting what a step costs at a given context length.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch


class CachedGreedy:
    def __init__(self, model: Any) -> None:
        self.model = model
        self.last_cache: Any = None
        self.last_ids: torch.Tensor | None = None
        # transformers >= 5.x names the argument `cache`; older releases `past_key_values`.
        self._cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        *,
        max_new_tokens: int,
        min_new_tokens: int | None = None,
        streamer: Any = None,
        **_: Any,
    ) -> torch.Tensor:
        if streamer is not None:
            streamer.put(input_ids)
        out = self.model(input_ids, use_cache=True)
        cache = out.past_key_values
        ids = [input_ids]
        for i in range(max_new_tokens):
            token = out.logits[:, -1:].argmax(-1)
            ids.append(token)
            if streamer is not None:
                streamer.put(token)
            if i + 1 < max_new_tokens:
                out = self.model(token, use_cache=True, **{self._cache_arg: cache})
                cache = out.past_key_values
        if streamer is not None:
            streamer.end()
        self.last_cache = cache
        self.last_ids = torch.cat(ids, dim=1)
        return self.last_ids


def decode_step(model: Any, prompt: torch.Tensor) -> Callable[[], Any]:
    """One cached greedy decode step after `prompt`: the prompt is prefilled now; the returned
    callable feeds the next token against that cache, the call `CachedGreedy` makes per token."""
    arg = CachedGreedy(model)._cache_arg
    with torch.no_grad():
        out = model(prompt, use_cache=True)
    token = out.logits[:, -1:].argmax(-1)
    cache = out.past_key_values

    @torch.no_grad()
    def step() -> Any:
        return model(token, use_cache=True, **{arg: cache})

    return step

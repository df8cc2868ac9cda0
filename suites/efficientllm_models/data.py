"""Fixed text that ships with Python: the stdlib's `pydoc_data.topics` documentation strings.

Byte-level tokens (vocabulary 256) for the models the suites build from configs, so no
tokenizer download is needed; deterministic slices for training and held-out evaluation.
"""

from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=1)
def corpus_text() -> str:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


@functools.lru_cache(maxsize=1)
def byte_tokens() -> torch.Tensor:
    """The corpus as int64 byte ids (about 0.8 M tokens)."""
    data = corpus_text().encode("utf-8")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).to(torch.int64)


def training_batches(steps: int, batch: int, seq_len: int) -> list[torch.Tensor]:
    """`steps` batches of `batch` x `seq_len` consecutive byte windows from the first 90% of the corpus."""
    tokens = byte_tokens()
    train = tokens[: int(tokens.numel() * 0.9)]
    need = steps * batch * seq_len
    if need > train.numel():
        raise ValueError(f"{steps} steps of {batch}x{seq_len} need {need} tokens; the corpus has {train.numel()}")
    stride = train.numel() // (steps * batch)
    starts = [i * stride for i in range(steps * batch)]
    windows = torch.stack([train[s : s + seq_len] for s in starts])
    return list(windows.view(steps, batch, seq_len))


def heldout_batch(batch: int, seq_len: int) -> torch.Tensor:
    """`batch` x `seq_len` byte windows from the last 10% of the corpus (never trained on)."""
    tokens = byte_tokens()
    held = tokens[int(tokens.numel() * 0.9) :]
    stride = max(seq_len, held.numel() // batch - 1)
    return torch.stack([held[i * stride : i * stride + seq_len] for i in range(batch)])

"""The fixed short training run: the training-step workload and the loss it reaches.

`TrainingRun` performs `len(batches)` AdamW steps on fixed byte batches. The first step runs
once under FlopCounterMode (it counts the step's FLOPs and is the warm-up); every later step
is one measured round in an `efficiency.window`. Held-out loss before and after is the
technique's quality cost, recorded beside its efficiency.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@torch.no_grad()
def heldout_loss(model: nn.Module, batch: torch.Tensor) -> float:
    """Mean next-token cross-entropy (nats) on `batch`, in eval mode, from the logits alone."""
    was_training = model.training
    model.eval()
    logits = model(batch).logits
    model.train(was_training)
    return float(
        nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1))
    )


def causal_lm_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """The model's own next-token loss (auxiliary losses, e.g. MoE balancing, included)."""
    return model(input_ids=batch, labels=batch).loss


@dataclass
class TrainingRun:
    """`len(batches)` AdamW steps of `loss_fn(model, batch)` (default: the causal-LM loss);
    the text and the image suites share it."""

    model: nn.Module
    lr: float
    loss_fn: Callable[[nn.Module, Any], torch.Tensor] = causal_lm_loss
    optimizer: torch.optim.Optimizer = field(init=False)

    def __post_init__(self) -> None:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("nothing to train: no parameter requires grad")
        self.optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=0.0)

    def step(self, batch: Any) -> float:
        """One training step: forward, backward, AdamW."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model, batch)
        loss.backward()
        self.optimizer.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"training loss became {value}")
        return value

    def run(
        self, efficiency: Any, batches: list[Any], params: int, *, tokens: int | None = None, samples: int | None = None
    ) -> list[float]:
        """Step 0 counted (untimed), steps 1.. measured one window each; returns the training losses.

        `tokens`/`samples` per step default to a token batch's batch x sequence and batch size.
        """
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            losses = [self.step(batches[0])]
        flops = int(counter.get_total_flops())
        if tokens is None or samples is None:
            batch, seq = batches[0].shape
            tokens = batch * seq if tokens is None else tokens
            samples = batch if samples is None else samples
        for b in batches[1:]:
            with efficiency.window(tokens=tokens, samples=samples, params=params, flops=flops):
                losses.append(self.step(b))
        return losses

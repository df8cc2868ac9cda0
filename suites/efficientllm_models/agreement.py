"""How closely a cheaper copy of a model (another precision, a quantized one) follows its fp32
reference on the same inputs: KL divergence of the next-token distributions, and top-1 agreement.

The KL is computed in float64. A half-precision copy's KL from fp32 is about 2e-8 nats per token
on the suites' models, while the rounding error of the same sum in float32 is about 3e-8: in
float32 it read 1.9e-8 with one torch build and -5.3e-9 with another, on the same weights.
"""

from __future__ import annotations

import torch


def kl_per_token(ref_logits: torch.Tensor, logits: torch.Tensor) -> float:
    """KL(reference || copy) in nats, mean over the positions of the last dimension's distributions."""
    ref = ref_logits.double().log_softmax(-1)
    return float((ref.exp() * (ref - logits.double().log_softmax(-1))).sum(-1).mean())


def top1_agreement(ref_logits: torch.Tensor, logits: torch.Tensor) -> float:
    """The share of positions whose most likely token is the reference's."""
    return float((logits.argmax(-1) == ref_logits.argmax(-1)).float().mean())

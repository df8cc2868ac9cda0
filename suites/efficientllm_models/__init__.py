"""Shared model builders, scales and counting helpers for the EfficientLLM suites.

Reusable by every suite module (attention, MoE, fine-tuning, quantization, and the vision /
VLM / distributed suites): `scales` holds every size, `builders` every model, `counting`
every exact count, `agreement` a cheaper copy's KL and top-1 agreement with its fp32 reference,
`data` the fixed corpus, `training` the fixed short training run, `decoding` the cached greedy
loop, `smollm2` the real pretrained model's perplexity.
"""

from .builders import NotApplicable, seed
from .scales import SCALES, Scale, get_scale

__all__ = ["NotApplicable", "SCALES", "Scale", "get_scale", "seed"]

"""The suites' quality-against-fp32 helpers (`suites/efficientllm_models/agreement.py`), against
distributions whose divergence is known."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from tests.helpers import REPO_ROOT

# Loaded from its file: the package's __init__ imports transformers, which this needs not.
_spec = importlib.util.spec_from_file_location("agreement", REPO_ROOT / "suites/efficientllm_models/agreement.py")
assert _spec is not None and _spec.loader is not None
agreement = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(agreement)


def test_kl_and_top1_of_two_known_distributions() -> None:
    ref = torch.tensor([[0.6, 0.4], [0.25, 0.75]]).log()
    copy = torch.tensor([[0.2, 0.8], [0.25, 0.75]]).log()
    expected = (0.6 * math.log(0.6 / 0.2) + 0.4 * math.log(0.4 / 0.8) + 0.0) / 2
    assert agreement.kl_per_token(ref, copy) == pytest.approx(expected, rel=1e-6)
    assert agreement.top1_agreement(ref, copy) == 0.5  # the first position's most likely token moved


def test_a_copy_that_differs_by_rounding_reads_its_small_positive_kl() -> None:
    # A half-precision copy of a model moves its logits by ~1e-4: KL ~1e-8 nats, below the rounding
    # error of the same sum in float32 (it read negative there). To second order, KL(p || q) for
    # logits moved by d is half the variance of d under p.
    gen = torch.Generator().manual_seed(0)
    ref = torch.randn(256, 256, generator=gen) * 3
    moved = 1e-4 * torch.randn(256, 256, generator=gen)
    p = ref.double().softmax(-1)
    d = moved.double()
    second_order = float((0.5 * ((p * d * d).sum(-1) - (p * d).sum(-1) ** 2)).mean())
    kl = agreement.kl_per_token(ref, ref + moved)
    assert kl > 0 and kl == pytest.approx(second_order, rel=0.02), (kl, second_order)

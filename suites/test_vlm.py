"""Vision-language: a tiny Qwen2.5-VL fine-tuned and quantized (EfficientLLM's PEFT and quantization axes on a VLM).

transformers' `Qwen2_5_VLForConditionalGeneration` from a config scaled by `--scale` (random
weights), on synthetic image-text samples the project generates: a grating image and a caption
naming the stripes' orientation, which only the image tells. Techniques, with the text suites' ids:

- fine-tuning (`test_train_step`): full; freeze (the vision tower and patch merger frozen, the
  language side trains); lora, rslora, dora on the language model's projections only (peft).
  One round = one AdamW step on `batch` image-text samples (samples_per_s, energy_per_sample
  and the study's ST are per sample); the held-out caption loss is the quality beside the cost.
- adapters on a quantized base (`test_train_step_quantized`): int8/int4 weights (optimum-quanto)
  with LoRA; DoRA on a quantized layer skips with the reason.
- inference (`test_prefill_decode`): fp32 (the reference), bf16, int8, int4: prefill with one
  image, then greedy decoding; TTFT covers the image encoding, TPOT and energy_per_token are
  per generated token; quality = divergence of the next-token distributions from fp32.

Counted facts asserted: trainable parameters exactly as each technique dictates (adapter ranks:
sum r (d_in + d_out), DoRA one magnitude per output feature); Adam state two moments per trainable
parameter, none for a frozen vision tower; int4 weight storage ~ 1/4 of bf16, int8 ~ 1/2.
"""

from __future__ import annotations

import math

import pytest
import torch
from efficientllm_models.agreement import kl_per_token, top1_agreement
from efficientllm_models.builders import (
    NotApplicable,
    lora_layers,
    quantized_linear_types,
    to_precision,
)
from efficientllm_models.counting import (
    _flat,
    optimizer_state_bytes,
    param_count,
    storage_bytes,
)
from efficientllm_models.training import TrainingRun
from vision_models import (
    PAPER_FAMILIES,  # noqa: F401 - named by the conftest's scale fixture when it skips paper
    VLM_FINETUNE,
    VLM_PRECISIONS,
    apply_vlm_technique,
    eval_loss,
    require,
    to_device,
    train_dtype,
    vision_scale,
    vision_tower,
    vlm_loss,
    vlm_model,
    vlm_samples,
    vlm_settings,
    vlm_slice,
    weight_storage_bytes,
)

require("transformers")


def _batches(v, device, dtype):
    data = vlm_samples(v, v.train_steps * v.batch, seed=1)
    batches = [
        to_device(vlm_slice(data, i * v.batch, (i + 1) * v.batch, v), device, dtype) for i in range(v.train_steps)
    ]
    return batches, to_device(vlm_slice(vlm_samples(v, 2 * v.batch, seed=3), 0, 2 * v.batch, v), device, dtype)


def _expected_trainable(model, technique, total, vision_total, rank):
    if technique == "full":
        return total
    if technique == "freeze":
        return total - vision_total
    adapted = [m.base_layer for _, m in lora_layers(model)]
    lora = sum(rank * (lin.in_features + lin.out_features) for lin in adapted)
    return lora + (sum(lin.out_features for lin in adapted) if technique == "dora" else 0)


def _train(efficiency, model, technique, scale, device, total, vision_total):
    """The fixed run, its counts and the assertions every technique shares."""
    v = vision_scale(scale).vlm
    vision_params = {id(p) for p in vision_tower(model).parameters()}
    trainable = param_count(model, trainable_only=True)
    efficiency.count("params", total, method="base model parameters (vision tower + language model)")
    efficiency.count("trainable_params", trainable, method="parameters with requires_grad")
    efficiency.count(
        "trainable_fraction",
        trainable / total,
        unit="fraction",
        direction="lower",
        method="trainable_params / base model parameters",
    )
    batches, held = _batches(v, device, next(model.parameters()).dtype)
    seq = batches[0]["input_ids"].shape[1]
    before = eval_loss(model, vlm_loss, held)
    run = TrainingRun(model, v.lr, vlm_loss)
    losses = run.run(efficiency, batches, total, tokens=v.batch * seq, samples=v.batch)
    after = eval_loss(model, vlm_loss, held)
    efficiency.quality(
        "heldout_caption_loss",
        after,
        direction="lower",
        method=f"byte cross-entropy (nats) of the orientation captions of {held['input_ids'].shape[0]} held-out "
        f"synthetic image-text samples (seed 3) after {len(losses)} AdamW steps from seed 0; "
        f"before training {before:.4f}",
    )
    state = optimizer_state_bytes(run.optimizer)
    vision_state = sum(
        t.numel() * t.element_size()
        for p, st in run.optimizer.state.items()
        if id(p) in vision_params
        for t in st.values()
        if isinstance(t, torch.Tensor) and t.dim() > 0
    )
    efficiency.count(
        "optimizer_state_bytes",
        state,
        unit="B",
        direction="lower",
        method="bytes of AdamW's per-parameter state tensors (exp_avg, exp_avg_sq)",
    )
    efficiency.count(
        "vision_optimizer_state_bytes",
        vision_state,
        unit="B",
        direction="lower",
        method="bytes of AdamW's state held for vision-tower parameters",
    )
    elem = next(p for p in model.parameters() if p.requires_grad).element_size()
    assert state == 2 * elem * trainable, "Adam keeps two moments per trainable parameter"
    if technique == "full":
        assert vision_state == 2 * elem * vision_total
    else:
        assert vision_state == 0, f"{technique}: the frozen vision tower holds {vision_state} B of optimizer state"
        assert not any(p.requires_grad for p in vision_tower(model).parameters())
    assert after < before, (
        f"{technique}: held-out caption loss did not fall over the fixed run ({before:.4f} -> {after:.4f})"
    )
    return trainable


@pytest.mark.efficiency(workload="finetune")
@pytest.mark.parametrize("technique", VLM_FINETUNE)
def test_train_step(efficiency, scale, device, technique):
    v = vision_scale(scale).vlm
    base = vlm_model(scale).to(device=device, dtype=train_dtype(scale))
    total, vision_total = param_count(base), param_count(vision_tower(base))
    try:
        model = apply_vlm_technique(base, technique, scale)
    except NotApplicable as exc:
        pytest.skip(str(exc))
    efficiency.settings(
        **vlm_settings(technique, scale),
        batch=v.batch,
        steps=v.train_steps,
        lr=v.lr,
        optimizer="AdamW",
        dtype=scale.train_dtype,
        sample="one image + 'stripes: ' + caption; loss on the caption",
    )
    trainable = _train(efficiency, model, technique, scale, device, total, vision_total)
    assert trainable == _expected_trainable(model, technique, total, vision_total, scale.lora_rank)
    if technique in ("lora", "rslora", "dora"):
        adapted = [n for n, _ in lora_layers(model)]
        assert len(adapted) == 7 * v.layers and all("language_model" in n for n in adapted), adapted
        want = scale.lora_alpha / (math.sqrt(scale.lora_rank) if technique == "rslora" else scale.lora_rank)
        assert all(m.scaling["default"] == pytest.approx(want) for _, m in lora_layers(model))


@pytest.mark.efficiency(workload="finetune")
@pytest.mark.parametrize(
    "precision,technique",
    [("int8", "lora"), ("int4", "lora"), ("int4", "dora")],
    ids=["int8-lora", "int4-lora", "int4-dora"],
)
def test_train_step_quantized(efficiency, scale, device, precision, technique):
    require("optimum.quanto")
    v = vision_scale(scale).vlm
    reference = vlm_model(scale).to(device)
    total, vision_total = param_count(reference), param_count(vision_tower(reference))
    base = to_precision(reference, precision)
    try:
        model = apply_vlm_technique(base, technique, scale)
    except NotApplicable as exc:
        pytest.skip(str(exc))
    efficiency.settings(
        **vlm_settings(technique, scale),
        precision=precision,
        batch=v.batch,
        steps=v.train_steps,
        lr=v.lr,
        optimizer="AdamW",
        quantized="optimum-quanto weights of every Linear but lm_head; bf16 compute",
    )
    trainable = _train(efficiency, model, technique, scale, device, total, vision_total)
    assert trainable == _expected_trainable(model, technique, total, vision_total, scale.lora_rank)


@pytest.mark.efficiency(workload="inference", rounds=3)
@pytest.mark.parametrize("precision", VLM_PRECISIONS)
def test_prefill_decode(efficiency, scale, device, precision):
    v = vision_scale(scale).vlm
    if precision in ("int8", "int4"):
        require("optimum.quanto")
    reference = vlm_model(scale).to(device).eval()
    model = reference if precision == "fp32" else to_precision(reference, precision)
    sample = vlm_samples(v, 1, seed=5)
    prompt_len = int(sample["prompt_tokens"])
    ids = sample["input_ids"][:, :prompt_len].to(device)
    image = {"pixel_values": sample["pixel_values"].to(device), "image_grid_thw": sample["image_grid_thw"].to(device)}
    efficiency.settings(
        **vlm_settings("full", scale),
        precision=precision,
        prompt="one image + 'stripes: '",
        decoding="greedy, KV cache (transformers generate)",
        quantized="optimum-quanto weights of every Linear but lm_head; bf16 compute"
        if precision in ("int8", "int4")
        else "none",
    )
    efficiency.generate(model, ids, max_new_tokens=v.decode_tokens, params=param_count(model), do_sample=False, **image)

    with torch.no_grad():
        ref_logits = reference(input_ids=ids, **image).logits.float()
        logits = model(input_ids=ids, **image).logits.float()
        out = model.generate(
            ids, max_new_tokens=v.decode_tokens, min_new_tokens=v.decode_tokens, do_sample=False, **image
        )
        full = model(input_ids=out, **image).logits[0, prompt_len - 1 : -1].float()
    kl, agreement = kl_per_token(ref_logits, logits), top1_agreement(ref_logits, logits)
    method = f"next-token distributions over the {prompt_len} prompt positions (one image) vs the fp32 reference"
    efficiency.quality(
        "kl_vs_fp32", kl, direction="lower", method=f"KL(fp32 || {precision}) in nats, mean over {method}"
    )
    efficiency.quality("top1_agreement_vs_fp32", agreement, direction="higher", method=f"argmax agreement of {method}")
    efficiency.compression(
        storage_bytes=storage_bytes(model),
        reference_bytes=storage_bytes(reference),
        quality=math.exp(-kl),
        reference_quality=1.0,
        quality_name="exp(-KL vs fp32)",
        higher_is_better=True,
        weights=param_count(reference),
    )
    # The cache must not change the answer: each greedy token is the argmax of a full forward over the same ids.
    chosen = full.gather(-1, out[0, prompt_len:, None]).squeeze(-1)
    assert torch.all(full.max(-1).values - chosen <= 1e-2 * full.abs().max()), f"{precision}: cached decoding diverged"
    if precision == "fp32":
        assert kl == 0.0 and agreement == 1.0
        return
    assert 0.0 <= kl < 0.5, (
        f"{precision}: KL {kl:.4f} from fp32: the quantized model no longer computes the same function"
    )
    if precision in ("int8", "int4"):
        names = [n for n, m in model.named_modules() if isinstance(m, quantized_linear_types())]
        weights = dict(reference.named_modules())
        n = sum(weights[name].weight.numel() for name in names)
        stored = weight_storage_bytes(model, names)
        bf16 = 2 * n
        modules = dict(model.named_modules())
        packed = sum(
            leaf.numel() * leaf.element_size() for name in names for leaf in _flat(modules[name].weight.detach())[:1]
        )  # quanto's integer data, before its scales
        efficiency.count(
            "quantized_weight_bytes",
            stored,
            unit="B",
            direction="lower",
            method="stored bytes of the quantized Linear weights: packed integers + scales (+ shifts)",
        )
        efficiency.count(
            "bf16_weight_bytes", bf16, unit="B", direction="info", method="2 bytes x the same weights' parameter count"
        )
        bits = 8 if precision == "int8" else 4
        assert packed * 8 == n * bits, f"{precision}: packed integer data is {packed} B for {n} weights"
        assert stored / bf16 == pytest.approx(bits / 16, abs=0.02), (
            f"{precision} weight storage is {stored / bf16:.4f} of bf16; expected ~{bits}/16 (scales included)"
        )

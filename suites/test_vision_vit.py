"""Vision, encoder: a ViT with MHA, MQA and GQA (EfficientLLM §8, attention variants transfer to vision).

transformers' ViT encoder (`ViTForMaskedImageModeling`, random weights from a config scaled by `--scale`)
with its key/value projections narrowed to the study's 1 (MQA) or 2 (GQA) heads, shared by
groups of query heads through transformers' own SDPA path. Workloads, metrics per image
(`samples` = images; `tokens` = patches + [CLS]):

- `test_forward`: a batch of images through the encoder (inference).
- `test_train_step`: the fixed short masked-image-modelling run (SimMIM: half the patches
  masked, L1 reconstruction of their pixels — a denoising loss) on synthetic oriented, tinted
  gratings the project generates; one round = one AdamW step; the held-out reconstruction
  loss it reaches is the quality beside the cost.

Counted facts asserted: key/value activation bytes per image equal their closed form and order
MQA < GQA < MHA; grouped attention is exactly MHA over repeated key/value heads.
"""

from __future__ import annotations

import pytest
import torch
from efficientllm_models.counting import param_count
from efficientllm_models.training import TrainingRun
from vision_models import (
    PAPER_FAMILIES,  # noqa: F401 - named by the conftest's scale fixture when it skips paper
    VISION_ATTENTION,
    VIT_KV_PROJECTIONS,
    PatchSizeError,
    ViTShape,
    eval_loss,
    gratings,
    kv_activation_bytes,
    patch_masks,
    require,
    to_device,
    train_dtype,
    vision_scale,
    vit_layers,
    vit_loss,
    vit_model,
    vit_settings,
)

require("transformers")


def _vit(variant, scale, device):
    return vit_model(variant, scale).to(device=device, dtype=train_dtype(scale))


def _kv_bytes_per_image(model, v, device, scale):
    images, _ = gratings(v.batch, v.image_px, v.classes, seed=7)
    images = to_device(images, device, train_dtype(scale))
    return kv_activation_bytes(model, VIT_KV_PROJECTIONS, lambda: model.vit(pixel_values=images)) // v.batch


@pytest.mark.efficiency(workload="inference")
@pytest.mark.parametrize("variant", VISION_ATTENTION)
def test_forward(efficiency, scale, device, variant):
    v = vision_scale(scale).vit
    model = _vit(variant, scale, device).eval()
    images = to_device(gratings(v.batch, v.image_px, v.classes, seed=2)[0], device, train_dtype(scale))
    efficiency.settings(**vit_settings(variant, scale), batch=v.batch)
    outputs = []

    @torch.no_grad()
    def forward():
        outputs[:] = [model.vit(pixel_values=images).last_hidden_state]

    efficiency.measure(forward, tokens=v.batch * v.tokens, samples=v.batch, params=param_count(model))
    efficiency.count(
        "kv_activation_bytes_per_image",
        _kv_bytes_per_image(model, v, device, scale),
        unit="B/image",
        direction="lower",
        method="bytes of the K/V tensors the attention projections produce / images",
    )
    assert outputs[0].shape == (v.batch, v.tokens, v.hidden) and torch.isfinite(outputs[0]).all()


@pytest.mark.efficiency(workload="pretrain")
@pytest.mark.parametrize("variant", VISION_ATTENTION)
def test_train_step(efficiency, scale, device, variant):
    v = vision_scale(scale).vit
    model = _vit(variant, scale, device)
    images, _ = gratings(v.train_steps * v.batch, v.image_px, v.classes, seed=1)
    masks = patch_masks(v.train_steps * v.batch, v, seed=2)
    batches = [
        to_device(
            (images[i * v.batch : (i + 1) * v.batch], masks[i * v.batch : (i + 1) * v.batch]),
            device,
            train_dtype(scale),
        )
        for i in range(v.train_steps)
    ]
    held = to_device(
        (gratings(4 * v.batch, v.image_px, v.classes, seed=3)[0], patch_masks(4 * v.batch, v, seed=4)),
        device,
        train_dtype(scale),
    )
    efficiency.settings(
        **vit_settings(variant, scale),
        batch=v.batch,
        steps=v.train_steps,
        lr=v.lr,
        optimizer="AdamW",
        objective="masked image modelling (SimMIM): 50% of patches masked, L1 pixel reconstruction",
    )
    before = eval_loss(model, vit_loss, held)
    losses = TrainingRun(model, v.lr, vit_loss).run(
        efficiency, batches, param_count(model), tokens=v.batch * v.tokens, samples=v.batch
    )
    after = eval_loss(model, vit_loss, held)
    efficiency.quality(
        "reconstruction_loss",
        after,
        direction="lower",
        method=f"L1 of masked-patch pixels on {held[0].shape[0]} held-out synthetic gratings (fixed masks, "
        f"seeds 3/4) after {len(losses)} AdamW steps from seed 0; before training {before:.4f}",
    )
    assert after < before, f"{variant}: held-out loss did not fall over the fixed run ({before:.4f} -> {after:.4f})"


def test_kv_activation_bytes(efficiency, scale, device):
    """K/V activation bytes per image: exactly 2 x layers x tokens x kv_heads x head_dim x bytes: MQA < GQA < MHA."""
    v = vision_scale(scale).vit
    per_image = {}
    for variant in VISION_ATTENTION:
        model = _vit(variant, scale, device).eval()
        per_image[variant] = _kv_bytes_per_image(model, v, device, scale)
        efficiency.count(
            f"kv_activation_bytes_per_image_{variant}",
            per_image[variant],
            unit="B/image",
            direction="lower",
            method="bytes of the K/V tensors the attention projections produce in one forward / images",
        )
        elem = next(model.parameters()).element_size()
        kv = vit_settings(variant, scale)["kv_heads"]
        assert per_image[variant] == 2 * v.layers * v.tokens * kv * v.head_dim * elem, variant
        del model
    assert per_image["mqa"] < per_image["gqa"] < per_image["mha"]


@pytest.mark.parametrize("variant", ["mqa", "gqa"])
def test_grouped_attention_is_mha_over_shared_heads(scale, device, variant):
    v = vision_scale(scale).vit
    grouped = _vit(variant, scale, device).eval()
    mha = _vit("mha", scale, device).eval()
    kv = vit_settings(variant, scale)["kv_heads"]
    with torch.no_grad():
        for gl, ml in zip(vit_layers(grouped), vit_layers(mha)):
            for name in VIT_KV_PROJECTIONS:
                g, m = getattr(gl.attention, name), getattr(ml.attention, name)
                m.weight.copy_(
                    g.weight.view(kv, v.head_dim, -1).repeat_interleave(v.heads // kv, 0).reshape_as(m.weight)
                )
                m.bias.copy_(g.bias.view(kv, v.head_dim).repeat_interleave(v.heads // kv, 0).reshape_as(m.bias))
        images = to_device(gratings(2, v.image_px, v.classes, seed=5)[0], device, train_dtype(scale))
        want = mha.vit(pixel_values=images).last_hidden_state
        got = grouped.vit(pixel_values=images).last_hidden_state
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_image_not_divisible_into_patches_is_a_usage_error(scale):
    v = vision_scale(scale).vit
    with pytest.raises(
        PatchSizeError,
        match=rf"ViT images: image size {v.image_px + 2} px does not divide into "
        rf"{v.patch}-px patches.*use a multiple of {v.patch}, e.g. {v.image_px} or "
        rf"{v.image_px + v.patch}",
    ):
        ViTShape(**{**v.__dict__, "image_px": v.image_px + 2})

"""Vision, diffusion transformer: the SD3 MM-DiT denoiser with MHA, MQA and GQA (EfficientLLM §8).

The study carries its attention variants over to image generation (DiT-XL/2: FID 19.47 with
MHA, 8.71 GQA, 8.93 MQA). Here the denoiser is diffusers' `SD3Transformer2DModel` (random
weights from a config scaled by `--scale`), MQA/GQA with the study's 1 and 2 key/value heads
(`vision_models.GroupedJointAttnProcessor`; MHA keeps diffusers' own processor). Workloads:

- `test_train_step`: the fixed short rectified-flow training run on synthetic sinusoid latents
  the project generates; one round = one AdamW step on `batch` images (AL: s/step;
  samples_per_s, energy_per_sample: per image); the held-out denoising loss it reaches is
  the quality beside the cost.
- `test_denoise`: sampling with diffusers' `FlowMatchEulerDiscreteScheduler` (SD3's shift 3),
  a fixed number of steps at fixed resolution, no guidance; one round = one denoising step
  of `batch` images (AL: s/step; energy_per_sample: J per image per step; tokens = patches).

Counted facts asserted: key/value activation bytes per image equal their closed form and order
MQA < GQA < MHA; the grouped processor computes exactly MHA over repeated key/value heads.
"""

from __future__ import annotations

import pytest
import torch
from efficientllm_models.counting import param_count
from efficientllm_models.training import TrainingRun
from vision_models import (
    DIT_KV_PROJECTIONS,
    PAPER_FAMILIES,  # noqa: F401 - named by the conftest's scale fixture when it skips paper
    VISION_ATTENTION,
    DiTShape,
    GroupedJointAttnProcessor,
    PatchSizeError,
    dit_loss,
    dit_model,
    dit_settings,
    eval_loss,
    flow_matching_batch,
    grating_latents,
    kv_activation_bytes,
    require,
    to_device,
    train_dtype,
    vision_scale,
)

require("diffusers")


def _dit(variant, scale, device):
    return dit_model(variant, scale).to(device=device, dtype=train_dtype(scale))


def _on(batch, device, scale):
    return to_device(batch, device, train_dtype(scale))


def _forward(model, batch):
    return lambda: model(
        hidden_states=batch["noisy"],
        encoder_hidden_states=batch["context"],
        pooled_projections=batch["pooled"],
        timestep=batch["timestep"],
    )


def _kv_bytes_per_image(model, d, device, scale):
    batch = _on(flow_matching_batch(grating_latents(d.batch, d, seed=7), seed=8), device, scale)
    return kv_activation_bytes(model, DIT_KV_PROJECTIONS, _forward(model, batch)) // d.batch


@pytest.mark.efficiency(workload="pretrain")
@pytest.mark.parametrize("variant", VISION_ATTENTION)
def test_train_step(efficiency, scale, device, variant):
    d = vision_scale(scale).dit
    model = _dit(variant, scale, device)
    data = grating_latents(d.train_steps * d.batch, d, seed=1)
    batches = [
        _on(
            flow_matching_batch({k: v[i * d.batch : (i + 1) * d.batch] for k, v in data.items()}, seed=100 + i),
            device,
            scale,
        )
        for i in range(d.train_steps)
    ]
    held = _on(flow_matching_batch(grating_latents(2 * d.batch, d, seed=2), seed=3), device, scale)
    efficiency.settings(
        **dit_settings(variant, scale),
        batch=d.batch,
        steps=d.train_steps,
        lr=d.lr,
        optimizer="AdamW",
        objective="rectified flow (SD3): velocity MSE, sigma ~ logit-normal",
        tokens="image patch tokens",
    )
    efficiency.count(
        "kv_activation_bytes_per_image",
        _kv_bytes_per_image(model, d, device, scale),
        unit="B/image",
        direction="lower",
        method="bytes of the K/V tensors the joint attention's projections produce / images",
    )
    before = eval_loss(model, dit_loss, held)
    losses = TrainingRun(model, d.lr, dit_loss).run(
        efficiency, batches, param_count(model), tokens=d.batch * d.patches, samples=d.batch
    )
    after = eval_loss(model, dit_loss, held)
    efficiency.quality(
        "denoising_loss",
        after,
        direction="lower",
        method=f"flow-matching velocity MSE on {2 * d.batch} held-out synthetic sinusoid latents (fixed noise "
        f"and sigmas, seeds 2/3) after {len(losses)} AdamW steps from seed 0; before training {before:.4f}",
    )
    assert after < before, (
        f"{variant}: held-out denoising loss did not fall over the fixed run ({before:.4f} -> {after:.4f})"
    )


@pytest.mark.efficiency(workload="inference")
@pytest.mark.parametrize("variant", VISION_ATTENTION)
def test_denoise(efficiency, scale, device, variant):
    from diffusers import FlowMatchEulerDiscreteScheduler
    from torch.utils.flop_counter import FlopCounterMode

    d = vision_scale(scale).dit
    model = _dit(variant, scale, device).eval()
    cond = _on(grating_latents(d.batch, d, seed=2), device, scale)
    start = torch.randn(d.batch, d.channels, d.latent_px, d.latent_px, generator=torch.Generator().manual_seed(4))
    start = _on(start, device, scale)
    efficiency.settings(
        **dit_settings(variant, scale),
        batch=d.batch,
        denoising_steps=d.denoise_steps,
        scheduler=f"diffusers FlowMatchEulerDiscreteScheduler(shift={d.shift})",
        guidance="none",
        round="one denoising step of `batch` images",
        tokens="image patch tokens",
    )
    params = param_count(model)

    @torch.no_grad()
    def sample(measure: bool) -> torch.Tensor:
        scheduler = FlowMatchEulerDiscreteScheduler(shift=d.shift)
        scheduler.set_timesteps(d.denoise_steps, device=device)
        latents = start.clone()
        for t in scheduler.timesteps:

            def step(latents=latents, t=t):
                velocity = model(
                    hidden_states=latents,
                    encoder_hidden_states=cond["context"],
                    pooled_projections=cond["pooled"],
                    timestep=t.expand(d.batch),
                ).sample
                return scheduler.step(velocity, t, latents).prev_sample

            if measure:
                with efficiency.window(tokens=d.batch * d.patches, samples=d.batch, params=params, flops=flops):
                    latents = step()
            else:
                latents = step()
        return latents

    with torch.no_grad(), FlopCounterMode(display=False) as counter:  # one step's FLOPs, counted untimed
        _forward(
            model,
            {
                "noisy": start,
                "context": cond["context"],
                "pooled": cond["pooled"],
                "timestep": torch.full((d.batch,), 500.0, device=device, dtype=start.dtype),
            },
        )()
    flops = int(counter.get_total_flops())
    sample(measure=False)  # warm-up: the same sampling run, untimed
    record = efficiency.record
    final = sample(measure=True)
    efficiency.count(
        "kv_activation_bytes_per_image",
        _kv_bytes_per_image(model, d, device, scale),
        unit="B/image",
        direction="lower",
        method="bytes of the K/V tensors the joint attention's projections produce / images",
    )
    assert record.metrics["rounds"].value == d.denoise_steps
    assert final.shape == start.shape and torch.isfinite(final).all()
    assert not torch.allclose(final, start), f"{variant}: {d.denoise_steps} denoising steps left the latents unchanged"


def test_kv_activation_bytes(efficiency, scale, device):
    """K/V activation bytes per image: exactly 2 x kv_heads x head_dim x bytes x the tokens every attention sees
    (joint attention: patches + text tokens; SD3.5's dual attention: patches), so MQA < GQA < MHA for the same
    shapes."""
    d = vision_scale(scale).dit
    per_image = {}
    for variant in VISION_ATTENTION:
        model = _dit(variant, scale, device).eval()
        per_image[variant] = _kv_bytes_per_image(model, d, device, scale)
        efficiency.count(
            f"kv_activation_bytes_per_image_{variant}",
            per_image[variant],
            unit="B/image",
            direction="lower",
            method="bytes of the K/V tensors the joint attention's projections produce in one forward / images",
        )
        elem = next(model.parameters()).element_size()
        kv = dit_settings(variant, scale)["kv_heads"]
        tokens = d.layers * (d.patches + d.context_tokens) + len(d.dual_attention_layers) * d.patches
        assert per_image[variant] == 2 * tokens * kv * d.head_dim * elem, variant
        del model
    assert per_image["mqa"] < per_image["gqa"] < per_image["mha"]


@pytest.mark.parametrize("variant", ["mqa", "gqa"])
def test_grouped_attention_is_mha_over_shared_heads(scale, device, variant):
    """Our processor = diffusers' MHA processor on a model whose K/V heads are the grouped ones, repeated per group."""
    d = vision_scale(scale).dit
    grouped = _dit(variant, scale, device).eval()
    mha = _dit("mha", scale, device).eval()
    kv = dit_settings(variant, scale)["kv_heads"]
    with torch.no_grad():
        for gb, mb in zip(grouped.transformer_blocks, mha.transformer_blocks):
            for name in DIT_KV_PROJECTIONS:
                g, m = getattr(gb.attn, name), getattr(mb.attn, name)
                if g is None:
                    continue
                m.weight.copy_(
                    g.weight.view(kv, d.head_dim, -1).repeat_interleave(d.heads // kv, 0).reshape_as(m.weight)
                )
                m.bias.copy_(g.bias.view(kv, d.head_dim).repeat_interleave(d.heads // kv, 0).reshape_as(m.bias))
    batch = _on(flow_matching_batch(grating_latents(2, d, seed=5), seed=6), device, scale)
    with torch.no_grad():
        want = _forward(mha, batch)().sample
        got = _forward(grouped, batch)().sample
        assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
        # and with every head its own, our processor computes what diffusers' JointAttnProcessor2_0 does
        for block in mha.transformer_blocks:
            block.attn.set_processor(GroupedJointAttnProcessor())
        assert torch.allclose(_forward(mha, batch)().sample, want, atol=1e-6)


def test_latents_not_divisible_into_patches_is_a_usage_error(scale):
    d = vision_scale(scale).dit
    with pytest.raises(
        PatchSizeError, match=rf"does not divide into {d.patch}-px patches.*use a multiple of {d.patch}"
    ):
        DiTShape(**{**d.__dict__, "latent_px": d.latent_px + 1})


def test_missing_library_skips_with_install_hint():
    with pytest.raises(pytest.skip.Exception, match=r"not installed.*install it with: pip install diffusers-nightly"):
        require("diffusers_nightly_not_installed", "pip install diffusers-nightly")

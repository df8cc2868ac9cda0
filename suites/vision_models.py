"""Shared builders for the vision and vision-language suites (docs/suites.md, "attention variants transfer to vision").

Reuses the text suites' `Scale` (its MQA/GQA key/value heads, LoRA rank/alpha/dropout and
learning-rate conventions), `NotApplicable`, counting and quantization helpers, and adds:

- `vision_scale(scale)`: the image models' shapes per `--scale` (tiny, small, paper).
- `dit_model(variant, scale)`: the SD3 MM-DiT (diffusers `SD3Transformer2DModel`) with MHA
  (diffusers' own `JointAttnProcessor2_0`) or MQA/GQA through `GroupedJointAttnProcessor`,
  ours: the key/value projections of both streams narrowed to `kv_heads` heads shared by
  groups of query heads (diffusers has no grouped processor for the joint attention).
- `vit_model(variant, scale)`: transformers' ViT with its key/value projections narrowed the
  same way; transformers' SDPA path shares them across query groups (`num_key_value_groups`).
- `vlm_model(scale)` + `apply_vlm_technique(model, technique, scale)`: a tiny Qwen2.5-VL;
  full, freeze (vision tower frozen), LoRA/RSLoRA/DoRA on the language side only.
- Synthetic data the project generates deterministically (no downloads): oriented gratings
  for the encoders, smooth sinusoid latents with an informative text conditioning for the
  denoiser, grating images with a caption naming their orientation for the VLM.

Units are in the names: `_bytes` bytes, `_params` parameter counts, sizes in pixels.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest
import torch
from efficientllm_models.builders import PEFT_TARGETS, NotApplicable, submodule
from efficientllm_models.scales import Scale
from torch import nn

VISION_ATTENTION = ("mha", "mqa", "gqa")
VLM_FINETUNE = ("full", "freeze", "lora", "rslora", "dora")
VLM_PRECISIONS = ("fp32", "bf16", "int8", "int4")

INSTALL_HINTS = {
    "diffusers": "pip install 'diffusers>=0.32'  (or: pip install -e '.[suites]')",
    "transformers": "pip install transformers  (or: pip install -e '.[suites]')",
    "peft": "pip install peft  (or: pip install -e '.[suites]')",
    "optimum.quanto": "pip install optimum-quanto  (or: pip install -e '.[suites]')",
}


def require(module: str, hint: str | None = None) -> ModuleType:
    """Import `module`, or skip (the whole test module when called at import) naming the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        how = hint or INSTALL_HINTS.get(module, f"pip install {module.split('.')[0]}")
        pytest.skip(f"{module} is not installed ({exc}); install it with: {how}", allow_module_level=True)


class PatchSizeError(ValueError):
    """An image size that does not divide into the model's patches; the message says what to use."""


def check_patches(image_px: int, patch_px: int, what: str) -> int:
    """Patches per side of a square image; `PatchSizeError` naming valid sizes when it does not divide."""
    if image_px <= 0 or patch_px <= 0:
        raise PatchSizeError(f"{what}: image size {image_px} px and patch size {patch_px} px must be positive")
    if image_px % patch_px:
        lower, upper = image_px - image_px % patch_px, image_px - image_px % patch_px + patch_px
        options = f"{lower} or {upper}" if lower else f"{upper}"
        raise PatchSizeError(
            f"{what}: image size {image_px} px does not divide into {patch_px}-px patches "
            f"({image_px} % {patch_px} = {image_px % patch_px}); use a multiple of {patch_px}, e.g. {options}"
        )
    return image_px // patch_px


def train_dtype(scale: Scale) -> torch.dtype:
    """The scale's training dtype (float32 at tiny/small, bfloat16 at paper, as in the text suites)."""
    return getattr(torch, scale.train_dtype)


def to_device(obj: Any, device: torch.device | str, dtype: torch.dtype | None = None) -> Any:
    """`obj` (a tensor, or a dict/tuple/list of them) on `device`; floating tensors cast to `dtype` when given."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device=device, dtype=dtype if dtype is not None and obj.is_floating_point() else obj.dtype)
    if isinstance(obj, dict):
        return {k: to_device(v, device, dtype) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_device(v, device, dtype) for v in obj)
    return obj


# -- shapes per scale --------------------------------------------------------------------------


@dataclass(frozen=True)
class DiTShape:
    """SD3 MM-DiT denoiser on latents: `latent_px` square latents of `channels`, `patch` px patches."""

    latent_px: int
    channels: int
    patch: int
    layers: int
    heads: int
    head_dim: int
    context_tokens: int  # text tokens of the conditioning stream
    joint_dim: int  # text encoder width
    caption_dim: int  # caption projection width
    pooled_dim: int
    pos_embed_max: int  # positional grid side, in patches
    batch: int  # images per training step or sampling round
    train_steps: int
    denoise_steps: int  # denoising steps of one sampling run (each a measured round)
    lr: float
    qk_norm: str | None = "rms_norm"
    dual_attention_layers: tuple[int, ...] = ()
    shift: float = 3.0  # SD3's flow-matching timestep shift

    def __post_init__(self) -> None:
        side = check_patches(self.latent_px, self.patch, "SD3 MM-DiT latents")
        if side > self.pos_embed_max:
            raise PatchSizeError(
                f"SD3 MM-DiT latents: {side} patches per side exceed the positional grid of "
                f"{self.pos_embed_max}; use latents of at most {self.pos_embed_max * self.patch} px"
            )

    @property
    def patches(self) -> int:
        return (self.latent_px // self.patch) ** 2


@dataclass(frozen=True)
class ViTShape:
    image_px: int
    patch: int
    channels: int
    hidden: int
    layers: int
    heads: int
    intermediate: int
    classes: int  # orientations (and tints) of the synthetic gratings
    batch: int
    train_steps: int
    lr: float

    def __post_init__(self) -> None:
        check_patches(self.image_px, self.patch, "ViT images")

    @property
    def tokens(self) -> int:
        """Sequence length per image: patches plus the [CLS] token."""
        return (self.image_px // self.patch) ** 2 + 1

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


@dataclass(frozen=True)
class VLMShape:
    """Qwen2.5-VL: a Qwen2 language model and a windowed ViT whose 2x2 patches merge into one token."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int  # bytes (256) plus specials; the last four ids are the vision specials
    vision_hidden: int
    vision_depth: int
    vision_heads: int
    vision_intermediate: int
    image_px: int
    batch: int  # image-text samples per training step
    train_steps: int
    decode_tokens: int
    lr: float
    patch: int = 14
    merge: int = 2
    temporal_patch: int = 2
    window_px: int = 112
    fullatt_blocks: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        check_patches(self.image_px, self.patch * self.merge, "Qwen2.5-VL images (patch x spatial merge)")

    @property
    def image_tokens(self) -> int:
        """Language-side tokens of one image: (side / patch)^2 patches merged merge^2 to one."""
        return (self.image_px // self.patch) ** 2 // self.merge**2


@dataclass(frozen=True)
class VisionScale:
    name: str
    dit: DiTShape
    vit: ViTShape
    vlm: VLMShape
    paper_families: tuple[str, ...] = ()


_TINY = VisionScale(
    "tiny",
    dit=DiTShape(
        latent_px=16,
        channels=4,
        patch=2,
        layers=2,
        heads=4,
        head_dim=16,
        context_tokens=8,
        joint_dim=32,
        caption_dim=64,
        pooled_dim=32,
        pos_embed_max=16,
        batch=4,
        train_steps=6,
        denoise_steps=4,
        lr=2e-3,
    ),
    vit=ViTShape(
        image_px=32,
        patch=8,
        channels=3,
        hidden=64,
        layers=2,
        heads=4,
        intermediate=128,
        classes=4,
        batch=16,
        train_steps=6,
        lr=2e-3,
    ),
    vlm=VLMShape(
        hidden=128,
        layers=2,
        heads=4,
        kv_heads=2,
        intermediate=256,
        vocab=320,
        vision_hidden=128,
        vision_depth=2,
        vision_heads=4,
        vision_intermediate=256,
        image_px=56,
        batch=4,
        train_steps=6,
        decode_tokens=8,
        lr=3e-3,
        window_px=56,
        fullatt_blocks=(1,),
    ),
)

_SMALL = VisionScale(
    "small",
    dit=DiTShape(
        latent_px=32,
        channels=16,
        patch=2,
        layers=4,
        heads=8,
        head_dim=32,
        context_tokens=32,
        joint_dim=128,
        caption_dim=256,
        pooled_dim=128,
        pos_embed_max=32,
        batch=4,
        train_steps=20,
        denoise_steps=8,
        lr=1e-3,
    ),
    vit=ViTShape(
        image_px=64,
        patch=8,
        channels=3,
        hidden=256,
        layers=4,
        heads=8,
        intermediate=1024,
        classes=4,
        batch=16,
        train_steps=20,
        lr=1e-3,
    ),
    vlm=VLMShape(
        hidden=256,
        layers=4,
        heads=8,
        kv_heads=2,
        intermediate=768,
        vocab=320,
        vision_hidden=256,
        vision_depth=4,
        vision_heads=8,
        vision_intermediate=768,
        image_px=112,
        batch=4,
        train_steps=12,
        decode_tokens=16,
        lr=1e-3,
        fullatt_blocks=(3,),
    ),
)

# The study's vision families: SD3.5-medium's MM-DiT (24 heads of 64, 24 blocks, dual attention in
# the first 13, 128x128 latents of 16 channels), ViT-B/16 at 224 px, and Qwen2.5-VL-3B.
_PAPER = VisionScale(
    "paper",
    dit=DiTShape(
        latent_px=128,
        channels=16,
        patch=2,
        layers=24,
        heads=24,
        head_dim=64,
        context_tokens=333,
        joint_dim=4096,
        caption_dim=1536,
        pooled_dim=2048,
        pos_embed_max=384,
        batch=1,
        train_steps=20,
        denoise_steps=28,
        lr=1e-4,
        dual_attention_layers=tuple(range(13)),
    ),
    vit=ViTShape(
        image_px=224,
        patch=16,
        channels=3,
        hidden=768,
        layers=12,
        heads=12,
        intermediate=3072,
        classes=4,
        batch=32,
        train_steps=20,
        lr=1e-4,
    ),
    vlm=VLMShape(
        hidden=2048,
        layers=36,
        heads=16,
        kv_heads=2,
        intermediate=11008,
        vocab=151936,
        vision_hidden=1280,
        vision_depth=32,
        vision_heads=16,
        vision_intermediate=3420,
        image_px=448,
        batch=1,
        train_steps=20,
        decode_tokens=128,
        lr=1e-4,
        fullatt_blocks=(7, 15, 23, 31),
    ),
    paper_families=("SD3.5-medium MM-DiT", "ViT-B/16", "Qwen2.5-VL-3B"),
)

VISION_SCALES = {s.name: s for s in (_TINY, _SMALL, _PAPER)}
# What `--scale=paper` builds in a vision test module; the conftest's `scale` fixture names them
# when it skips that scale without a GPU.
PAPER_FAMILIES = _PAPER.paper_families


def vision_scale(scale: Scale) -> VisionScale:
    try:
        return VISION_SCALES[scale.name]
    except KeyError:
        raise ValueError(
            f"no vision shapes for scale {scale.name!r}; expected one of {', '.join(VISION_SCALES)}"
        ) from None


def kv_heads_of(variant: str, heads: int, scale: Scale) -> int:
    """The study's key/value heads: MHA all, MQA `scale.mqa_kv_heads` (1), GQA `scale.gqa_kv_heads` (2)."""
    kv = {"mha": heads, "mqa": scale.mqa_kv_heads, "gqa": scale.gqa_kv_heads}.get(variant)
    if kv is None:
        raise NotApplicable(
            f"unknown attention variant {variant!r} for vision; expected one of {', '.join(VISION_ATTENTION)}"
        )
    if heads % kv:
        raise NotApplicable(f"{variant}: {heads} query heads do not split into groups over {kv} key/value heads")
    return kv


def _narrow(linear: nn.Linear, out_features: int) -> nn.Linear:
    """A fresh Linear like `linear` (same input, bias, dtype, default init) with `out_features` outputs."""
    return nn.Linear(
        linear.in_features,
        out_features,
        bias=linear.bias is not None,
        device=linear.weight.device,
        dtype=linear.weight.dtype,
    )


# -- SD3 MM-DiT ------------------------------------------------------------------------------------


class GroupedJointAttnProcessor:
    """diffusers' `JointAttnProcessor2_0` with key/value heads shared by groups of query heads (MQA/GQA).

    The image stream's `to_k`/`to_v` and the text stream's `add_k_proj`/`add_v_proj` produce
    `kv_heads` heads (their width says how many); SDPA's `enable_gqa` shares each among
    `heads // kv_heads` query heads. With `kv_heads == heads` it computes exactly what
    `JointAttnProcessor2_0` computes.
    """

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        residual = hidden_states
        batch = hidden_states.shape[0]
        query = attn.to_q(hidden_states)
        head_dim = query.shape[-1] // attn.heads

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, -1, x.shape[-1] // head_dim, head_dim).transpose(1, 2)

        query, key, value = heads(query), heads(attn.to_k(hidden_states)), heads(attn.to_v(hidden_states))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if encoder_hidden_states is not None:
            c_query = heads(attn.add_q_proj(encoder_hidden_states))
            c_key = heads(attn.add_k_proj(encoder_hidden_states))
            c_value = heads(attn.add_v_proj(encoder_hidden_states))
            if attn.norm_added_q is not None:
                c_query = attn.norm_added_q(c_query)
            if attn.norm_added_k is not None:
                c_key = attn.norm_added_k(c_key)
            query = torch.cat([query, c_query], dim=2)
            key = torch.cat([key, c_key], dim=2)
            value = torch.cat([value, c_value], dim=2)
        out = nn.functional.scaled_dot_product_attention(
            query, key, value, dropout_p=0.0, is_causal=False, enable_gqa=key.shape[1] != query.shape[1]
        )
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        if encoder_hidden_states is not None:
            out, encoder_hidden_states = out[:, : residual.shape[1]], out[:, residual.shape[1] :]
            if not attn.context_pre_only:
                encoder_hidden_states = attn.to_add_out(encoder_hidden_states)
        out = attn.to_out[1](attn.to_out[0](out))
        return (out, encoder_hidden_states) if encoder_hidden_states is not None else out


DIT_KV_PROJECTIONS = ("to_k", "to_v", "add_k_proj", "add_v_proj")
VIT_KV_PROJECTIONS = ("k_proj", "v_proj")


def dit_settings(variant: str, scale: Scale) -> dict[str, Any]:
    d = vision_scale(scale).dit
    kv = kv_heads_of(variant, d.heads, scale)
    processor = (
        "diffusers JointAttnProcessor2_0"
        if variant == "mha"
        else "suites.vision_models.GroupedJointAttnProcessor (to_k/to_v/add_k_proj/add_v_proj narrowed to "
        "kv_heads, shared by query-head groups via SDPA enable_gqa)"
    )
    return {
        "attention": variant,
        "heads": d.heads,
        "kv_heads": kv,
        "head_dim": d.head_dim,
        "layers": d.layers,
        "latent_px": d.latent_px,
        "latent_channels": d.channels,
        "patch": d.patch,
        "image_tokens": d.patches,
        "context_tokens": d.context_tokens,
        "qk_norm": d.qk_norm,
        "attention_processor": processor,
        "model": "diffusers SD3Transformer2DModel (MM-DiT), random weights, seed 0",
    }


def dit_model(variant: str, scale: Scale, seed: int = 0) -> nn.Module:
    """The SD3 MM-DiT with `variant` attention; every other weight identical across variants (same seed)."""
    require("diffusers")
    from diffusers import SD3Transformer2DModel

    d = vision_scale(scale).dit
    kv = kv_heads_of(variant, d.heads, scale)
    torch.manual_seed(seed)
    model = SD3Transformer2DModel(
        sample_size=d.latent_px,
        patch_size=d.patch,
        in_channels=d.channels,
        num_layers=d.layers,
        attention_head_dim=d.head_dim,
        num_attention_heads=d.heads,
        joint_attention_dim=d.joint_dim,
        caption_projection_dim=d.caption_dim,
        pooled_projection_dim=d.pooled_dim,
        out_channels=d.channels,
        pos_embed_max_size=d.pos_embed_max,
        dual_attention_layers=d.dual_attention_layers,
        qk_norm=d.qk_norm,
    )
    if variant != "mha":
        torch.manual_seed(seed + 1)
        for block in model.transformer_blocks:
            for attn in [block.attn] + ([block.attn2] if getattr(block, "attn2", None) is not None else []):
                for name in DIT_KV_PROJECTIONS:
                    proj = getattr(attn, name, None)
                    if proj is not None:
                        setattr(attn, name, _narrow(proj, kv * d.head_dim))
                attn.set_processor(GroupedJointAttnProcessor())
    return model


def grating_latents(n: int, d: DiTShape, seed: int) -> dict[str, torch.Tensor]:
    """`n` smooth sinusoid latents and a text conditioning that describes them (a fixed projection of their parameters).

    Deterministic in `seed`; the conditioning carries the frequencies and phases, so a denoiser
    can learn to use it.
    """
    g = torch.Generator().manual_seed(seed)
    freq = torch.randint(1, 4, (n, d.channels, 2), generator=g).float()
    phase = torch.rand(n, d.channels, generator=g) * 2 * math.pi
    axis = torch.linspace(0.0, 1.0, d.latent_px)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    arg = 2 * math.pi * (freq[..., 0, None, None] * xx + freq[..., 1, None, None] * yy) + phase[..., None, None]
    latents = torch.sin(arg)
    features = torch.cat([freq.flatten(1) / 3, torch.sin(phase), torch.cos(phase)], dim=1)  # n x 4C
    proj_g = torch.Generator().manual_seed(12345)  # the same "text encoder" for every split
    to_ctx = torch.randn(features.shape[1], d.context_tokens * d.joint_dim, generator=proj_g) / math.sqrt(
        features.shape[1]
    )
    to_pooled = torch.randn(features.shape[1], d.pooled_dim, generator=proj_g) / math.sqrt(features.shape[1])
    return {
        "latents": latents,
        "context": (features @ to_ctx).view(n, d.context_tokens, d.joint_dim),
        "pooled": features @ to_pooled,
    }


def flow_matching_batch(data: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Rectified-flow training inputs (SD3): sigma ~ logit-normal, x_t = (1 - sigma) x_0 + sigma noise,
    target = noise - x_0."""
    g = torch.Generator().manual_seed(seed)
    x0 = data["latents"]
    noise = torch.randn(x0.shape, generator=g)
    sigma = torch.sigmoid(torch.randn(x0.shape[0], generator=g))
    s = sigma.view(-1, 1, 1, 1)
    return {
        "noisy": (1 - s) * x0 + s * noise,
        "timestep": sigma * 1000,
        "target": noise - x0,
        "context": data["context"],
        "pooled": data["pooled"],
    }


def dit_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Flow-matching loss: mean squared error of the predicted velocity."""
    pred = model(
        hidden_states=batch["noisy"],
        encoder_hidden_states=batch["context"],
        pooled_projections=batch["pooled"],
        timestep=batch["timestep"],
    ).sample
    return nn.functional.mse_loss(pred.float(), batch["target"].float())


# -- ViT --------------------------------------------------------------------------------------------


def vit_settings(variant: str, scale: Scale) -> dict[str, Any]:
    v = vision_scale(scale).vit
    kv = kv_heads_of(variant, v.heads, scale)
    return {
        "attention": variant,
        "heads": v.heads,
        "kv_heads": kv,
        "head_dim": v.head_dim,
        "hidden": v.hidden,
        "layers": v.layers,
        "image_px": v.image_px,
        "patch": v.patch,
        "tokens_per_image": v.tokens,
        "attention_processor": "transformers ViTAttention, sdpa; k_proj/v_proj narrowed to kv_heads, shared "
        "across query groups by transformers' num_key_value_groups (SDPA enable_gqa)",
        "model": "transformers ViTForMaskedImageModeling (ViT encoder + SimMIM pixel decoder), random weights, seed 0",
    }


def vit_layers(model: nn.Module) -> nn.ModuleList:
    """The encoder layers of a transformers ViT (`vit.layers` in transformers 5, `vit.encoder.layer` before)."""
    vit = getattr(model, "vit", model)
    return vit.layers if hasattr(vit, "layers") else vit.encoder.layer


def vit_model(variant: str, scale: Scale, seed: int = 0) -> nn.Module:
    require("transformers")
    from transformers import ViTConfig, ViTForMaskedImageModeling

    v = vision_scale(scale).vit
    kv = kv_heads_of(variant, v.heads, scale)
    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=v.image_px,
        patch_size=v.patch,
        num_channels=v.channels,
        hidden_size=v.hidden,
        num_hidden_layers=v.layers,
        num_attention_heads=v.heads,
        intermediate_size=v.intermediate,
        encoder_stride=v.patch,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    config._attn_implementation = "sdpa"  # the path that shares key/value heads across query groups
    model = ViTForMaskedImageModeling(config)
    if variant != "mha":
        torch.manual_seed(seed + 1)
        for layer in vit_layers(model):
            attn = layer.attention
            attn.k_proj = _narrow(attn.k_proj, kv * v.head_dim)
            attn.v_proj = _narrow(attn.v_proj, kv * v.head_dim)
            attn.num_key_value_groups = v.heads // kv
    return model


def gratings(n: int, size_px: int, classes: int, seed: int, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` images of stripes whose orientation (`classes` angles over 180 degrees) and tint (a fixed palette) tell
    the label; random frequency, phase, tint jitter and noise; pixel values in [0, 1]. Deterministic in `seed`."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    labels = labels[torch.randperm(n, generator=g)]
    angle = labels.float() * math.pi / classes
    freq = 2 + 3 * torch.rand(n, generator=g)
    phase = 2 * math.pi * torch.rand(n, generator=g)
    axis = torch.linspace(0.0, 1.0, size_px)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    wave = torch.sin(
        2
        * math.pi
        * freq[:, None, None]
        * (torch.cos(angle)[:, None, None] * xx + torch.sin(angle)[:, None, None] * yy)
        + phase[:, None, None]
    )
    palette = torch.rand(classes, channels, generator=torch.Generator().manual_seed(999))  # each class its own tint
    colour = (palette[labels] + 0.2 * torch.rand(n, channels, generator=g))[..., None, None]
    images = (
        0.2
        + 0.6 * colour * (0.5 + 0.5 * wave[:, None])
        + 0.05 * torch.randn(n, channels, size_px, size_px, generator=g)
    )
    return images.clamp(0, 1), labels


def patch_masks(n: int, v: ViTShape, seed: int, ratio: float = 0.5) -> torch.Tensor:
    """SimMIM-style masks: exactly `ratio` of each image's patches masked, chosen by a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    patches = v.tokens - 1
    order = torch.stack([torch.randperm(patches, generator=g) for _ in range(n)])
    return order < int(patches * ratio)


def vit_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Masked-image modelling (SimMIM): L1 reconstruction of the masked patches' pixels."""
    images, masks = batch
    return model(pixel_values=images, bool_masked_pos=masks).loss


# -- counting -------------------------------------------------------------------------------------


def kv_activation_bytes(model: nn.Module, projections: tuple[str, ...], forward: Callable[[], Any]) -> int:
    """Bytes of the key/value tensors the attention projections named `projections` produce in one `forward()`.

    Counted from the tensors themselves (forward hooks on the projection modules), not from a config.
    """
    total = [0]

    def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        total[0] += output.numel() * output.element_size()

    handles = [
        m.register_forward_hook(hook) for name, m in model.named_modules() if name.rsplit(".", 1)[-1] in projections
    ]
    if not handles:
        raise ValueError(f"{type(model).__name__}: no modules named {', '.join(projections)}")
    try:
        with torch.no_grad():
            forward()
    finally:
        for h in handles:
            h.remove()
    return total[0]


def weight_storage_bytes(model: nn.Module, names: list[str]) -> int:
    """Stored bytes of the `weight` of each named module: packed integers plus scales and shifts for quanto weights."""
    from efficientllm_models.counting import _flat

    modules = dict(model.named_modules())
    return sum(leaf.numel() * leaf.element_size() for n in names for leaf in _flat(modules[n].weight.detach()))


# -- the fixed short training run ------------------------------------------------------------------


@torch.no_grad()
def eval_loss(model: nn.Module, loss_fn: Callable[[nn.Module, Any], torch.Tensor], batch: Any) -> float:
    was = model.training
    model.eval()
    value = float(loss_fn(model, batch))
    model.train(was)
    return value


# -- Qwen2.5-VL -----------------------------------------------------------------------------------

VLM_LANGUAGE_TARGETS = r".*language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"


def vlm_model(scale: Scale, seed: int = 0) -> nn.Module:
    require("transformers")
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    s = vision_scale(scale).vlm
    head_dim = s.hidden // s.heads
    section = head_dim // 2 - 2 * (
        head_dim // 2 * 3 // 8
    )  # temporal; height and width take 3/8 of the frequencies each
    v = s.vocab
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=v,
            hidden_size=s.hidden,
            intermediate_size=s.intermediate,
            num_hidden_layers=s.layers,
            num_attention_heads=s.heads,
            num_key_value_heads=s.kv_heads,
            max_position_embeddings=4096,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 1e6,
                "mrope_section": [section, head_dim // 2 * 3 // 8, head_dim // 2 * 3 // 8],
            },
            bos_token_id=None,
            eos_token_id=None,
            pad_token_id=None,
        ),
        vision_config=dict(
            depth=s.vision_depth,
            hidden_size=s.vision_hidden,
            intermediate_size=s.vision_intermediate,
            num_heads=s.vision_heads,
            out_hidden_size=s.hidden,
            patch_size=s.patch,
            spatial_merge_size=s.merge,
            temporal_patch_size=s.temporal_patch,
            window_size=s.window_px,
            fullatt_block_indexes=list(s.fullatt_blocks),
        ),
        image_token_id=v - 4,
        video_token_id=v - 3,
        vision_start_token_id=v - 2,
        vision_end_token_id=v - 1,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.pad_token_id = None
    model.generation_config.eos_token_id = None
    return model


def vision_tower(model: nn.Module) -> nn.Module:
    """The Qwen2.5-VL vision encoder and its patch merger (`model.visual`), through a peft wrapper too."""
    return submodule(model, ("model.visual", "visual", "base_model.model.model.visual"), "vision tower")


def vlm_settings(technique: str, scale: Scale) -> dict[str, Any]:
    s = vision_scale(scale).vlm
    common = {
        "model": "transformers Qwen2_5_VLForConditionalGeneration, random weights, seed 0",
        "hidden": s.hidden,
        "layers": s.layers,
        "vision_depth": s.vision_depth,
        "image_px": s.image_px,
        "image_tokens": s.image_tokens,
    }
    if technique == "full":
        return common | {"finetune": "full"}
    if technique == "freeze":
        return common | {"finetune": "freeze", "frozen": "vision tower and patch merger (model.visual)"}
    if technique in ("lora", "rslora", "dora"):
        return common | {
            "finetune": technique,
            "lora_rank": scale.lora_rank,
            "lora_alpha": scale.lora_alpha,
            "lora_dropout": scale.lora_dropout,
            "target_modules": list(PEFT_TARGETS),
            "adapted": "language model only; vision tower frozen",
        }
    raise NotApplicable(f"unknown fine-tuning technique {technique!r}; expected one of {', '.join(VLM_FINETUNE)}")


def apply_vlm_technique(model: nn.Module, technique: str, scale: Scale) -> nn.Module:
    """Set `model` up for `technique`: full; freeze (vision tower frozen, language side trains);
    LoRA/RSLoRA/DoRA on the language model's projections (everything else frozen)."""
    vlm_settings(technique, scale)
    if technique == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if technique == "freeze":
        for p in model.parameters():
            p.requires_grad_(True)
        for p in vision_tower(model).parameters():
            p.requires_grad_(False)
        return model
    require("peft")
    from peft import LoraConfig, get_peft_model

    if technique == "dora":
        quantized = [
            n
            for n, m in model.named_modules()
            if type(m).__module__.startswith("optimum.quanto") and re.fullmatch(VLM_LANGUAGE_TARGETS, n)
        ]
        if quantized:
            raise NotApplicable(
                f"DoRA on quantized layers ({quantized[0]}, ...) cannot apply: peft's DoRA needs the "
                "weight's norm and cannot read optimum-quanto's packed weights (it raises 'The dtype of a "
                "weights Tensor cannot be changed'); use lora or rslora on a quantized model"
            )
    config = LoraConfig(
        r=scale.lora_rank,
        lora_alpha=scale.lora_alpha,
        lora_dropout=scale.lora_dropout,
        target_modules=VLM_LANGUAGE_TARGETS,
        use_rslora=technique == "rslora",
        use_dora=technique == "dora",
        bias="none",
    )
    try:
        return get_peft_model(model, config)
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise NotApplicable(f"peft cannot apply {technique} to {type(model).__name__}: {exc}") from None


CLASS_NAMES = ("level", "rising", "upright", "falling")  # orientation of the stripes, 0/45/90/135 degrees


def image_processor(s: VLMShape) -> Any:
    """transformers' own Qwen2-VL image processor (PIL backend), fixed to the shape's image area (no resizing)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    area = s.image_px * s.image_px
    return Qwen2VLImageProcessorPil(
        size={"shortest_edge": area, "longest_edge": area},
        patch_size=s.patch,
        merge_size=s.merge,
        temporal_patch_size=s.temporal_patch,
    )


def vlm_samples(s: VLMShape, n: int, seed: int) -> dict[str, torch.Tensor]:
    """`n` image-text samples: [vision_start, image tokens, vision_end] "stripes: " <orientation name>.

    Byte tokens; labels cover only the caption (the orientation name), which only the image tells.
    """
    images, labels = gratings(n, s.image_px, len(CLASS_NAMES), seed)
    pixels = image_processor(s)(
        images=[(img * 255).round().to(torch.uint8) for img in images], return_tensors="pt", do_rescale=True
    )
    v = s.vocab
    width = max(len(c) for c in CLASS_NAMES)
    rows, targets = [], []
    for label in labels.tolist():
        prompt = [v - 2] + [v - 4] * s.image_tokens + [v - 1] + list(b"stripes: ")
        caption = list(CLASS_NAMES[label].ljust(width).encode())
        rows.append(prompt + caption)
        targets.append([-100] * len(prompt) + caption)
    return {
        "input_ids": torch.tensor(rows),
        "labels": torch.tensor(targets),
        "pixel_values": pixels["pixel_values"],
        "image_grid_thw": pixels["image_grid_thw"],
        "prompt_tokens": torch.tensor(len(rows[0]) - width),
    }


def vlm_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(
        input_ids=batch["input_ids"],
        labels=batch["labels"],
        pixel_values=batch["pixel_values"],
        image_grid_thw=batch["image_grid_thw"],
    ).loss


def vlm_slice(data: dict[str, torch.Tensor], start: int, stop: int, s: VLMShape) -> dict[str, torch.Tensor]:
    """Samples `start:stop` of `vlm_samples(...)`: their token rows and their images' patch rows."""
    patches = s.image_tokens * s.merge**2  # vision patches per image
    return {
        "input_ids": data["input_ids"][start:stop],
        "labels": data["labels"][start:stop],
        "pixel_values": data["pixel_values"][start * patches : stop * patches],
        "image_grid_thw": data["image_grid_thw"][start:stop],
    }

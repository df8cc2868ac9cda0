"""Model builders for the suites: configs with random weights (seeded), or a local checkpoint.

One function per axis, each taking the technique id the paper uses and a `Scale`:

- `attention_model("mha"|"mqa"|"gqa"|"mla"|"nsa", scale)`: Llama blocks with 8/1/2-style KV
  heads, DeepSeek-V3 multi-head latent attention (transformers' implementation, which caches
  the latent), or native sparse attention; every other part of the decoder the same.
- `ffn_model("dense"|"moe", scale)`: Mistral (dense SwiGLU FFN) vs Mixtral (8 experts, top-2)
  whose top-k experts together are exactly as wide as the dense FFN.
- `finetune_model(scale)` + `apply_technique(model, "full"|"freeze"|"lora"|"rslora"|"dora", scale)`.
- `quant_model(scale)` + `to_precision(model, "fp32"|"bf16"|"fp16"|"int8"|"int4")`.

A technique that cannot apply raises `NotApplicable` with the reason; tests turn it into a skip.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

from .scales import Scale

ATTENTION = ("mha", "mqa", "gqa", "mla", "nsa")
FFN = ("dense", "moe")
FINETUNE = ("full", "freeze", "lora", "rslora", "dora")
PRECISIONS = ("fp32", "bf16", "fp16", "int8", "int4")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PEFT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class NotApplicable(Exception):
    """This technique cannot apply to this model; the message says why (a skip reason)."""


def seed(value: int = 0) -> None:
    torch.manual_seed(value)


def _llama(dec, kv_heads: int, max_pos: int, tie: bool = False):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=dec.vocab,
        hidden_size=dec.hidden,
        intermediate_size=dec.intermediate,
        num_hidden_layers=dec.layers,
        num_attention_heads=dec.heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_pos,
        tie_word_embeddings=tie,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    return LlamaForCausalLM(config)


def attention_settings(variant: str, scale: Scale) -> dict[str, Any]:
    """The technique's settings as the record names them."""
    dec = scale.decoder
    common = {
        "attention": variant,
        "heads": dec.heads,
        "head_dim": dec.head_dim,
        "hidden": dec.hidden,
        "layers": dec.layers,
    }
    if variant == "mha":
        return common | {"kv_heads": dec.heads}
    if variant == "mqa":
        return common | {"kv_heads": scale.mqa_kv_heads}
    if variant == "gqa":
        return common | {"kv_heads": scale.gqa_kv_heads}
    if variant == "mla":
        return common | {
            "kv_lora_rank": scale.latent,
            "qk_rope_head_dim": max(2, dec.head_dim // 2),
            "qk_nope_head_dim": dec.head_dim,
            "v_head_dim": dec.head_dim,
            "q_lora_rank": None,
        }
    if variant == "nsa":
        return common | {
            "kv_heads": scale.gqa_kv_heads,
            "nsa_window": scale.nsa_window,
            "nsa_block": scale.nsa_block,
            "nsa_selected": scale.nsa_selected,
        }
    raise NotApplicable(f"unknown attention variant {variant!r}; expected one of {', '.join(ATTENTION)}")


def attention_model(variant: str, scale: Scale) -> nn.Module:
    s = attention_settings(variant, scale)
    dec = scale.decoder
    max_pos = max(scale.seq_len, scale.decode_prompt + scale.decode_tokens)
    if variant in ("mha", "mqa", "gqa"):
        return _llama(dec, s["kv_heads"], max_pos)
    if variant == "mla":
        from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

        config = DeepseekV3Config(
            vocab_size=dec.vocab,
            hidden_size=dec.hidden,
            intermediate_size=dec.intermediate,
            num_hidden_layers=dec.layers,
            num_attention_heads=dec.heads,
            num_key_value_heads=dec.heads,
            kv_lora_rank=s["kv_lora_rank"],
            q_lora_rank=None,
            qk_rope_head_dim=s["qk_rope_head_dim"],
            qk_nope_head_dim=s["qk_nope_head_dim"],
            v_head_dim=s["v_head_dim"],
            first_k_dense_replace=dec.layers,  # every layer dense: only the attention differs from the Llama variants
            n_routed_experts=1,
            n_shared_experts=0,
            num_experts_per_tok=1,
            n_group=1,
            topk_group=1,
            moe_intermediate_size=dec.intermediate,
            max_position_embeddings=max_pos,
            tie_word_embeddings=False,
            bos_token_id=None,
            eos_token_id=None,
            pad_token_id=None,
        )
        return DeepseekV3ForCausalLM(config)
    from .nsa import NsaForCausalLM

    return NsaForCausalLM(
        vocab=dec.vocab,
        hidden=dec.hidden,
        layers=dec.layers,
        heads=dec.heads,
        kv_heads=s["kv_heads"],
        intermediate=dec.intermediate,
        window=scale.nsa_window,
        block=scale.nsa_block,
        selected=scale.nsa_selected,
    )


def ffn_settings(variant: str, scale: Scale) -> dict[str, Any]:
    dec = scale.decoder
    if variant == "dense":
        return {"ffn": "dense", "intermediate": dec.intermediate}
    if variant == "moe":
        if dec.intermediate % scale.moe_top_k:
            raise NotApplicable(f"dense width {dec.intermediate} is not divisible by top-k {scale.moe_top_k}")
        return {
            "ffn": "moe",
            "experts": scale.moe_experts,
            "top_k": scale.moe_top_k,
            "expert_intermediate": dec.intermediate // scale.moe_top_k,
            "router_aux_loss_coef": scale.moe_aux_loss,
            "experts_implementation": "eager (per-expert loop over routed tokens)",
        }
    raise NotApplicable(f"unknown FFN variant {variant!r}; expected one of {', '.join(FFN)}")


def ffn_model(variant: str, scale: Scale) -> nn.Module:
    """Mistral (dense) or Mixtral (MoE) with the GQA attention; the MoE's top-k experts span the dense width."""
    s = ffn_settings(variant, scale)
    dec = scale.decoder
    common = dict(
        vocab_size=dec.vocab,
        hidden_size=dec.hidden,
        num_hidden_layers=dec.layers,
        num_attention_heads=dec.heads,
        num_key_value_heads=scale.gqa_kv_heads,
        max_position_embeddings=max(scale.seq_len, scale.decode_prompt + scale.decode_tokens),
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    if variant == "dense":
        from transformers import MistralConfig, MistralForCausalLM

        return MistralForCausalLM(MistralConfig(intermediate_size=dec.intermediate, **common))
    from transformers import MixtralConfig, MixtralForCausalLM

    config = MixtralConfig(
        intermediate_size=s["expert_intermediate"],
        num_local_experts=s["experts"],
        num_experts_per_tok=s["top_k"],
        router_aux_loss_coef=s["router_aux_loss_coef"],
        output_router_logits=True,
        **common,
    )
    # The per-expert loop ("eager"): FlopCounterMode counts its matmuls over the routed tokens;
    # it cannot see inside torch._grouped_mm (transformers' default), which would drop the experts' FLOPs.
    config._experts_implementation = "eager"
    return MixtralForCausalLM(config)


def moe_active_params(model: nn.Module) -> tuple[int, int]:
    """(active parameters per token, router parameters) of a Mixtral: all but the unrouted experts."""
    cfg = model.config
    total = sum(p.numel() for p in model.parameters())
    expert_params = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    router_params = sum(p.numel() for n, p in model.named_parameters() if ".gate." in n and ".experts." not in n)
    active = total - expert_params + expert_params * cfg.num_experts_per_tok // cfg.num_local_experts
    return active, router_params


# -- fine-tuning -------------------------------------------------------------------------------


def finetune_model(scale: Scale, model_path: str | None = None) -> nn.Module:
    """A Llama-style decoder (untied head) from the scale, or the checkpoint at `model_path`."""
    if model_path:
        return load_checkpoint(model_path)
    return _llama(scale.decoder, scale.gqa_kv_heads, scale.seq_len)


def finetune_settings(technique: str, scale: Scale) -> dict[str, Any]:
    if technique == "full":
        return {"finetune": "full"}
    if technique == "freeze":
        return {"finetune": "freeze", "trainable_top_layers": scale.freeze_trainable_layers}
    if technique in ("lora", "rslora", "dora"):
        return {
            "finetune": technique,
            "lora_rank": scale.lora_rank,
            "lora_alpha": scale.lora_alpha,
            "lora_dropout": scale.lora_dropout,
            "target_modules": list(PEFT_TARGETS),
        }
    raise NotApplicable(f"unknown fine-tuning technique {technique!r}; expected one of {', '.join(FINETUNE)}")


def submodule(model: nn.Module, paths: tuple[str, ...], what: str) -> Any:
    """The first of the dotted attribute `paths` that exists on `model` (wrappers nest it
    differently), or NotApplicable naming `what` was looked for."""
    for path in paths:
        obj: Any = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return obj
    raise NotApplicable(f"{type(model).__name__}: no {what} found ({paths[0]})")


def _decoder_layers(model: nn.Module) -> nn.ModuleList:
    return submodule(model, ("model.layers", "model.model.layers", "transformer.h"), "decoder layer list to freeze")


def apply_technique(model: nn.Module, technique: str, scale: Scale) -> nn.Module:
    """Set up `model` for fine-tuning with `technique`; returns the model to train."""
    finetune_settings(technique, scale)
    if technique == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if technique == "freeze":
        layers = _decoder_layers(model)
        k = scale.freeze_trainable_layers
        if k >= len(layers):
            raise NotApplicable(
                f"freezing needs more than {k} layers to freeze below the top {k}; the model has {len(layers)}"
            )
        for p in model.parameters():
            p.requires_grad_(False)
        trainable = list(layers[-k:]) + [model.get_output_embeddings()]
        final_norm = getattr(getattr(model, "model", model), "norm", None)
        if final_norm is not None:
            trainable.append(final_norm)
        for module in trainable:
            for p in module.parameters():
                p.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    targets = [n for n in PEFT_TARGETS if any(name.endswith("." + n) for name, _ in model.named_modules())]
    if not targets:
        raise NotApplicable(f"{type(model).__name__} has none of the projections {', '.join(PEFT_TARGETS)} to adapt")
    if technique == "dora":
        quantized = [n for n, m in model.named_modules() if type(m).__module__.startswith("optimum.quanto")]
        if quantized:
            raise NotApplicable(
                f"DoRA on quantized layers ({quantized[0]}, ...) is not supported by peft; use lora or rslora"
            )
    config = LoraConfig(
        r=scale.lora_rank,
        lora_alpha=scale.lora_alpha,
        lora_dropout=scale.lora_dropout,
        target_modules=targets,
        use_rslora=technique == "rslora",
        use_dora=technique == "dora",
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, config)
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise NotApplicable(f"peft cannot apply {technique} to {type(model).__name__}: {exc}") from None


def lora_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The peft-adapted Linear layers (each has `lora_A`, `lora_B`, `base_layer`)."""
    return [(n, m) for n, m in model.named_modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer")]


# -- quantization ------------------------------------------------------------------------------


def quant_model(scale: Scale, model_path: str | None = None) -> nn.Module:
    """The fp32 reference for the quantization axis: a Llama-style decoder with tied embeddings."""
    if model_path:
        return load_checkpoint(model_path)
    return _llama(
        scale.quant, max(1, scale.quant.heads // 2), scale.decode_prompt + scale.decode_tokens + scale.seq_len, tie=True
    )


def to_precision(reference: nn.Module, precision: str) -> nn.Module:
    """A copy of the fp32 `reference` in `precision`: a cast, or quanto int8/int4 weights on bf16.

    quanto leaves `lm_head` alone (`exclude="lm_head"`) so a tied head stays tied to the
    full-precision embedding: the head is stored once, as the embedding.
    """
    if precision in DTYPES:
        return copy.deepcopy(reference).to(DTYPES[precision]).eval()
    if precision not in ("int8", "int4"):
        raise NotApplicable(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    quanto = require("optimum.quanto", "optimum-quanto")
    freeze, qint4, qint8, quantize = quanto.freeze, quanto.qint4, quanto.qint8, quanto.quantize

    model = copy.deepcopy(reference).to(torch.bfloat16).eval()
    quantize(model, weights=qint8 if precision == "int8" else qint4, exclude="lm_head")
    freeze(model)
    return model


def quantized_linear_types() -> tuple[type, ...]:
    return (require("optimum.quanto.nn", "optimum-quanto").QLinear,)


def require(module: str, package: str) -> Any:
    """Import a technique's library, or skip the test with the install command as the reason."""
    return pytest.importorskip(module, reason=f"{module} is not installed: pip install {package}")


# -- local checkpoints -------------------------------------------------------------------------


def load_checkpoint(path: str) -> nn.Module:
    """A causal LM from a local folder; `NotApplicable` when transformers cannot load it as one."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here is "not a model folder we can read"
        raise NotApplicable(
            f"--model-path {path}: not a transformers model folder ({type(exc).__name__}: {exc})"
        ) from None
    try:
        return AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    except (ValueError, KeyError, OSError) as exc:
        raise NotApplicable(
            f"--model-path {path}: transformers cannot load this {getattr(config, 'model_type', '?')!r} "
            f"checkpoint as a causal LM: {exc}"
        ) from None

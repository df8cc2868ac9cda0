"""The suites' scales in one place: model shapes and run lengths for tiny, small and paper.

`paper` follows the EfficientLLM study (docs/suites.md): Qwen2.5-1.5B-shaped decoders (hidden
1536, 28 layers, 12 query heads of 128), sequence length 2048, bf16; MQA 1 KV head, GQA 2,
MLA latent = hidden/8, NSA window 128 / block 64 / 4 selected blocks, MoE 8 experts top-2 with
auxiliary loss 0.01, LoRA rank 64 / alpha 128 / dropout 0.1. `tiny` and `small` keep the same
structure and the same ratios (heads and KV heads, latent = hidden/8, window : block : sequence,
LoRA rank : hidden, experts and top-k) at sizes a CPU runs in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Decoder:
    """A decoder-only transformer's shape. Head dimension = hidden // heads."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


@dataclass(frozen=True)
class Scale:
    name: str
    decoder: Decoder  # attention and fine-tuning axes
    seq_len: int  # training / prefill sequence length
    batch: int  # sequences per training step or prefill
    decode_prompt: int  # prompt tokens before decoding
    decode_tokens: int  # new tokens per decode round
    train_steps: int  # the fixed short training run (rounds of the training-step workload)
    lr: float
    # attention axis (study: MQA 1, GQA 2 KV heads; MLA latent = hidden/8; NSA 128/64/4)
    gqa_kv_heads: int = 2
    mqa_kv_heads: int = 1
    mla_latent: int = 0  # hidden // 8 when 0
    nsa_window: int = 128
    nsa_block: int = 64
    nsa_selected: int = 4
    # FFN axis (study: 8 experts, top-2, aux loss 0.01); expert width so that top-k experts = dense FFN
    moe_experts: int = 8
    moe_top_k: int = 2
    moe_aux_loss: float = 0.01
    # fine-tuning axis (study: rank 64, alpha 128, dropout 0.1 at hidden 1536)
    lora_rank: int = 64
    lora_alpha: int = 128
    lora_dropout: float = 0.1
    freeze_trainable_layers: int = 1  # "freeze": only the top layers, final norm and head train
    # quantization axis: in_features a multiple of quanto's int4 group (128)
    quant_decoder: Decoder | None = None
    train_dtype: str = "float32"
    needs_accelerator: bool = False
    paper_families: tuple[str, ...] = field(default_factory=tuple)

    @property
    def latent(self) -> int:
        return self.mla_latent or self.decoder.hidden // 8

    @property
    def quant(self) -> Decoder:
        return self.quant_decoder or self.decoder


_TINY = Scale(
    name="tiny",
    decoder=Decoder(hidden=64, layers=2, heads=8, intermediate=128, vocab=256),
    seq_len=128,
    batch=4,
    decode_prompt=32,
    decode_tokens=16,
    train_steps=8,
    lr=3e-3,
    # sequence 2048 -> 128 is 1/16: window 128 -> 8, block 64 -> 4
    nsa_window=8,
    nsa_block=4,
    nsa_selected=4,
    # rank : hidden = 64 : 1536 = 1 : 24 -> 64/24 rounded up to a power of two
    lora_rank=4,
    lora_alpha=8,
    quant_decoder=Decoder(hidden=128, layers=2, heads=4, intermediate=256, vocab=256),
)

_SMALL = Scale(
    name="small",
    decoder=Decoder(hidden=256, layers=4, heads=8, intermediate=688, vocab=256),
    seq_len=512,
    batch=4,
    decode_prompt=128,
    decode_tokens=32,
    train_steps=30,
    lr=1e-3,
    # 2048 -> 512 is 1/4: window 32, block 16
    nsa_window=32,
    nsa_block=16,
    nsa_selected=4,
    lora_rank=8,
    lora_alpha=16,
    freeze_trainable_layers=1,
    quant_decoder=Decoder(hidden=512, layers=4, heads=8, intermediate=1408, vocab=256),
)

# Qwen2.5-1.5B's shape (the study's 1.5B column); vocabulary of Qwen2.5.
_PAPER = Scale(
    name="paper",
    decoder=Decoder(hidden=1536, layers=28, heads=12, intermediate=8960, vocab=151936),
    seq_len=2048,
    batch=1,
    decode_prompt=512,
    decode_tokens=128,
    train_steps=20,
    lr=3e-4,
    freeze_trainable_layers=7,
    train_dtype="bfloat16",
    needs_accelerator=True,
    paper_families=("Qwen2.5-1.5B (hidden 1536, 28 layers, 12/2 heads)",),
)

SCALES: dict[str, Scale] = {s.name: s for s in (_TINY, _SMALL, _PAPER)}


def get_scale(name: str) -> Scale:
    """The named scale; ValueError listing the known ones."""
    try:
        return SCALES[name]
    except KeyError:
        raise ValueError(f"unknown scale {name!r}; expected one of {', '.join(SCALES)}") from None


def with_overrides(scale: Scale, **changes: object) -> Scale:
    return replace(scale, **changes)

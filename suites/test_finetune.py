"""Fine-tuning axis: full, parameter freezing, LoRA, RSLoRA, DoRA (peft) — EfficientLLM §PEFT.

One workload, the training step at fixed batch and sequence length, run as a fixed short run
(each step a measured round) with the held-out loss it reaches. The study's settings (LoRA
rank 64, alpha 128, dropout 0.1 at hidden 1536) are scaled in proportion. Counted facts are
asserted: LoRA/RSLoRA trainable parameters are exactly sum r*(d_in + d_out) over the adapted
layers, DoRA adds one magnitude per output feature, RSLoRA scales by alpha/sqrt(r), and Adam's
state is two moments per trainable parameter, so freezing cuts it in proportion. The counted cost
of a training step is asserted where it follows from what each technique computes
(`test_train_step_cost_by_technique`).
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from efficientllm_models.builders import (
    FINETUNE,
    NotApplicable,
    apply_technique,
    finetune_model,
    finetune_settings,
    lora_layers,
)
from efficientllm_models.counting import optimizer_state_bytes, param_count, round_cost
from efficientllm_models.data import heldout_batch, training_batches
from efficientllm_models.training import TrainingRun, heldout_loss

DTYPE_OF = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _expected_trainable(model, technique, scale, total):
    """The closed form of each technique's trainable parameters."""
    if technique == "full":
        return total
    if technique == "freeze":
        base = model
        layers = base.model.layers[-scale.freeze_trainable_layers :]
        return (
            sum(p.numel() for p in layers.parameters()) + base.lm_head.weight.numel() + base.model.norm.weight.numel()
        )
    adapted = [m.base_layer for _, m in lora_layers(model)]
    lora = sum(scale.lora_rank * (lin.in_features + lin.out_features) for lin in adapted)
    return lora + (sum(lin.out_features for lin in adapted) if technique == "dora" else 0)


@pytest.mark.efficiency(workload="finetune")
@pytest.mark.parametrize("technique", FINETUNE)
def test_train_step(efficiency, scale, device, model_path, technique):
    try:
        base = finetune_model(scale, model_path).to(device=device, dtype=DTYPE_OF[scale.train_dtype])
        total = param_count(base)
        model = apply_technique(base, technique, scale)
    except NotApplicable as exc:
        pytest.skip(str(exc))
    vocab = model.get_output_embeddings().weight.shape[0]
    if vocab < 256:
        pytest.skip(f"the byte-level corpus needs a vocabulary of at least 256 ids; this model has {vocab}")
    efficiency.settings(
        **finetune_settings(technique, scale),
        seq_len=scale.seq_len,
        batch=scale.batch,
        steps=scale.train_steps,
        lr=scale.lr,
        dtype=scale.train_dtype,
        optimizer="AdamW",
    )
    trainable = param_count(model, trainable_only=True)
    efficiency.count("params", total, method="base model parameters")
    efficiency.count("trainable_params", trainable, method="parameters with requires_grad")
    efficiency.count(
        "trainable_fraction",
        trainable / total,
        unit="fraction",
        direction="lower",
        method="trainable_params / base model parameters",
    )

    batches = [b.to(device) for b in training_batches(scale.train_steps, scale.batch, scale.seq_len)]
    held = heldout_batch(scale.batch, scale.seq_len).to(device)
    before = heldout_loss(model, held)
    run = TrainingRun(model, scale.lr)
    losses = run.run(efficiency, batches, total)
    after = heldout_loss(model, held)
    efficiency.quality(
        "heldout_loss",
        after,
        direction="lower",
        method=f"byte-level cross-entropy (nats) on {held.numel()} held-out tokens of pydoc_data.topics "
        f"after {len(losses)} AdamW steps from seed 0; before training {before:.4f}",
    )
    state_bytes = optimizer_state_bytes(run.optimizer)
    efficiency.count(
        "optimizer_state_bytes",
        state_bytes,
        unit="B",
        direction="lower",
        method="bytes of AdamW's per-parameter state tensors (exp_avg, exp_avg_sq)",
    )

    if model_path is None:
        assert trainable == _expected_trainable(model, technique, scale, total)
    # Adam keeps two moments per trainable parameter, in the parameter's dtype:
    # freezing (or adapting) cuts the state in exact proportion to the parameters that stop training.
    elem = next(p for p in model.parameters() if p.requires_grad).element_size()
    assert state_bytes == 2 * elem * trainable
    assert state_bytes / (2 * elem * total) == pytest.approx(trainable / total, rel=1e-12)
    if technique in ("lora", "rslora", "dora"):
        r, alpha = scale.lora_rank, scale.lora_alpha
        want = alpha / math.sqrt(r) if technique == "rslora" else alpha / r
        assert all(m.scaling["default"] == pytest.approx(want) for _, m in lora_layers(model))
        if technique == "dora":
            magnitudes = sum(m.lora_magnitude_vector["default"].weight.numel() for _, m in lora_layers(model))
            assert magnitudes == sum(m.base_layer.out_features for _, m in lora_layers(model))
        if scale.name != "tiny":
            assert trainable / total < 0.1, f"{technique} trains {trainable / total:.1%} of the model"
    if technique != "full":
        assert trainable < total
    assert after < before, f"{technique}: held-out loss did not fall over the fixed run ({before:.4f} -> {after:.4f})"


def test_train_step_cost_by_technique(scale, device):
    """Counted cost of one training step on the built model, exact on any machine: RSLoRA == LoRA;
    DoRA > LoRA; LoRA < full in FLOPs; freezing the fewest bytes of all and below full in FLOPs and
    tensor peak (the study: freezing fastest, DoRA slowest)."""
    batches = [b.to(device) for b in training_batches(2, scale.batch, scale.seq_len)]
    cost = {}
    for technique in FINETUNE:
        torch.manual_seed(0)
        model = apply_technique(
            finetune_model(scale).to(device=device, dtype=DTYPE_OF[scale.train_dtype]), technique, scale
        )
        run = TrainingRun(model, scale.lr)
        run.step(batches[0])  # AdamW's state exists from here on, as in every measured round
        cost[technique] = round_cost(functools.partial(run.step, batches[1]))

    def shown(name):
        return ", ".join(f"{t} {cost[t][name]:.4g}" for t in FINETUNE)

    # RSLoRA changes the adapter's scale factor, a number, not a shape: the same work exactly.
    for name in ("bytes_accessed", "flops", "tensor_peak_bytes", "allocated_bytes"):
        assert cost["rslora"][name] == cost["lora"][name], f"{name}: {shown(name)}"
    # DoRA does LoRA's work plus the norm of each adapted weight and the magnitude rescaling.
    for name in ("bytes_accessed", "flops"):
        assert cost["dora"][name] > cost["lora"][name], f"{name}: {shown(name)}"
    # A frozen weight needs no weight-gradient matmul (a third of its training FLOPs); the rank-r
    # adapters add r(d_in + d_out) per token where that saves d_in x d_out.
    assert cost["lora"]["flops"] < cost["full"]["flops"], f"flops: {shown('flops')}"
    # Freezing keeps the forward, stops the backward at the lowest trainable layer and adds nothing.
    others = [t for t in FINETUNE if t != "freeze"]
    assert all(cost["freeze"]["bytes_accessed"] < cost[t]["bytes_accessed"] for t in others), (
        f"bytes_accessed: {shown('bytes_accessed')}"
    )
    for name in ("flops", "tensor_peak_bytes"):
        assert cost["freeze"][name] < cost["full"][name], f"{name}: {shown(name)}"

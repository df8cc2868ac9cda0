"""Distributed training steps at 2 ranks: data parallel (DDP) vs fully sharded (FSDP2 `fully_shard`).

The architecture suite's GQA decoder (`attention_model("gqa", scale)`), AdamW, one fixed
byte batch per rank per step (the ranks see different data). Each test body runs in every
rank (`world_size=2`: gloo on the CPU, NCCL with one GPU per rank); the plugin aggregates
the ranks into one record (slowest rank's latency, global tokens, energy per distinct device).

Counted facts asserted, not just recorded:
* DDP: after a step every rank holds bit-identical gradients, and they are the average of
  gradients that differed per rank (checked with `no_sync`);
* FSDP2: each rank's parameter + optimizer-state bytes are 1/N of what a DDP rank holds (a
  replica), and the shards add up to the replica exactly.

Run it:        pytest suites/test_distributed.py
under torchrun: torchrun --nproc-per-node=2 -m pytest suites/test_distributed.py
"""

from __future__ import annotations

import time

import pytest
import torch
import torch.distributed as dist
from efficientllm_models import Scale, seed
from efficientllm_models.builders import attention_model
from efficientllm_models.counting import param_count
from efficientllm_models.data import training_batches
from torch import nn

WORLD_SIZE = 2
PARALLEL = ("ddp", "fsdp2")


def _local(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of a tensor: the local shard of a DTensor, the tensor itself otherwise."""
    return t.to_local() if hasattr(t, "to_local") else t


def held_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, int]:
    """(parameter bytes, optimizer-state bytes) this rank holds. Units: B."""
    params = sum(_local(p).numel() * p.element_size() for p in model.parameters())
    state = sum(
        _local(v).numel() * v.element_size()
        for s in optimizer.state.values()
        for v in s.values()
        if isinstance(v, torch.Tensor) and v.dim() > 0
    )
    return params, state


def _flat_grads(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.detach().reshape(-1) for p in model.parameters() if p.grad is not None])


class CommClock:
    """Seconds the DDP gradient all-reduces took, launch to completion, summed over buckets. Units: s."""

    def __init__(self) -> None:
        self.seconds = 0.0


def timed_allreduce(clock, bucket):  # noqa: ANN001 - DDP checks a comm hook's annotations at run time
    """DDP's default all-reduce hook (average over ranks), timed into `clock`."""
    t0 = time.perf_counter()
    tensor = bucket.buffer().div_(dist.get_world_size())
    fut = dist.all_reduce(tensor, async_op=True).get_future()

    def done(f):  # noqa: ANN001
        clock.seconds += time.perf_counter() - t0
        return f.value()[0]

    return fut.then(done)


def _wrap(model: nn.Module, parallel: str, device: torch.device) -> tuple[nn.Module, CommClock | None]:
    if parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
        clock = CommClock()
        ddp.register_comm_hook(clock, timed_allreduce)
        return ddp, clock
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model, None


@pytest.mark.efficiency(world_size=WORLD_SIZE, workload="pretrain", rounds=4, warmup=1)
@pytest.mark.parametrize("parallel", PARALLEL)
def test_train_step(efficiency, scale: Scale, parallel: str) -> None:
    rank, world, device = efficiency.rank, efficiency.world_size, efficiency.device
    seed(0)  # the same initial weights in every rank
    model = attention_model("gqa", scale).to(device)
    params = param_count(model)
    batches = [b[rank::world].contiguous().to(device) for b in training_batches(4, scale.batch * world, scale.seq_len)]
    model, clock = _wrap(model, parallel, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=scale.lr, weight_decay=0.0)
    steps = 0

    def step() -> None:
        nonlocal steps
        x = batches[steps % len(batches)]
        model(input_ids=x, labels=x).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        steps += 1

    batch, seq = batches[0].shape
    efficiency.settings(parallel=parallel, attention="gqa", world_size=world)
    run = efficiency.measure(step, tokens=batch * seq, samples=batch, params=params)
    assert run["rounds"].value == 4
    if clock is not None:
        efficiency.comm_time(
            clock.seconds / steps, method="DDP comm hook: gradient all-reduce per bucket, launch to completion"
        )

    param_bytes, state_bytes = held_bytes(model, optimizer)
    efficiency.count(
        "param_bytes_per_rank", param_bytes, unit="B", direction="lower", method="local shard bytes of the parameters"
    )
    efficiency.count(
        "optimizer_bytes_per_rank",
        state_bytes,
        unit="B",
        direction="lower",
        method="local shard bytes of AdamW's exp_avg and exp_avg_sq",
    )
    held = [None] * world
    dist.all_gather_object(held, param_bytes + state_bytes)

    if parallel == "ddp":
        _check_ddp_gradients(model, batches[0], world)
        assert len(set(held)) == 1  # every DDP rank holds a full replica
    else:
        seed(0)
        replica = attention_model("gqa", scale).to(device)
        replica_optimizer = torch.optim.AdamW(replica.parameters(), lr=scale.lr, weight_decay=0.0)
        x = batches[0]
        replica(input_ids=x, labels=x).loss.backward()
        replica_optimizer.step()
        replicated = sum(held_bytes(replica, replica_optimizer))  # what one DDP rank holds
        efficiency.count(
            "replica_bytes", replicated, unit="B", direction="info", method="an unsharded model + AdamW after one step"
        )
        assert sum(held) == replicated, (held, replicated)  # the shards add up to the replica exactly
        assert max(held) <= replicated / world * 1.05, (held, replicated)  # ~1/N on every rank
        efficiency.count(
            "shard_fraction",
            max(held) / replicated,
            unit="fraction",
            direction="lower",
            method="max over ranks of (param + optimizer bytes) / replica's",
        )


def _check_ddp_gradients(model: nn.Module, x: torch.Tensor, world: int) -> None:
    """Local gradients differ across ranks; after DDP's all-reduce they are identical and their mean."""
    with model.no_sync():
        model(input_ids=x, labels=x).loss.backward()
    local = _flat_grads(model).clone()
    model.zero_grad(set_to_none=True)
    model(input_ids=x, labels=x).loss.backward()
    synced = _flat_grads(model)
    model.zero_grad(set_to_none=True)
    locals_ = [torch.empty_like(local) for _ in range(world)]
    synceds = [torch.empty_like(synced) for _ in range(world)]
    dist.all_gather(locals_, local)
    dist.all_gather(synceds, synced)
    assert not torch.equal(locals_[0], locals_[1]), "the ranks' data did not differ: the check would prove nothing"
    for other in synceds[1:]:
        assert torch.equal(other, synceds[0]), "DDP ranks disagree on gradients after a step"
    torch.testing.assert_close(synced, torch.stack(locals_).mean(dim=0), rtol=1e-5, atol=1e-7)

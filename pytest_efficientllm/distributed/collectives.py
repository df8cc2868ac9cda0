"""Runs in every rank: join the process group, and the plugin's own bounded collectives.

The plugin never issues a collective without a deadline: its barriers and gathers run on a
separate gloo group (so they also work beside NCCL and never interleave with the
workload's own asynchronous collectives) created with the session's timeout, and barriers
are `monitored_barrier`s, which name the ranks that did not arrive. The workload's default
group is created with the same timeout, so a collective the test issues against a dead
peer also ends in an error instead of a hang.
"""

from __future__ import annotations

import datetime as _dt
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions: this module loads with the plugin, and a run that
# re-executes itself for a fixed layout (layout.py) should not import torch first.

DEFAULT_TIMEOUT_S = 300.0


class CollectiveError(RuntimeError):
    """A plugin collective that failed or timed out; the message names the step and the ranks."""


def default_backend(profile: str) -> str:
    """gloo on the CPU; NCCL with one GPU per rank when the session measures a GPU."""
    import torch
    import torch.distributed as dist

    if profile != "cpu" and torch.cuda.is_available() and dist.is_nccl_available():
        return "nccl"
    return "gloo"


@dataclass
class RankContext:
    """Who this rank is, and the control group the plugin's collectives use."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    backend: str
    launcher: str
    timeout_s: float
    created_group: bool = False
    control: Any = field(default=None, repr=False)

    @property
    def device(self) -> torch.device:
        """This rank's device: `cuda:<local_rank>` under NCCL, else the CPU."""
        import torch

        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    def identity(self) -> dict[str, Any]:
        """Which physical device this rank measured: energy is summed once per distinct one."""
        import torch

        out: dict[str, Any] = {
            "host": socket.gethostname(),
            "device": str(self.device),
            "rank": self.rank,
            "local_rank": self.local_rank,
        }
        if self.device.type == "cuda":
            props = torch.cuda.get_device_properties(self.device)
            out["uuid"] = str(getattr(props, "uuid", ""))
        return out


def _timedelta(seconds: float) -> _dt.timedelta:
    return _dt.timedelta(seconds=seconds)


def join(
    rank: int,
    world_size: int,
    *,
    local_rank: int,
    local_world_size: int,
    backend: str,
    launcher: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    store: Any = None,
) -> RankContext:
    """Initialise the default process group (unless the caller already did) and the control group.

    With `store` None the group is initialised from the environment (`env://`, as under torchrun).
    """
    import torch
    import torch.distributed as dist

    created = False
    if not dist.is_initialized():
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        kwargs: dict[str, Any] = {
            "backend": backend,
            "timeout": _timedelta(timeout_s),
            "rank": rank,
            "world_size": world_size,
        }
        if store is not None:
            kwargs["store"] = store
        else:
            kwargs["init_method"] = "env://"
        dist.init_process_group(**kwargs)
        created = True
    elif dist.get_world_size() != world_size or dist.get_rank() != rank:
        raise CollectiveError(
            f"a process group is already initialised as rank {dist.get_rank()} of "
            f"{dist.get_world_size()}, not rank {rank} of {world_size}"
        )
    ctx = RankContext(rank, world_size, local_rank, local_world_size, dist.get_backend(), launcher, timeout_s, created)
    ctx.control = dist.new_group(backend="gloo", timeout=_timedelta(timeout_s))
    # No rank leaves before every rank has its groups: creating one is no collective, so a rank
    # whose test then ends at once (skipped everywhere) would exit while a slower peer is still
    # connecting to it, and that peer fails with "Connection closed by peer".
    barrier(ctx, "joining the ranks")
    return ctx


def leave(ctx: RankContext) -> None:
    """Destroy what `join` created."""
    import torch.distributed as dist

    if ctx.created_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: RankContext, step: str = "barrier") -> None:
    """All ranks arrive or a `CollectiveError` names the missing ones, within the timeout."""
    import torch.distributed as dist

    try:
        dist.monitored_barrier(group=ctx.control, timeout=_timedelta(ctx.timeout_s), wait_all_ranks=True)
    except RuntimeError as exc:
        raise CollectiveError(
            f"rank {ctx.rank}: {step}: not every rank arrived within {ctx.timeout_s:g} s: {exc}"
        ) from exc


def gather_to_root(ctx: RankContext, obj: Any, step: str = "gather") -> list[Any] | None:
    """Rank 0 gets every rank's `obj` (plain, picklable data), in rank order; others get None."""
    import torch.distributed as dist

    out: list[Any] | None = [None] * ctx.world_size if ctx.rank == 0 else None
    try:
        dist.gather_object(obj, out, dst=0, group=ctx.control)
    except RuntimeError as exc:
        raise CollectiveError(
            f"rank {ctx.rank}: {step}: gather to rank 0 failed within {ctx.timeout_s:g} s: {exc}"
        ) from exc
    return out


def all_gather(ctx: RankContext, obj: Any, step: str = "all-gather") -> list[Any]:
    """Every rank gets every rank's `obj`, in rank order."""
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world_size
    try:
        dist.all_gather_object(out, obj, group=ctx.control)
    except RuntimeError as exc:
        raise CollectiveError(f"rank {ctx.rank}: {step}: all-gather failed within {ctx.timeout_s:g} s: {exc}") from exc
    return out

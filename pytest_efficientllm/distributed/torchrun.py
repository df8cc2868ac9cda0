"""Is this process one rank of a torchrun (torch.distributed.elastic) job? Plain env reading.

torchrun sets, for every worker it starts: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
GROUP_RANK (the node), MASTER_ADDR, MASTER_PORT and TORCHELASTIC_RUN_ID. The plugin treats a
pytest session with those variables as one rank of a distributed session: it joins the
process group, measures each test in every rank and gathers the records to rank 0, which
alone compares, writes baselines and reports (`is_reporting_rank`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

REQUIRED = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class TorchrunEnvError(ValueError):
    """torchrun-like variables that are present but unusable; the message names the variable."""


@dataclass(frozen=True)
class TorchrunEnv:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node_rank: int
    master_addr: str
    master_port: int
    run_id: str = ""

    @property
    def nodes(self) -> int:
        """Number of nodes, assuming the same number of ranks per node (torchrun's rule)."""
        return max(1, self.world_size // max(1, self.local_world_size))


def detect(environ: Mapping[str, str] | None = None) -> TorchrunEnv | None:
    """The torchrun rank this process is, or None for an ordinary pytest process.

    WORLD_SIZE=1 counts as no distributed session: a one-rank torchrun is an ordinary run.
    """
    env = os.environ if environ is None else environ
    if not all(env.get(name) for name in REQUIRED):
        return None

    def number(name: str, default: int | None = None) -> int:
        raw = env.get(name)
        if raw in (None, ""):
            if default is None:
                raise TorchrunEnvError(f"{name} is not set")
            return default
        try:
            return int(raw)
        except ValueError:
            raise TorchrunEnvError(f"{name}={raw!r} is not a whole number") from None

    world = number("WORLD_SIZE")
    if world <= 1:
        return None
    rank = number("RANK")
    if not 0 <= rank < world:
        raise TorchrunEnvError(f"RANK={rank} is outside 0..WORLD_SIZE-1 ({world - 1})")
    local_world = number("LOCAL_WORLD_SIZE", world)
    return TorchrunEnv(
        rank=rank,
        world_size=world,
        local_rank=number("LOCAL_RANK", rank % local_world),
        local_world_size=local_world,
        node_rank=number("GROUP_RANK", rank // local_world),
        master_addr=env["MASTER_ADDR"],
        master_port=number("MASTER_PORT"),
        run_id=env.get("TORCHELASTIC_RUN_ID", ""),
    )


def is_reporting_rank(environ: Mapping[str, str] | None = None) -> bool:
    """True where results may be compared, written and reported: any non-torchrun process, or rank 0.

    Spawned ranks (`world_size=N` tests) never run pytest's reporting: only the parent
    process does, so it is the reporting process.
    """
    env = detect(environ)
    return env is None or env.rank == 0

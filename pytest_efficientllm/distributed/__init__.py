"""Distributed workloads on torch.distributed: spawned ranks and torchrun sessions.

    @pytest.mark.efficiency(world_size=2, workload="pretrain")
    def test_ddp_step(efficiency):          # runs in each of 2 ranks, process group ready
        model = DDP(build().to(efficiency.device))
        efficiency.measure(step, tokens=..., samples=...)   # windows open/close at barriers

One aggregated record per test (`aggregate.aggregate`), the per-rank records in `ranks`.
For code that must act on one rank only: `is_reporting_rank()`.
"""

from pytest_efficientllm.distributed.aggregate import AggregateError, aggregate
from pytest_efficientllm.distributed.torchrun import (
    TorchrunEnv,
    detect,
    is_reporting_rank,
)

__all__ = ["AggregateError", "TorchrunEnv", "aggregate", "detect", "is_reporting_rank"]

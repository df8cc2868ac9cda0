"""Plugin overhead of a 2-rank spawned test vs the same workload launched by hand (issue 8).

    python benchmarks/distributed_overhead.py [--reps 3] [--parallel ddp]

By hand: `torch.multiprocessing.start_processes` (fork, and spawn as `mp.spawn` users do),
each rank initialising gloo itself and timing the suite's training step with perf_counter —
the same model, batches, rounds and warm-up as `suites/test_distributed.py`. Plugin: the
suite's test run through `pytest.main` in this process, its call phase timed by pytest and
its aggregate record read from the session. Prints one markdown table row per repetition.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "suites"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROUNDS, WARMUP = 4, 1


def _by_hand_rank(rank: int, port: int, parallel: str, out_dir: str) -> None:
    import test_distributed as suite
    import torch
    import torch.distributed as dist
    from efficientllm_models import get_scale, seed
    from efficientllm_models.builders import attention_model
    from efficientllm_models.data import training_batches

    torch.set_num_threads(1)
    store = dist.TCPStore("127.0.0.1", port, 2, is_master=False, timeout=_dt.timedelta(seconds=120))
    dist.init_process_group("gloo", store=store, rank=rank, world_size=2)
    scale = get_scale("tiny")
    seed(0)
    model = attention_model("gqa", scale)
    batches = [b[rank::2].contiguous() for b in training_batches(4, scale.batch * 2, scale.seq_len)]
    model, _ = suite._wrap(model, parallel, torch.device("cpu"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=scale.lr, weight_decay=0.0)
    latencies = []
    for i in range(WARMUP + ROUNDS):
        x = batches[i % len(batches)]
        t0 = time.perf_counter()
        model(input_ids=x, labels=x).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= WARMUP:
            latencies.append(time.perf_counter() - t0)
    Path(out_dir, f"rank{rank}.txt").write_text(" ".join(map(str, latencies)))
    dist.destroy_process_group()


def by_hand(parallel: str, method: str) -> tuple[float, list[list[float]]]:
    import tempfile

    import test_distributed  # noqa: F401 - imported before forking, as the plugin's pytest process has it
    import torch.distributed as dist
    import torch.multiprocessing as mp

    store = dist.TCPStore("127.0.0.1", 0, 2, is_master=True, wait_for_workers=False)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        mp.start_processes(_by_hand_rank, args=(store.port, parallel, tmp), nprocs=2, start_method=method)
        wall = time.perf_counter() - t0
        per_rank = [[float(x) for x in Path(tmp, f"rank{r}.txt").read_text().split()] for r in (0, 1)]
    return wall, per_rank


class _Grab:
    def __init__(self) -> None:
        self.duration = 0.0
        self.records: list = []

    def pytest_runtest_logreport(self, report) -> None:  # noqa: ANN001
        if report.when == "call":
            self.duration = report.duration

    def pytest_sessionfinish(self, session) -> None:  # noqa: ANN001
        from pytest_efficientllm.glue.state import RUN_KEY

        self.records = list(session.config.stash[RUN_KEY].records)


def with_plugin(parallel: str) -> tuple[float, object]:
    import pytest

    grab = _Grab()
    code = pytest.main(
        [
            str(ROOT / "suites" / "test_distributed.py"),
            "-k",
            parallel,
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            "--efficiency-gate=off",
            "--efficiency-calibrate-every=off",
            f"--efficiency-rounds={ROUNDS}",
        ],
        plugins=[grab],
    )
    if code != 0:
        raise SystemExit(f"pytest exited {code}")
    return grab.duration, grab.records[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--parallel", default="ddp", choices=("ddp", "fsdp2"))
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    print("| rep | launch | wall s (start to join) | median step ms rank 0 / 1 | rank AL spread |")
    print("|---|---|---|---|---|")
    for rep in range(args.reps):
        for method in ("fork", "spawn"):
            wall, per_rank = by_hand(args.parallel, method)
            meds = [statistics.median(x) * 1e3 for x in per_rank]
            means = [statistics.mean(x) for x in per_rank]
            spread = (max(means) - min(means)) / min(means)
            print(
                f"| {rep} | by hand, {method} | {wall:.2f} | {meds[0]:.1f} / {meds[1]:.1f} | {spread:.1%} |", flush=True
            )
        duration, record = with_plugin(args.parallel)
        meds = [statistics.median(r["AL"].samples) * 1e3 for r in record.ranks]
        print(
            f"| {rep} | plugin, world_size=2 | {duration:.2f} | {meds[0]:.1f} / {meds[1]:.1f} "
            f"| {record['latency_rank_spread'].value:.1%} (aggregate AL {record['AL'].value * 1e3:.1f} ms) |",
            flush=True,
        )
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()

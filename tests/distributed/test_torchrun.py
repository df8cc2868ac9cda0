"""`torchrun --nproc-per-node=2 -m pytest ...`: every rank runs the session, rank 0 alone reports.

Real torchrun (torch.distributed.run --standalone) launches real pytest sessions; a conftest
in the launched project writes, per rank, the records the plugin kept and each test's outcome.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = """
import pytest, torch, torch.distributed as dist

@pytest.mark.efficiency(rounds=3, warmup=1)
def test_measured(efficiency):
    assert efficiency.world_size == 2 and efficiency.rank == dist.get_rank()
    x = torch.ones(32, 32) * (efficiency.rank + 1)
    def step():
        y = x @ x
        dist.all_reduce(y)
    efficiency.measure(step, tokens=8)

@pytest.mark.efficiency(rounds=1, warmup=0)
def test_rank_one_fails(efficiency):
    efficiency.measure(lambda: None)
    assert dist.get_rank() == 0, "only rank 0 is right here"

@pytest.mark.efficiency(world_size=4)
def test_wants_four(efficiency):
    pass
"""

CONFTEST = """
import json, os
import pytest

OUTCOMES = {}

def pytest_runtest_logreport(report):
    if report.when == "call" or report.outcome != "passed":
        OUTCOMES[report.nodeid] = [report.outcome, str(report.longrepr or "")]

def pytest_sessionfinish(session):
    from pytest_efficientllm.glue.state import RUN_KEY
    from pytest_efficientllm.distributed import is_reporting_rank
    records = [r.to_dict() for r in session.config.stash[RUN_KEY].records]
    path = os.path.join(os.environ["OUT_DIR"], "rank%s.json" % os.environ["RANK"])
    with open(path, "w") as fh:
        json.dump({"records": records, "outcomes": OUTCOMES, "reporting": is_reporting_rank()}, fh)
"""

MISMATCH_CONFTEST = """
import os

def pytest_collection_modifyitems(items):
    if os.environ.get("RANK") == "1":
        del items[-1]
"""


def _torchrun(root: Path, *args: str, timeout: int = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OUT_DIR": str(root), "OMP_NUM_THREADS": "1"}
    for name in (
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "MASTER_ADDR",
        "MASTER_PORT",
        "PYTEST_XDIST_WORKER",
        "PYTEST_XDIST_WORKER_COUNT",
        "PYTEST_ADDOPTS",
    ):
        env.pop(name, None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:xdist",
        "--efficiency-dist-timeout=30",
        *args,
        str(root),
    ]
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)


def test_ranks_gather_to_rank_zero_which_alone_keeps_records(tmp_path: Path) -> None:
    (tmp_path / "test_ranks.py").write_text(TESTS)
    (tmp_path / "conftest.py").write_text(CONFTEST)
    proc = _torchrun(tmp_path)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["reporting"] for r in ranks] == [True, False]
    assert ranks[1]["records"] == []  # only rank 0 records, compares and reports
    by_id = {r["nodeid"]: r for r in ranks[0]["records"]}
    agg = by_id["test_ranks.py::test_measured"]
    assert agg["world_size"] == 2 and [r["rank"] for r in agg["ranks"]] == [0, 1]
    assert agg["fingerprint"]["launcher"] == "torchrun" and agg["fingerprint"]["world_size"] == 2
    assert agg["metrics"]["tokens"]["value"] == 16  # global: 8 per rank
    slowest = [max(a, b) for a, b in zip(*(r["metrics"]["AL"]["samples"] for r in agg["ranks"]))]
    assert agg["metrics"]["AL"]["samples"] == pytest.approx(slowest)
    # A failure in rank 1 fails the test on rank 0 too, with rank 1's assertion.
    outcome, text = ranks[0]["outcomes"]["test_ranks.py::test_rank_one_fails"]
    assert outcome == "failed" and "rank 1 of 2 failed" in text and "only rank 0 is right here" in text
    # A test asking for another world size is skipped in every rank, not run at the wrong size.
    for r in ranks:
        outcome, text = r["outcomes"]["test_ranks.py::test_wants_four"]
        assert outcome == "skipped" and "world_size=4" in text
    assert proc.returncode != 0  # rank 1 failed a test, so the torchrun job fails


def test_ranks_that_collected_different_tests_stop_with_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "test_ranks.py").write_text("def test_a():\n    pass\n\ndef test_b():\n    pass\n")
    (tmp_path / "conftest.py").write_text(MISMATCH_CONFTEST)
    proc = _torchrun(tmp_path, timeout=180)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "torchrun ranks collected different tests: rank 0 has 2, rank 1 has 1" in out, out[-4000:]
    assert "test_ranks.py::test_b" in out

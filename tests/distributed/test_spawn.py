"""`@pytest.mark.efficiency(world_size=2)`: ranks spawned by the plugin, through pytester.

One inner pytest run holds every scenario, so the ranks are started once per scenario and
the inner run's cost is paid once; its records are written by a conftest and checked here.
"""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestAssertRewriteWarning")

SCENARIOS = """
import os, time
import pytest, torch, torch.distributed as dist

@pytest.mark.efficiency(world_size=2, rounds=4, warmup=1, min_time="10 s")
def test_measured(efficiency):
    assert dist.is_initialized() and dist.get_world_size() == 2
    assert efficiency.rank == dist.get_rank() and efficiency.world_size == 2
    assert str(efficiency.device) == "cpu" and torch.get_num_threads() == 1
    x = torch.full((64, 64), float(efficiency.rank + 1))
    def step():
        y = x @ x
        dist.all_reduce(y)
        if efficiency.rank == 1:
            time.sleep(0.004)  # rank 1 is the slow one
    run = efficiency.measure(step, tokens=16 * (efficiency.rank + 1), samples=2)
    assert run["rounds"].value == 4  # min_time is ignored: rounds stay matched across ranks
    efficiency.comm_time(0.001 * (efficiency.rank + 1), method="test: given")

@pytest.mark.efficiency(world_size=2)
def test_raises(efficiency):
    if dist.get_rank() == 1:
        assert 6 * 7 == 41, "rank one disagrees"
    dist.all_reduce(torch.ones(1))

@pytest.mark.efficiency(world_size=2)
def test_dies():
    if dist.get_rank() == 1:
        os._exit(3)
    dist.all_reduce(torch.ones(1))

@pytest.mark.efficiency(world_size=2)
def test_hangs_before_the_window(efficiency):
    if dist.get_rank() == 1:
        time.sleep(60)
    efficiency.measure(lambda: None)

@pytest.mark.efficiency(world_size=2, latency="<= 1 ms")
def test_declares_a_limit_but_no_rank_measures(efficiency):
    dist.all_reduce(torch.ones(1))

@pytest.mark.efficiency(world_size=2)
def test_skips_everywhere():
    pytest.skip("not on this machine")
"""

CONFTEST = """
import json, os
def pytest_sessionfinish(session):
    from pytest_efficientllm.glue.state import RUN_KEY
    records = [r.to_dict() for r in session.config.stash[RUN_KEY].records]
    with open(os.environ["RECORDS_OUT"], "w") as fh:
        json.dump(records, fh)
"""


@pytest.fixture(scope="module")
def spawned(tmp_path_factory: pytest.TempPathFactory):
    """Run the scenarios once, in one pytest subprocess, while the default MASTER_PORT is taken."""
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("spawned")
    (root / "test_scenarios.py").write_text(SCENARIOS)
    (root / "conftest.py").write_text(CONFTEST)
    out = root / "records.json"
    blocker = socket.socket()
    try:
        blocker.bind(("127.0.0.1", 29500))
        blocker.listen()
    except OSError:
        pass  # someone else holds it already: still taken
    env = {**__import__("os").environ, "RECORDS_OUT": str(out), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                "-p",
                "no:xdist",
                "-rA",
                "--efficiency-dist-timeout=4",
                f"--efficiency-json={root / 'shard_a.json'}",
                "-k",
                "not plain",
                str(root),
            ],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        blocker.close()
    return proc, json.loads(out.read_text()) if out.exists() else None, root / "shard_a.json"


def _section(stdout: str, name: str) -> str:
    start = stdout.index(f"_ {name} _")
    end = stdout.find("\n___", start + 1)
    return stdout[start : end if end != -1 else None]


def test_outcomes_per_scenario(spawned) -> None:
    proc, _, _ = spawned
    out = proc.stdout
    assert "1 passed" in out and "4 failed" in out and "1 skipped" in out, out[-3000:]
    assert "PASSED test_scenarios.py::test_measured" in out


def test_a_limit_no_rank_measured_fails_the_test_as_in_one_process(spawned) -> None:
    text = _section(spawned[0].stdout, "test_declares_a_limit_but_no_rank_measures")
    assert "the marker declares AL <= 1 ms, but the test measured nothing, so they were not checked" in text


def test_a_rank_that_raises_fails_the_test_with_its_assertion(spawned) -> None:
    text = _section(spawned[0].stdout, "test_raises")
    assert text.index("rank 1 of 2 failed") < text.index("rank 0 of 2")  # root cause first
    assert "rank one disagrees" in text and "assert (6 * 7) == 41" in text  # pytest's rewritten assert, from the rank


def test_a_rank_that_dies_fails_the_test_without_waiting(spawned) -> None:
    text = _section(spawned[0].stdout, "test_dies")
    assert "rank 1 of 2 died" in text and "exited with code 3" in text


def test_a_rank_that_never_arrives_times_out_at_the_window_barrier(spawned) -> None:
    proc = spawned[0]
    text = _section(proc.stdout, "test_hangs_before_the_window")
    assert "rank 0 of 2 failed" in text and "not every rank arrived within 4 s" in text
    assert "Ranks 1 failed to pass monitoredBarrier" in text  # names the rank that never came


def test_default_master_port_in_use_does_not_matter(spawned) -> None:
    proc, records, _ = spawned
    assert records is not None and [r["nodeid"] for r in records] == ["test_scenarios.py::test_measured"]


def test_the_aggregate_follows_the_rules_over_the_rank_records(spawned) -> None:
    from pytest_efficientllm.core.record import Record

    agg = Record.from_dict(spawned[1][0])
    ranks = agg.ranks
    assert agg.world_size == 2 and agg.rank is None and [r.rank for r in ranks] == [0, 1]
    assert agg.fingerprint["world_size"] == 2 and agg.fingerprint["dist_backend"] == "gloo"
    assert agg.fingerprint["topology"] == {"nodes": 1, "ranks_per_node": 2}
    slowest = np.max([r["AL"].samples for r in ranks], axis=0)
    assert agg["AL"].samples == pytest.approx(tuple(slowest))
    assert agg["AL"].value == pytest.approx(float(np.mean(slowest)))
    assert agg["AL"].value >= max(r["AL"].value for r in ranks) - 1e-12
    assert min(r["AL"].value for r in ranks[1:]) > 0.004  # the slow rank's sleep is in its rounds
    assert agg["tokens"].value == 16 + 32 and agg["samples"].value == 4  # global work per round
    assert agg["tokens_per_s"].value == pytest.approx(48 / agg["AL"].value, rel=1e-9)
    assert agg["peak_memory"].value == max(r["peak_memory"].value for r in ranks)
    assert agg["peak_memory_sum"].value == sum(r["peak_memory"].value for r in ranks)
    # CPU estimate: per-process CPU-seconds are disjoint, so the ranks' estimates add up.
    assert agg["energy"].source == "estimated"
    assert agg["energy"].value == pytest.approx(sum(r["energy"].value for r in ranks))
    assert agg["cpu_time"].value == pytest.approx(sum(r["cpu_time"].value for r in ranks))
    assert agg["comm_time"].value == pytest.approx(0.002)  # the slowest rank's report
    assert agg["window_time"].value == max(r["window_time"].value for r in ranks)
    for r in ranks:  # windows open and close at barriers: each spans the slowest rank's rounds
        assert r["window_time"].value >= sum(r["AL"].samples)
    assert agg["latency_rank_spread"].value >= 0


def test_world_size_must_be_a_whole_number_of_ranks(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.efficiency(world_size=0)
        def test_bad(efficiency):
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*test_bad*world_size=0*must be >= 1*"])


def test_shards_from_separate_runs_merge_into_one_run_file(spawned, pytester: pytest.Pytester) -> None:
    """CI jobs run disjoint parts, each writes --efficiency-json, `merge` combines them."""
    from pytest_efficientllm.cli import main
    from pytest_efficientllm.storage.runfile import read_run

    pytester.makepyfile(
        test_plain="""
        import pytest

        @pytest.mark.efficiency(rounds=2, warmup=0)
        def test_plain(efficiency):
            efficiency.measure(lambda: sum(range(1000)), tokens=4)
        """
    )
    shard_b = pytester.path / "shard_b.json"
    pytester.runpytest("-p", "no:cacheprovider", "-k", "plain", f"--efficiency-json={shard_b}").assert_outcomes(
        passed=1
    )
    merged = pytester.path / "ALL.json"
    assert main(["merge", str(spawned[2]), str(shard_b), "-o", str(merged)]) == 0
    records = {r.nodeid: r for r in read_run(merged).records}
    assert set(records) == {"test_scenarios.py::test_measured", "test_plain.py::test_plain"}
    distributed = records["test_scenarios.py::test_measured"]
    assert distributed.world_size == 2 and [r.rank for r in distributed.ranks] == [0, 1]
    assert records["test_plain.py::test_plain"].world_size == 1

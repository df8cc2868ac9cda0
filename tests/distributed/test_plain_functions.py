"""Plain functions of the distributed package: aggregation rules, torchrun detection, messages."""

from __future__ import annotations

import os
import sys
import threading
import warnings

import pytest

from pytest_efficientllm.core.record import Metric, Record
from pytest_efficientllm.distributed.aggregate import AggregateError, aggregate
from pytest_efficientllm.distributed.hooks import collection_mismatch
from pytest_efficientllm.distributed.outcome import (
    DIED,
    FAILED,
    MISSING,
    PASSED,
    SKIPPED,
    RankOutcome,
    failure_message,
    root_cause,
    skip_reason,
)
from pytest_efficientllm.distributed.spawn import quiet_fork
from pytest_efficientllm.distributed.torchrun import (
    TorchrunEnvError,
    detect,
    is_reporting_rank,
)

RAPL = "RAPL energy_uj package counters"
NVML = "NVML nvmlDeviceGetTotalEnergyConsumption"


def rank_record(
    rank: int,
    latencies: list[float],
    *,
    energy: float = 2.0,
    energy_source: str = "measured",
    energy_method: str = RAPL,
    host: str = "node0",
    device: str = "cpu",
    peak: float = 100.0,
    tokens: int = 10,
    world: int = 2,
    extra: dict[str, float] | None = None,
) -> Record:
    r = Record(
        nodeid="t.py::test",
        profile="cpu",
        rank=rank,
        world_size=world,
        settings={"workload": "inference", "dist_backend": "gloo", "launcher": "spawn"},
        fingerprint={"cpu_model": "X", "rank_device": {"host": host, "device": device, "rank": rank}},
    )
    method = "energy estimate: CPU-seconds x 10 W" if energy_source == "estimated" else energy_method
    r.add(
        Metric(
            "AL",
            sum(latencies) / len(latencies),
            "s",
            "lower",
            "measured",
            "perf_counter_ns around each round; mean",
            samples=tuple(latencies),
        )
    )
    r.add(Metric("tokens", float(tokens), "tok", "info", "counted", "given"))
    r.add(Metric("energy", energy, "J", "lower", energy_source, method))
    r.add(Metric("cpu_time", 0.5, "s", "lower", "measured", "process_time"))
    r.add(Metric("sampler_cpu_time", 0.004 * (rank + 1), "s", "lower", "measured", "sampler clocks"))
    r.add(Metric("peak_memory", peak, "B", "lower", "measured", "VmHWM"))
    r.add(Metric("window_time", sum(latencies) + 0.01, "s", "info", "measured", "barrier to barrier"))
    for name, value in (extra or {}).items():
        r.add(Metric(name, value, "B", "lower", "counted", "by the test"))
    return r


def test_latency_is_the_slowest_rank_per_round_and_work_is_global() -> None:
    agg = aggregate([rank_record(1, [0.30, 0.10, 0.10], tokens=6), rank_record(0, [0.10, 0.20, 0.10], tokens=10)])
    assert agg["AL"].samples == (0.30, 0.20, 0.10)
    assert agg["AL"].value == pytest.approx(0.20)
    assert agg["tokens"].value == 16
    assert agg["tokens_per_s"].value == pytest.approx(16 / 0.20)
    assert agg["latency_rank_spread"].value == pytest.approx((0.5 / 3 - 0.4 / 3) / (0.4 / 3))
    assert [r.rank for r in agg.ranks] == [0, 1] and agg.world_size == 2 and agg.rank is None


def test_the_test_passed_only_where_every_rank_did() -> None:
    ranks = [rank_record(0, [0.1]), rank_record(1, [0.1])]
    assert aggregate(ranks).outcome == "passed"
    ranks[1].outcome = "failed"
    assert aggregate(ranks).outcome == "failed"


def test_peak_memory_is_the_max_with_the_sum_beside_it() -> None:
    agg = aggregate([rank_record(0, [0.1], peak=100.0), rank_record(1, [0.1], peak=300.0)])
    assert agg["peak_memory"].value == 300.0 and agg["peak_memory_sum"].value == 400.0


def test_a_machine_wide_counter_is_counted_once_per_host() -> None:
    one_host = aggregate([rank_record(0, [0.1], energy=5.0), rank_record(1, [0.1], energy=5.2)])
    assert one_host["energy"].value == 5.0  # RAPL covers the machine: both ranks read the same counter
    two_hosts = aggregate([rank_record(0, [0.1], energy=5.0, host="a"), rank_record(1, [0.1], energy=7.0, host="b")])
    assert two_hosts["energy"].value == 12.0
    assert two_hosts.fingerprint["topology"] == {"nodes": 2, "ranks_per_node": 1}


def test_gpu_energy_is_summed_over_distinct_devices_only() -> None:
    two = aggregate(
        [
            rank_record(0, [0.1], energy=3.0, energy_method=NVML, device="cuda:0"),
            rank_record(1, [0.1], energy=4.0, energy_method=NVML, device="cuda:1"),
        ]
    )
    assert two["energy"].value == 7.0
    shared = aggregate(
        [
            rank_record(0, [0.1], energy=3.0, energy_method=NVML, device="cuda:0"),
            rank_record(1, [0.1], energy=3.1, energy_method=NVML, device="cuda:0"),
        ]
    )
    assert shared["energy"].value == 3.0  # two ranks on one GPU: its counter once
    # Each GPU's own energy is kept beside the sum; one GPU has none.
    assert two["energy:cuda:0"].value == 3.0 and two["energy:cuda:1"].value == 4.0
    assert "rank 1's reading" in two["energy:cuda:1"].method
    assert not [name for name in shared.metrics if name.startswith("energy:")]


def test_gpu_energy_one_rank_could_not_read_is_unavailable_for_the_test_with_that_ranks_reason() -> None:
    # A sum missing one GPU's share would read as a saving: unknown, naming why, never a partial sum.
    short = "the energy counter did not advance in this 4.0 ms window (update period 100 ms): too short to measure"
    ranks = [
        rank_record(0, [0.1], energy=3.0, energy_method=NVML, device="cuda:0"),
        rank_record(1, [0.1], energy_method=NVML, device="cuda:1"),
    ]
    ranks[1].add(Metric("energy", None, "J", "lower", "measured", NVML, note=short))
    energy = aggregate(ranks)["energy"]
    assert energy.value is None and energy.note == f"not available in every rank: {short}"


def test_gpu_energy_net_of_idle_is_derived_from_the_summed_energy_and_idle_power() -> None:
    ranks = [
        rank_record(0, [0.1], energy=30.0, energy_method=NVML, device="cuda:0"),
        rank_record(1, [0.1], energy=40.0, energy_method=NVML, device="cuda:1"),
    ]
    for r, idle in zip(ranks, (50.0, 70.0)):
        r.add(Metric("idle_power", idle, "W", "info", "measured", "NVML energy counter at session start-up"))
    agg = aggregate(ranks)
    assert agg["idle_power"].value == 120.0
    wall_s = agg["window_time"].value
    assert agg["energy_per_token_net"].value == pytest.approx((70.0 - 120.0 * wall_s) / 20)


def test_the_cpu_estimate_adds_per_process_cpu_seconds() -> None:
    agg = aggregate(
        [
            rank_record(0, [0.1], energy=1.0, energy_source="estimated"),
            rank_record(1, [0.1], energy=2.0, energy_source="estimated"),
        ]
    )
    assert agg["energy"].value == 3.0 and agg["energy"].source == "estimated"
    assert agg["AEC"].value == pytest.approx(3.0 / 0.11)  # over the longest rank's window
    assert agg["cpu_time"].value == 1.0
    assert agg["sampler_cpu_time"].value == pytest.approx(0.004 + 0.008)  # each rank's samplers, summed


def test_counted_facts_agreeing_are_kept_and_differing_take_the_max() -> None:
    agg = aggregate(
        [
            rank_record(0, [0.1], extra={"same": 5.0, "shard": 10.0}),
            rank_record(1, [0.1], extra={"same": 5.0, "shard": 12.0}),
        ]
    )
    assert agg["same"].value == 5.0 and agg["same"].method == "by the test"
    assert (
        agg["shard"].value == 12.0 and "values differ" in agg["shard"].method and agg["shard"].samples == (10.0, 12.0)
    )


def test_world_size_goes_into_the_record_and_fingerprint() -> None:
    agg = aggregate([rank_record(0, [0.1]), rank_record(1, [0.1])])
    assert agg.world_size == 2 and agg.settings["world_size"] == 2
    assert agg.fingerprint["world_size"] == 2 and agg.fingerprint["dist_backend"] == "gloo"
    assert "rank_device" not in agg.fingerprint and agg.fingerprint["rank_devices"] == ["cpu", "cpu"]
    assert Record.from_dict(agg.to_dict()) == agg


@pytest.mark.parametrize("ranks", [[0], [0, 0], [0, 2]])
def test_missing_or_duplicate_ranks_are_refused(ranks: list[int]) -> None:
    with pytest.raises(AggregateError, match="one record for each rank"):
        aggregate([rank_record(r, [0.1]) for r in ranks])


def test_records_of_different_tests_are_refused() -> None:
    other = rank_record(1, [0.1])
    other.nodeid = "t.py::other"
    with pytest.raises(AggregateError, match="different tests"):
        aggregate([rank_record(0, [0.1]), other])


def test_torchrun_is_detected_from_its_environment() -> None:
    env = {
        "RANK": "3",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
        "GROUP_RANK": "1",
        "MASTER_ADDR": "10.0.0.1",
        "MASTER_PORT": "29500",
    }
    got = detect(env)
    assert got is not None and (got.rank, got.world_size, got.local_rank, got.nodes) == (3, 4, 1, 2)
    assert not is_reporting_rank(env) and is_reporting_rank({**env, "RANK": "0"})
    assert detect({}) is None and is_reporting_rank({})
    assert detect({**env, "WORLD_SIZE": "1", "RANK": "0"}) is None
    with pytest.raises(TorchrunEnvError, match="RANK=7"):
        detect({**env, "RANK": "7"})
    with pytest.raises(TorchrunEnvError, match="WORLD_SIZE='two'"):
        detect({**env, "WORLD_SIZE": "two"})


def test_collection_mismatch_names_the_first_difference() -> None:
    assert collection_mismatch([["a", "b"], ["a", "b"]]) is None
    message = collection_mismatch([["a", "b", "c"], ["a", "c"]])
    assert (
        message is not None
        and "rank 0 has 3, rank 1 has 2" in message
        and "position 1: rank 0 'b' vs rank 1 'c'" in message
    )


def test_the_root_cause_is_the_rank_that_raised_first_by_its_own_report() -> None:
    # Rank 1 raised; rank 0's collective then failed. A parent that woke late saw rank 0 exit first.
    raised_late = [
        RankOutcome(0, FAILED, error="Connection closed by peer", failed_at=1002.5),
        RankOutcome(1, FAILED, error="AssertionError: rank one disagrees", failed_at=1000.0),
    ]
    assert root_cause(raised_late, 0) == 1
    assert root_cause(raised_late, 1) == 1
    # A rank that died reported nothing: what the parent saw stands, as does no failure at all.
    died = [RankOutcome(0, FAILED, error="Connection closed by peer", failed_at=1002.5), RankOutcome(1, DIED)]
    assert root_cause(died, 1) == 1
    assert root_cause([RankOutcome(0, PASSED), RankOutcome(1, PASSED)], None) is None
    # A failure with no time of its own is not taken as the earliest.
    untimed = [RankOutcome(0, FAILED, error="Connection closed by peer"), raised_late[1]]
    assert root_cause(untimed, 0) == 1


def test_failure_message_puts_the_root_cause_first() -> None:
    outcomes = [
        RankOutcome(0, FAILED, error="Connection closed by peer"),
        RankOutcome(1, DIED, error="exit code 3", first=True),
        RankOutcome(2, MISSING, error="terminated after rank 1 failed"),
    ]
    message = failure_message(outcomes, 3)
    assert message is not None
    assert (
        message.index("rank 1 of 3 died")
        < message.index("rank 0 of 3 failed")
        < message.index("rank 2 of 3 did not report")
    )
    assert failure_message([RankOutcome(0, PASSED), RankOutcome(1, PASSED)], 2) is None
    assert failure_message([RankOutcome(0, SKIPPED, error="x"), RankOutcome(1, SKIPPED, error="x")], 2) is None
    assert "skipped while the others ran" in (
        failure_message([RankOutcome(0, PASSED), RankOutcome(1, SKIPPED, error="x")], 2) or ""
    )
    # A rank that skipped alone comes first: the others failed only for want of it at a barrier.
    message = failure_message(
        [
            RankOutcome(0, FAILED, error="Ranks 1 failed to pass monitoredBarrier", first=True),
            RankOutcome(1, SKIPPED, error="no second GPU here"),
        ],
        2,
    )
    assert message is not None
    assert message.startswith("rank(s) 1 of 2 skipped while the others ran: no second GPU here\n")
    assert "rank 0 of 2 failed:\n    Ranks 1 failed to pass monitoredBarrier" in message


# CPython's own text (Modules/posixmodule.c, 3.12+), as the suites' distributed tests met it.
FORK_WARNING = "This process (pid=4242) is multi-threaded, use of fork() may lead to deadlocks in the child."


def test_starting_forked_ranks_silences_only_pythons_fork_beside_threads_warning() -> None:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_fork("fork"):
            warnings.warn(FORK_WARNING, DeprecationWarning, stacklevel=1)
            warnings.warn("another deprecation", DeprecationWarning, stacklevel=1)
        with quiet_fork("spawn"):  # no fork, nothing to silence: a warning there is news
            warnings.warn(FORK_WARNING, DeprecationWarning, stacklevel=1)
        warnings.warn(FORK_WARNING, DeprecationWarning, stacklevel=1)  # the filter ends with the start
    assert [str(w.message) for w in seen] == ["another deprecation", FORK_WARNING, FORK_WARNING]


@pytest.mark.skipif(sys.version_info < (3, 12) or not hasattr(os, "fork"), reason="Python warns so from 3.12")
def test_a_real_fork_beside_a_thread_is_quiet_while_ranks_start() -> None:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with quiet_fork("fork"):
                pid = os.fork()
                if pid == 0:
                    os._exit(0)
            os.waitpid(pid, 0)
            pid = os.fork()  # outside: Python warns, so the test above names the warning it meets
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
    finally:
        stop.set()
        thread.join()
    assert [w.category for w in seen] == [DeprecationWarning]


def test_a_test_is_skipped_only_where_every_rank_skipped_and_with_the_first_rank_s_reason() -> None:
    both = [RankOutcome(0, SKIPPED, error="needs 2 GPUs"), RankOutcome(1, SKIPPED, error="needs 2 GPUs (rank 1)")]
    assert skip_reason(both) == "needs 2 GPUs"
    # A skip with no message still says why the test did not run.
    assert skip_reason([RankOutcome(0, SKIPPED), RankOutcome(1, SKIPPED)]) == "skipped in every rank"
    # One rank that ran (or failed) means the skip is a failure of the others' collectives, not a skip.
    assert skip_reason([RankOutcome(0, SKIPPED, error="x"), RankOutcome(1, PASSED)]) is None
    assert skip_reason([RankOutcome(0, FAILED, error="x"), RankOutcome(1, SKIPPED, error="y")]) is None
    assert skip_reason([]) is None  # no rank reported: nothing says it was skipped

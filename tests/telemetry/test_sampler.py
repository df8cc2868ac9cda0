"""The background sampler: what it samples, its averages, and its failure mode."""

from __future__ import annotations

import itertools
import os
import threading
import time

import pytest

from pytest_efficientllm.telemetry.sampler import Sampler, samplers_cpu_ns


def test_time_average_is_the_trapezoid_over_sample_times() -> None:
    s = Sampler(lambda: 0.0, 1.0)
    s.samples = [(0.0, 0.0), (1.0, 10.0), (3.0, 10.0)]
    assert s.time_average() == pytest.approx((5.0 + 20.0) / 3.0)
    assert s.maximum() == 10.0


def test_uneven_sample_spacing_is_weighted_by_time() -> None:
    s = Sampler(lambda: 0.0, 1.0)
    s.samples = [(0.0, 100.0), (0.001, 100.0), (10.0, 0.0)]
    assert s.time_average() == pytest.approx((0.1 + 9.999 * 50.0) / 10.0)


def test_empty_and_single_samples() -> None:
    s = Sampler(lambda: 0.0, 1.0)
    assert s.time_average() is None and s.maximum() is None
    s.samples = [(5.0, 7.0)]
    assert s.time_average() == 7.0
    # Two samples at one instant (a clock too coarse for the window): their plain mean, not 0 / 0.
    s.samples = [(5.0, 7.0), (5.0, 9.0)]
    assert s.time_average() == 8.0


def test_stop_before_start_takes_one_sample_and_raises_nothing() -> None:
    s = Sampler(lambda: 3.0, 1.0)
    s.stop()
    assert [v for _, v in s.samples] == [3.0] and s.time_average() == 3.0


def test_a_window_shorter_than_the_interval_still_has_two_samples_and_stops_promptly() -> None:
    counter = itertools.count()
    s = Sampler(lambda: next(counter), interval_s=60.0)
    s.start()
    t0 = time.monotonic()
    s.stop()
    assert time.monotonic() - t0 < 30.0  # stop() does not wait out the 60 s interval
    assert [v for _, v in s.samples] == [0.0, 1.0]


def test_samples_come_from_a_thread_only_between_start_and_stop() -> None:
    threads: list[str] = []

    def read() -> float:
        threads.append(threading.current_thread().name)
        return 1.0

    s = Sampler(read, interval_s=0.001)
    s.start()
    deadline = time.monotonic() + 5.0
    while threads.count("efficiency-sampler") < 3 and time.monotonic() < deadline:
        time.sleep(0.001)
    s.stop()
    n = len(threads)
    time.sleep(0.02)
    assert len(threads) == n  # nothing after stop
    assert threads.count("efficiency-sampler") >= 3
    assert threads[0] == threads[-1] == threading.current_thread().name  # the start and stop samples


def test_a_failing_read_is_kept_and_sampling_stops() -> None:
    calls = itertools.count()

    def read() -> float:
        if next(calls) >= 2:
            raise OSError("gone")
        return 1.0

    s = Sampler(read, interval_s=0.001)
    s.start()
    deadline = time.monotonic() + 5.0
    while s.error is None and time.monotonic() < deadline:
        time.sleep(0.001)
    s.stop()
    assert isinstance(s.error, OSError) and len(s.samples) == 2


def test_restart_clears_the_previous_window() -> None:
    s = Sampler(lambda: 3.0, interval_s=60.0)
    s.start()
    s.stop()
    s.start()
    s.stop()
    assert len(s.samples) == 2 and s.error is None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
# Forking beside a live thread is the point of this test; Python 3.12+ warns of it.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_child_forked_while_a_sampler_runs_reads_its_own_samplers_only() -> None:
    # The parent's sampler thread does not exist in the child: its CPU clock must not be read there.
    s = Sampler(lambda: 1.0, interval_s=0.005)
    s.start()
    try:
        pid = os.fork()
        if pid == 0:  # the child: exit status 0 only if the accounting is its own
            code = 1
            try:
                code = 0 if samplers_cpu_ns() == 0 else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
    finally:
        s.stop()
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.skipif(not hasattr(time, "pthread_getcpuclockid"), reason="no per-thread CPU clock here")
def test_a_thread_clock_the_kernel_will_not_read_leaves_the_sampler_unaccounted(monkeypatch) -> None:
    # pthread_getcpuclockid gives a clock id and clock_gettime refuses it: the sampler still samples,
    # its CPU stays in the workload's, and reading the samplers' CPU never raises.
    real = time.clock_gettime_ns
    refused = set()

    def refusing(clock: int) -> int:
        if clock in refused:
            raise OSError(22, "Invalid argument")
        return real(clock)

    real_getcpuclockid = time.pthread_getcpuclockid

    def handing_out(ident: int) -> int:
        clock = real_getcpuclockid(ident)
        refused.add(clock)
        return clock

    monkeypatch.setattr(time, "pthread_getcpuclockid", handing_out)
    monkeypatch.setattr(time, "clock_gettime_ns", refusing)
    before = samplers_cpu_ns()
    s = Sampler(lambda: 1.0, interval_s=0.002)
    s.start()
    try:
        time.sleep(0.02)
        assert samplers_cpu_ns() == before  # not accounted, and no error
    finally:
        s.stop()
    assert refused and s.error is None and len(s.samples) >= 3


def test_thread_clocks_count_as_readable_only_where_the_kernel_reads_them(monkeypatch) -> None:
    from pytest_efficientllm.telemetry import sampler

    if not hasattr(time, "pthread_getcpuclockid"):
        assert sampler.thread_clocks_readable() is False
        return
    assert sampler.thread_clocks_readable() is True  # Linux reads its threads' clocks

    def refusing(clock: int) -> int:
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(time, "clock_gettime_ns", refusing)
    assert sampler.thread_clocks_readable() is False

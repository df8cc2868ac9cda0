"""The procfs probes on a temporary /proc/self-shaped tree, including clear_refs not writable."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pytest_efficientllm.telemetry.procfs import (
    PerfCounterTimer,
    ProcessCpuTimeProbe,
    ProcessMemoryProbe,
    ProcPaths,
    read_rss_bytes,
    read_status_kib,
    reset_hwm,
)
from pytest_efficientllm.telemetry.sampler import CAN_ACCOUNT, Sampler, samplers_cpu_ns

PAGE = os.sysconf("SC_PAGE_SIZE")
MiB = 2**20


def proc_tree(root: Path, rss_pages: int, hwm_kib: int, clear_refs_writable: bool = True) -> ProcPaths:
    root.mkdir(parents=True, exist_ok=True)
    write_rss(root, rss_pages)
    (root / "status").write_text(f"Name:\tpython\nVmPeak:\t 999999 kB\nVmHWM:\t {hwm_kib} kB\nVmRSS:\t 1000 kB\n")
    if clear_refs_writable:
        (root / "clear_refs").write_text("")
    else:
        (root / "clear_refs").mkdir()  # writing fails even as root (chmod would not stop root)
    return ProcPaths(root)


def write_rss(root: Path, pages: int) -> None:
    # Atomic, as the kernel's file is: the sampler thread must never see a half-written file.
    tmp = root / "statm.tmp"
    tmp.write_text(f"50000 {pages} 300 10 0 2000 0\n")
    os.replace(tmp, root / "statm")


def test_status_and_statm_are_read_in_bytes(tmp_path: Path) -> None:
    paths = proc_tree(tmp_path, rss_pages=256, hwm_kib=2048)
    assert read_rss_bytes(paths) == 256 * PAGE
    assert read_status_kib(paths, "VmHWM") == 2048 * 1024
    with pytest.raises(KeyError, match="VmSwap"):
        read_status_kib(paths, "VmSwap")


def test_with_clear_refs_the_peak_is_the_kernel_high_water_mark(tmp_path: Path) -> None:
    paths = proc_tree(tmp_path, rss_pages=1000, hwm_kib=12 * 1024)
    probe = ProcessMemoryProbe(paths, interval_s=0.001)
    probe.open()
    assert (tmp_path / "clear_refs").read_text() == "5"
    probe.close()
    m = {x.name: x for x in probe.readings(0.01)}
    assert m["peak_memory"].value == 12 * MiB and "VmHWM reset per window via clear_refs" in m["peak_memory"].method
    assert m["peak_memory_delta"].value == 12 * MiB - 1000 * PAGE
    assert m["peak_memory"].note == ""


def test_clear_refs_not_writable_falls_back_to_sampled_rss_and_says_so(tmp_path: Path) -> None:
    base, spike = 1000, 1000 + (64 * MiB) // PAGE
    paths = proc_tree(tmp_path, rss_pages=base, hwm_kib=10**7, clear_refs_writable=False)
    assert "cannot reset VmHWM" in reset_hwm(paths)
    probe = ProcessMemoryProbe(paths, interval_s=0.001, prefix="host_")
    probe.open()
    write_rss(tmp_path, spike)
    deadline = time.monotonic() + 5.0
    while not any(v == spike * PAGE for _, v in probe.sampler.samples) and time.monotonic() < deadline:
        time.sleep(0.002)
    write_rss(tmp_path, base)
    probe.close()
    m = {x.name: x for x in probe.readings(0.01)}
    peak = m["host_peak_memory"]
    # The stale VmHWM (10 GB) must not be reported: the peak is the sampled maximum.
    assert peak.value == spike * PAGE
    assert "sampled" in peak.method and "may miss spikes" in peak.method
    assert "cannot reset VmHWM" in peak.note and "clear_refs" in peak.note
    assert m["host_peak_memory_delta"].value == (spike - base) * PAGE
    assert base * PAGE < m["host_AMU"].value < spike * PAGE
    assert "AMU_fraction" not in m  # host memory is not the primary memory metric on a GPU


def test_rss_sampling_failure_makes_amu_unavailable(tmp_path: Path) -> None:
    paths = proc_tree(tmp_path, rss_pages=100, hwm_kib=4096)
    probe = ProcessMemoryProbe(paths, interval_s=0.001)
    probe.open()
    (tmp_path / "statm").write_text("garbage\n")
    deadline = time.monotonic() + 5.0
    while probe.sampler.error is None and time.monotonic() < deadline:
        time.sleep(0.002)
    probe.close()
    m = {x.name: x for x in probe.readings(0.01)}
    assert m["AMU"].value is None and "RSS sampling failed" in m["AMU"].note


def _burn(seconds: float, clock=time.thread_time) -> None:
    start = clock()
    while clock() - start < seconds:  # CPU, not wall time
        pass


def _busy_sampler(burn_s: float) -> Sampler:
    """A sampler whose every read costs `burn_s` of its own thread's CPU: the plugin's
    telemetry, made expensive enough to see."""

    def read() -> float:
        _burn(burn_s)
        return 0.0

    return Sampler(read, interval_s=0.005)


@pytest.mark.skipif(not CAN_ACCOUNT, reason="no per-thread CPU clock on this platform")
def test_cpu_time_is_the_work_s_and_the_samplers_cpu_is_recorded_apart() -> None:
    probe, sampler = ProcessCpuTimeProbe(), _busy_sampler(0.004)
    probe.open()
    sampler.start()
    _burn(0.05)  # the work: 50 ms of the main thread's CPU
    time.sleep(0.05)  # and 50 ms of none, while the sampler keeps burning
    sampler.stop()
    probe.close()
    cpu, telemetry = probe.readings(1.0)
    reads = len(sampler.samples)  # each read burned 4 ms, the first and last in this thread
    assert reads >= 6
    assert cpu.name == "cpu_time" and cpu.unit == "s"
    assert 0.05 + 0.008 <= cpu.value < 0.05 + 0.008 + 0.01  # work + the two reads start() and stop() take here
    assert "all threads but the plugin's samplers" in cpu.method
    assert telemetry.name == "sampler_cpu_time" and telemetry.value >= 0.004 * (reads - 2)


@pytest.mark.skipif(not CAN_ACCOUNT, reason="no per-thread CPU clock on this platform")
def test_each_round_s_cpu_time_leaves_the_samplers_out() -> None:
    # A sleeping round costs the process almost no CPU; a sampler burning 4 ms every 5 ms
    # would add about 16 ms to each 20 ms round if process CPU time were taken as it is.
    sampler, timer = _busy_sampler(0.004), PerfCounterTimer()
    sampler.start()
    before = samplers_cpu_ns()
    timer.run(lambda: time.sleep(0.02), min_rounds=5, min_time_s=0.0, max_rounds=5)
    spent = samplers_cpu_ns() - before
    sampler.stop()
    assert spent > 5 * 0.004 * 1e9  # the sampler did burn, during the rounds
    assert len(timer.cpu_s_per_round) == 5 and max(timer.cpu_s_per_round) < 0.003
    with timer.time_block():
        time.sleep(0.02)
    assert timer.cpu_s_per_round[0] < 0.003


def test_an_ended_sampler_s_cpu_stays_counted() -> None:
    if not CAN_ACCOUNT:
        assert samplers_cpu_ns() == 0
        return
    before = samplers_cpu_ns()
    sampler = _busy_sampler(0.004)
    sampler.start()
    time.sleep(0.03)
    sampler.stop()
    assert samplers_cpu_ns() - before >= 0.004 * (len(sampler.samples) - 2) * 1e9

"""The procfs probes on a temporary /proc/self-shaped tree, including clear_refs not writable."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pytest_efficientllm.telemetry.procfs import (
    ProcessCpuTimeProbe,
    ProcessMemoryProbe,
    ProcPaths,
    read_rss_bytes,
    read_status_kib,
    reset_hwm,
)

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


def test_cpu_time_probe_reports_process_seconds() -> None:
    probe = ProcessCpuTimeProbe()
    probe.open()
    start = time.process_time()
    while time.process_time() - start < 0.02:  # burn CPU, not wall time
        pass
    probe.close()
    [m] = probe.readings(1.0)
    assert m.name == "cpu_time" and m.unit == "s" and m.value >= 0.02

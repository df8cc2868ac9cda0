"""A background thread that samples one reading at a fixed interval while a window is open.

The samplers are the plugin's own work inside a window, so their CPU time is accounted
for apart from the workload's (`samplers_cpu_ns`): process CPU time counts every thread,
and a sampler's wake-ups cost CPU in proportion to the wall clock, not to the work
(about 1% of a core at 20 ms on the machine benchmarks/RESULTS.md names).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

# CPU clocks of the live sampler threads (thread ident -> clock id), and the CPU time of
# those that have ended. A thread moves itself from one to the other under the lock, so a
# reader never counts it twice or misses it.
_accounting = threading.Lock()
_live_clocks: dict[int, int] = {}
_ended_ns = 0


# Linux and most Unixes; where the per-thread clock is missing or unreadable the workload's
# CPU time includes the samplers, and the method says so.
def thread_clocks_readable() -> bool:
    """Whether this process can read a thread's CPU clock: the platform has the call, and the
    kernel reads the clock it hands out (a sandbox's own kernel may not)."""
    if not hasattr(time, "pthread_getcpuclockid"):
        return False
    try:
        time.clock_gettime_ns(time.pthread_getcpuclockid(threading.get_ident()))
    except OSError:
        return False
    return True


CAN_ACCOUNT = thread_clocks_readable()


def _forget_parent_threads() -> None:
    # A forked child has none of its parent's threads (and may inherit the lock held).
    global _accounting, _ended_ns
    _accounting, _ended_ns = threading.Lock(), 0
    _live_clocks.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent_threads)


def samplers_cpu_ns() -> int:
    """CPU nanoseconds every sampler thread of this process has used so far, live and ended;
    0 where a thread's CPU clock cannot be read (`CAN_ACCOUNT` false: none is accounted)."""
    with _accounting:
        return _ended_ns + sum(time.clock_gettime_ns(clock) for clock in _live_clocks.values())


def _enter_accounting() -> None:
    if not CAN_ACCOUNT:
        return
    try:
        clock = time.pthread_getcpuclockid(threading.get_ident())
        time.clock_gettime_ns(clock)  # read once here, so the reads around every round cannot fail
    except OSError:  # this thread's CPU then stays in the workload's, as without the clock
        return
    with _accounting:
        _live_clocks[threading.get_ident()] = clock


def _leave_accounting() -> None:
    global _ended_ns
    with _accounting:
        if _live_clocks.pop(threading.get_ident(), None) is not None:
            _ended_ns += time.thread_time_ns()


class Sampler:
    """Calls `read()` every `interval_s` seconds between `start()` and `stop()`.

    Samples are (perf_counter seconds, value) pairs. One sample is taken at start and one
    at stop, so even a window shorter than the interval has a two-point average.
    """

    def __init__(self, read: Callable[[], float], interval_s: float) -> None:
        self._read = read
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.samples: list[tuple[float, float]] = []
        self.error: BaseException | None = None

    def _take(self) -> None:
        try:
            self.samples.append((time.perf_counter(), float(self._read())))
        except Exception as exc:  # reported by the probe that owns the sampler
            self.error = exc
            self._stop.set()

    def _loop(self, accounted: threading.Event) -> None:
        try:
            _enter_accounting()
        finally:
            accounted.set()  # start() waits for it
        try:
            while not self._stop.wait(self._interval_s):
                self._take()
        finally:
            _leave_accounting()

    def start(self) -> None:
        self.samples = []
        self.error = None
        self._stop.clear()
        self._take()
        accounted = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(accounted,), name="efficiency-sampler", daemon=True)
        self._thread.start()
        # Returns once the thread's CPU clock is accounted for, before any timed round.
        accounted.wait()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.error is None:
            self._take()

    def time_average(self) -> float | None:
        """Trapezoid time average of the samples; None without samples."""
        pts = self.samples
        if not pts:
            return None
        if len(pts) == 1 or pts[-1][0] == pts[0][0]:
            return sum(v for _, v in pts) / len(pts)
        area = sum((t1 - t0) * (v0 + v1) / 2 for (t0, v0), (t1, v1) in zip(pts, pts[1:]))
        return area / (pts[-1][0] - pts[0][0])

    def maximum(self) -> float | None:
        return max((v for _, v in self.samples), default=None)

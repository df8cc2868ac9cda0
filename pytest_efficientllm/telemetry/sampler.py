"""A background thread that samples one reading at a fixed interval while a window is open."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


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

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._take()

    def start(self) -> None:
        self.samples = []
        self.error = None
        self._stop.clear()
        self._take()
        self._thread = threading.Thread(target=self._loop, name="efficiency-sampler", daemon=True)
        self._thread.start()

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

"""FakeTorchCuda: a test double of the torch.cuda calls we use. Nothing runs on a GPU.

Pass an instance where the `torch.cuda` module goes. Events read the host clock; the
allocator counters move only through `allocate`/`free`. Every call that matters for
ordering (record, synchronize, peak resets) is appended to `log`.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

UUID = "aaaa1111-0000-0000-0000-000000000000"


class FakeTorchCuda:
    """Test double of the torch.cuda calls we use. Events read the host clock; nothing runs on a GPU.

    Like CUDA, an event's `elapsed_time` is refused until a synchronize has completed it.
    `allocate`/`free` move the fake allocator's counters.
    """

    def __init__(
        self,
        name: str = "NVIDIA H100 80GB HBM3",
        sm_count: int = 132,
        uuid: str = UUID,
        available: bool = True,
        more_uuids: tuple[str, ...] = (),
    ) -> None:
        self.props = SimpleNamespace(
            name=name, total_memory=80 * 2**30, multi_processor_count=sm_count, uuid=uuid, major=9, minor=0
        )
        # Devices 1, 2, ... of the process (`more_uuids`), all of the same model; 0 is current.
        self.all_props = [self.props] + [SimpleNamespace(**{**vars(self.props), "uuid": u}) for u in more_uuids]
        self.available = available
        self.log: list[str] = []
        self.events: list[Any] = []
        self.synced_at = -1.0
        self.allocated = 0
        self.peak = 0
        self.reserved_peak = 0
        cuda = self

        class Event:
            def __init__(self, enable_timing: bool = False) -> None:
                assert enable_timing, "timing events need enable_timing=True"
                self.t: float | None = None
                cuda.events.append(self)

            def record(self) -> None:
                cuda.log.append("record")
                self.t = time.perf_counter()

            def elapsed_time(self, end: Event) -> float:
                if self.t is None or end.t is None or end.t > cuda.synced_at:
                    raise RuntimeError("CUDA error: device not ready (event not completed; synchronize first)")
                return (end.t - self.t) * 1e3  # ms, as torch returns

        self.Event = Event

    def is_available(self) -> bool:
        return self.available

    def current_device(self) -> int:
        return 0

    def device_count(self) -> int:
        return len(self.all_props)

    def get_device_properties(self, ordinal: int) -> SimpleNamespace:
        return self.all_props[ordinal]

    def synchronize(self) -> None:
        self.log.append("synchronize")
        self.synced_at = time.perf_counter()

    def reset_peak_memory_stats(self, device: Any = None) -> None:
        self.log.append("reset_peak_memory_stats")
        self.peak = self.allocated
        self.reserved_peak = self.allocated

    def memory_allocated(self, device: Any = None) -> int:
        return self.allocated

    def max_memory_allocated(self, device: Any = None) -> int:
        return self.peak

    def max_memory_reserved(self, device: Any = None) -> int:
        return self.reserved_peak

    def allocate(self, n_bytes: int) -> None:
        self.allocated += n_bytes
        self.peak = max(self.peak, self.allocated)
        self.reserved_peak = max(self.reserved_peak, -(-self.allocated // 2**21) * 2**21)  # 2 MiB segments

    def free(self, n_bytes: int) -> None:
        self.allocated -= n_bytes

"""CPU package energy from Linux powercap RAPL counters (`energy_uj`, wrapping at `max_energy_range_uj`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pytest_efficientllm.core.metrics import measured, unavailable
from pytest_efficientllm.core.record import Metric
from pytest_efficientllm.telemetry.base import Probe

POWERCAP_ROOT = Path("/sys/class/powercap")


@dataclass(frozen=True)
class RaplZone:
    path: Path
    name: str
    max_range_uj: int


class RaplReader:
    """Reads the top-level RAPL package zones (``intel-rapl:N``; subzones would double count).

    Units: µJ in the files, J out of `delta_j`.
    """

    def __init__(self, root: str | Path = POWERCAP_ROOT) -> None:
        self.root = Path(root)
        self.zones: list[RaplZone] = []
        self._problem: str | None = None
        self._discover()

    def _discover(self) -> None:
        if not self.root.is_dir():
            self._problem = f"no RAPL counters ({self.root} does not exist)"
            return
        for zone in sorted(self.root.glob("intel-rapl:*")):
            if zone.name.count(":") != 1:
                continue  # a subzone (core, dram): already inside its package's counter
            try:
                name = (zone / "name").read_text().strip() if (zone / "name").exists() else zone.name
                max_range = int((zone / "max_energy_range_uj").read_text())
                int((zone / "energy_uj").read_text())
            except (OSError, ValueError) as exc:
                self._problem = f"RAPL counter not readable ({zone}: {getattr(exc, 'strerror', None) or exc})"
                self.zones = []
                return
            self.zones.append(RaplZone(zone, name, max_range))
        if not self.zones and self._problem is None:
            self._problem = f"no RAPL package zones under {self.root}"

    def problem(self) -> str | None:
        return self._problem

    def read_uj(self) -> list[int]:
        return [int((z.path / "energy_uj").read_text()) for z in self.zones]

    def delta_j(self, before: list[int], after: list[int]) -> float:
        """Energy between two reads, unwrapping each counter at most once."""
        total_uj = 0
        for zone, b, a in zip(self.zones, before, after):
            d = a - b
            if d < 0:
                d += zone.max_range_uj
            total_uj += d
        return total_uj * 1e-6


class RaplProbe(Probe):
    name = "rapl"

    def __init__(self, reader: RaplReader) -> None:
        self.reader = reader
        self._before: list[int] = []
        self._after: list[int] = []
        self._error: str | None = None

    def open(self) -> None:
        self._error = None
        try:
            self._before = self.reader.read_uj()
        except (OSError, ValueError) as exc:
            self._error = f"RAPL read failed at window open: {exc}"

    def close(self) -> None:
        if self._error:
            return
        try:
            self._after = self.reader.read_uj()
        except (OSError, ValueError) as exc:
            self._error = f"RAPL read failed at window close: {exc}"

    def readings(self, wall_s: float) -> list[Metric]:
        zones = "+".join(z.name for z in self.reader.zones)
        method = f"RAPL energy_uj ({zones}), read at window open and close"
        if self._error:
            return [unavailable("energy", "measured", method, self._error)]
        return [measured("energy", self.reader.delta_j(self._before, self._after), method)]

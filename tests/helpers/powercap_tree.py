"""A powercap (RAPL) zone tree written into a temporary folder: a fixture builder, not a test double.

`RaplReader` takes the folder it reads as an argument, so the real reader runs against these
files exactly as it would against `/sys/class/powercap`.
"""

from __future__ import annotations

from pathlib import Path

MAX_UJ = 262_143_328_850  # a real package's max_energy_range_uj


def zone(root: Path, name: str, label: str, energy_uj: int, max_uj: int = MAX_UJ) -> Path:
    """Write one zone folder (`name`, `energy_uj`, `max_energy_range_uj`) under `root`."""
    path = root / name
    path.mkdir(parents=True)
    (path / "name").write_text(label + "\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return path


def set_energy(path: Path, energy_uj: int) -> None:
    """Move a zone's counter to `energy_uj`, as the kernel would between two reads."""
    (path / "energy_uj").write_text(f"{energy_uj}\n")

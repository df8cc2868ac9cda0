"""The RAPL reader on a temporary sysfs-shaped tree: units, subzones, wrap-around, unreadable files."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_efficientllm.telemetry import rapl as rapl_module
from pytest_efficientllm.telemetry.cpu_energy import estimate_energy
from pytest_efficientllm.telemetry.rapl import RaplProbe, RaplReader
from tests.helpers.powercap_tree import MAX_UJ, set_energy, zone


def window(reader: RaplReader, change) -> list:
    probe = RaplProbe(reader)
    probe.open()
    change()
    probe.close()
    return probe.readings(1.0)


def test_packages_are_summed_in_joules_and_subzones_not_double_counted(tmp_path: Path) -> None:
    pkg0 = zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000)
    core0 = zone(tmp_path, "intel-rapl:0:0", "core", 500_000)  # inside package-0's counter
    pkg1 = zone(tmp_path, "intel-rapl:1", "package-1", 2_000_000)
    reader = RaplReader(tmp_path)
    assert reader.problem() is None
    assert [z.name for z in reader.zones] == ["package-0", "package-1"]

    def work() -> None:
        set_energy(pkg0, 1_000_000 + 3_500_000)  # 3.5 J
        set_energy(core0, 500_000 + 3_000_000)
        set_energy(pkg1, 2_000_000 + 1_250_000)  # 1.25 J

    [energy] = window(reader, work)
    assert energy.value == pytest.approx(4.75) and energy.unit == "J" and energy.source == "measured"
    assert "package-0+package-1" in energy.method


def test_a_counter_that_wraps_is_unwrapped_with_max_energy_range(tmp_path: Path) -> None:
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", MAX_UJ - 1_000_000)
    [energy] = window(RaplReader(tmp_path), lambda: set_energy(pkg, 2_000_000))
    assert energy.value == pytest.approx(3.0)


def test_a_package_whose_counter_did_not_move_adds_nothing_not_a_wrap(tmp_path: Path) -> None:
    # In a window shorter than the counter's update period (~1 ms) a package reads the same twice.
    zone(tmp_path, "intel-rapl:0", "package-0", 5_000_000)
    pkg1 = zone(tmp_path, "intel-rapl:1", "package-1", 7_000_000)
    [energy] = window(RaplReader(tmp_path), lambda: set_energy(pkg1, 7_000_000 + 250_000))
    assert energy.value == pytest.approx(0.25)


def test_an_unreadable_energy_file_makes_rapl_unavailable_with_the_zone_named(tmp_path: Path) -> None:
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", 1)
    (pkg / "energy_uj").unlink()
    (pkg / "energy_uj").mkdir()  # unreadable even for root, unlike chmod 000
    reader = RaplReader(tmp_path)
    assert reader.zones == []
    assert "not readable" in reader.problem() and "intel-rapl:0" in reader.problem()


def test_garbage_in_a_counter_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    zone(tmp_path, "intel-rapl:0", "package-0", 1)
    (tmp_path / "intel-rapl:0" / "max_energy_range_uj").write_text("n/a\n")
    assert "not readable" in RaplReader(tmp_path).problem()


def test_no_powercap_tree_or_no_package_zone_is_a_problem(tmp_path: Path) -> None:
    assert "does not exist" in RaplReader(tmp_path / "absent").problem()
    (tmp_path / "intel-rapl").mkdir()
    assert "no RAPL package zones" in RaplReader(tmp_path).problem()


def test_a_read_failing_mid_window_reports_energy_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    zone(tmp_path, "intel-rapl:0", "package-0", 1)
    reader = RaplReader(tmp_path)

    def denied() -> list[int]:
        raise PermissionError(13, "Permission denied")

    def revoke() -> None:
        monkeypatch.setattr(reader, "read_uj", denied)

    [energy] = window(reader, revoke)
    assert energy.value is None and "window close" in energy.note and "Permission denied" in energy.note


def test_the_default_root_is_the_kernel_powercap_class() -> None:
    assert rapl_module.POWERCAP_ROOT == Path("/sys/class/powercap")


def test_without_rapl_the_estimate_names_its_model() -> None:
    energy = estimate_energy(2.0)
    assert energy.source == "estimated" and "estimate" in energy.method and "CPU-seconds" in energy.method
    assert energy.value == pytest.approx(2.0 * 10.0)

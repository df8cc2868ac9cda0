"""What a held test passes on to the fresh processes that confirm it."""

from __future__ import annotations

from pathlib import Path

import pytest
from filelock import FileLock, Timeout

from pytest_efficientllm.confirmation import vote as confirm
from pytest_efficientllm.glue import holding
from pytest_efficientllm.glue.holding import plugin_args


def test_the_plugins_a_command_line_names_are_passed_on_in_order_and_nothing_else() -> None:
    args = ["-k", "decode", "-p", "no:cacheprovider", "tests/", "-pno:randomly", "-x", "--pdb", "-n", "2"]
    assert plugin_args(args) == ("no:cacheprovider", "no:randomly")
    assert plugin_args(["tests/", "-p", "myplugin"]) == ("myplugin",)
    assert plugin_args(["tests/", "-v"]) == ()


@pytest.mark.parametrize("locked_device", ["0", None], ids=["a GPU worker", "a CPU run"])
def test_a_fresh_process_measures_under_the_lock_of_the_gpu_the_worker_measures_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, locked_device: str | None
) -> None:
    def lock_file(name: str) -> FileLock:
        return FileLock(str(tmp_path / f"device-{name}.lock"))

    def held(name: str) -> bool:
        try:
            lock_file(name).acquire(timeout=0)
        except Timeout:
            return True
        lock_file(name).release()
        return False

    seen: list[dict[str, bool]] = []

    def fake_measure_in_child(nodeid: str, settings: confirm.ChildSettings) -> str:
        """Test double of `measure_in_child`: what was locked while the fresh process ran."""
        seen.append({name: held(name) for name in ("0", "None")})
        return "not measured: a test double"

    monkeypatch.setattr(holding, "device_lock", lock_file)
    monkeypatch.setattr(confirm, "measure_in_child", fake_measure_in_child)
    settings = confirm.ChildSettings(tmp_path, None, "cpu", 1, 5, 1, 0.0)
    assert holding.measured_again("t.py::a", settings, locked_device) == "not measured: a test double"
    assert seen == [{"0": locked_device == "0", "None": False}]
    assert not held("0")  # released afterwards

"""`--efficiency-fixed-layout`: ASLR off and a fixed str hash seed, checked on real processes."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from pytest_efficientllm import layout

LINUX = sys.platform.startswith("linux")
needs_linux = pytest.mark.skipif(not LINUX, reason="ASLR control through personality() is Linux only")

PROBE = "from pytest_efficientllm.layout import current_layout; import json; print(json.dumps(current_layout()))"


def _layout_of(cmd_prefix: list[str], env: dict[str, str]) -> dict:
    out = subprocess.run([*cmd_prefix, sys.executable, "-c", PROBE], env={**os.environ, **env},
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@needs_linux
def test_the_layout_read_matches_what_the_process_was_started_with() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    fixed = _layout_of(["setarch", platform.machine(), "-R"], {**env, "PYTHONHASHSEED": "0"})
    assert fixed == {"aslr": False, "hash_seed": "0"} and layout.is_fixed(fixed)
    seeded = _layout_of([], {**env, "PYTHONHASHSEED": "123"})
    assert seeded["hash_seed"] == "123"
    system_aslr = open("/proc/sys/kernel/randomize_va_space").read().strip() != "0"
    if system_aslr:
        plain = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
        assert json.loads(plain.stdout) == {"aslr": True, "hash_seed": "random"}


def test_a_second_re_execution_is_refused_instead_of_looping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(layout.REEXEC_ENV, "1")
    reason = layout.reexec_fixed([sys.executable, "-c", "raise SystemExit(3)"])
    assert "still has a random layout" in reason


LAYOUT_TEST = """
import json, os
import pytest

@pytest.mark.efficiency(rounds=2, warmup=0, flops=False)
def test_where(efficiency):
    efficiency.measure(lambda: None)
    # The address of a fresh object: the same in two runs only when ASLR is off.
    print("ADDRESS", hex(id(object())), "SEED", os.environ.get("PYTHONHASHSEED"), "HASH", hash("efficiency"))
"""


def _addresses(result: pytest.RunResult) -> list[str]:
    return [line.split("ADDRESS ", 1)[1] for line in result.outlines if "ADDRESS " in line]


@needs_linux
def test_the_option_re_executes_pytest_with_a_fixed_layout_and_says_so(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_layout_probe=LAYOUT_TEST)
    json_path = pytester.path / "run.json"
    runs = [pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s", "--efficiency-fixed-layout",
                                          f"--efficiency-json={json_path}", timeout=180) for _ in range(2)]
    for result in runs:
        result.assert_outcomes(passed=1)
        result.stdout.fnmatch_lines(["process layout: ASLR off, str hash seed 0"])
    # Same address of a fresh object and the same str hash in both runs: one layout.
    assert _addresses(runs[0]) == _addresses(runs[1]) and _addresses(runs[0])
    record = json.loads(json_path.read_text())["records"][0]
    assert record["fingerprint"]["process_layout"] == {"aslr": False, "hash_seed": "0"}


def test_without_the_option_the_summary_names_the_random_layout(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_layout_probe=LAYOUT_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s", timeout=180)
    result.assert_outcomes(passed=1)
    if layout.current_layout()["aslr"] and "PYTHONHASHSEED" not in os.environ:
        result.stdout.fnmatch_lines(["process layout: ASLR on, str hash seed random (--efficiency-fixed-layout*"])


@needs_linux
def test_xdist_workers_inherit_the_fixed_layout(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_layout_probe=LAYOUT_TEST)
    json_path = pytester.path / "run.json"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--efficiency-fixed-layout",
                                           f"--efficiency-json={json_path}", timeout=180)
    result.assert_outcomes(passed=1)
    record = json.loads(json_path.read_text())["records"][0]
    assert record["fingerprint"]["process_layout"] == {"aslr": False, "hash_seed": "0"}

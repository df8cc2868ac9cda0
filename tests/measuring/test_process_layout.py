"""`--efficiency-fixed-layout`: ASLR off and a fixed str hash seed, checked on real processes."""

from __future__ import annotations

import ctypes
import json
import os
import platform
import subprocess
import sys

import pytest

from pytest_efficientllm.measuring import process_layout as layout

LINUX = sys.platform.startswith("linux")
needs_linux = pytest.mark.skipif(not LINUX, reason="ASLR control through personality() is Linux only")

PROBE = (
    "from pytest_efficientllm.measuring.process_layout import current_layout; "
    "import json; print(json.dumps(current_layout()))"
)


def _layout_of(cmd_prefix: list[str], env: dict[str, str]) -> dict:
    out = subprocess.run(
        [*cmd_prefix, sys.executable, "-c", PROBE],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def _aslr_back_on() -> None:
    # This test run may itself have a fixed layout (this project's ini asks for it), and
    # children inherit the personality: the "as started normally" case clears the flag.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.personality(libc.personality(0xFFFFFFFF) & ~layout.ADDR_NO_RANDOMIZE)


@needs_linux
def test_the_layout_read_matches_what_the_process_was_started_with() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHASHSEED", layout.REEXEC_ENV, layout.PAD_ENV)}
    fixed = _layout_of(["setarch", platform.machine(), "-R"], {**env, "PYTHONHASHSEED": "0"})
    # ASLR off and the seed fixed, but not re-executed for this command line: stack not padded.
    assert fixed == {"aslr": False, "hash_seed": "0", "stack_padded": False} and not layout.is_fixed(fixed)
    # Its confirmation processes still start fixed: they inherit ASLR off, and are seeded and padded.
    assert layout.children_start_fixed(fixed)
    seeded = _layout_of([], {**env, "PYTHONHASHSEED": "123"})
    assert seeded["hash_seed"] == "123"
    system_aslr = open("/proc/sys/kernel/randomize_va_space").read().strip() != "0"
    if system_aslr:
        plain = subprocess.run(
            [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True, preexec_fn=_aslr_back_on
        )
        assert json.loads(plain.stdout) == {"aslr": True, "hash_seed": "random", "stack_padded": False}


def test_confirmation_processes_start_fixed_only_from_a_process_with_aslr_off_and_a_fixed_seed() -> None:
    # Only where this process runs so: the processes of the vote measure as this one did.
    assert layout.children_start_fixed({"aslr": False, "hash_seed": "123", "stack_padded": False})
    assert not layout.children_start_fixed({"aslr": False, "hash_seed": "random", "stack_padded": True})
    assert not layout.children_start_fixed({"aslr": True, "hash_seed": "0", "stack_padded": True})
    assert not layout.children_start_fixed({"aslr": None, "hash_seed": "0", "stack_padded": False})


def test_the_padding_makes_every_command_line_and_environment_one_stack_size() -> None:
    cases = [([], {}), (["-k", "x" * 50], {"A": "b" * 1000}), (["-q"], {"GATE_MEMGROW": "0.01", "C": ""})]
    for argv, env in cases:
        padded = layout.padded_env("/usr/bin/python3", argv, env)
        assert layout.stack_bytes("/usr/bin/python3", argv, padded) == layout.STACK_BYTES
        assert {k: v for k, v in padded.items() if k != layout.PAD_ENV} == env


def test_a_second_re_execution_is_refused_instead_of_looping(monkeypatch: pytest.MonkeyPatch) -> None:
    argv = [sys.executable, "-c", "raise SystemExit(3)"]
    monkeypatch.setenv(layout.REEXEC_ENV, layout._token(argv, os.getpid()))
    reason = layout.reexec_fixed(argv)
    assert "still has a random layout" in reason


def test_the_padding_mark_holds_for_its_process_and_children_not_grandchildren(monkeypatch: pytest.MonkeyPatch) -> None:
    # A worker's test that runs pytest under xdist again inherits its controller's mark for
    # execnet's command line, which its own workers share: they are not padded for it.
    argv = list(sys.orig_argv)
    unrelated = next(pid for pid in range(2, 10**6) if pid not in (os.getpid(), os.getppid()))
    for pid, padded in ((os.getpid(), True), (os.getppid(), True), (unrelated, False)):
        monkeypatch.setenv(layout.REEXEC_ENV, layout._token(argv, pid))
        assert layout.current_layout()["stack_padded"] is padded, pid


LAYOUT_TEST = """
import json, os
import pytest

@pytest.mark.efficiency(rounds=2, warmup=0, flops=False)
def test_where(efficiency):
    efficiency.measure(lambda: None)
    # Where the stack starts (/proc/self/stat field 28): the same in two runs only with ASLR
    # off and the stack padded to one size; and the address of a fresh object.
    start = open("/proc/self/stat").read().rsplit(")", 1)[1].split()[25]
    line = f"ADDRESS {start} {hex(id(object()))} SEED {os.environ.get('PYTHONHASHSEED')} HASH {hash('efficiency')}"
    print(line)
    if os.environ.get("LAYOUT_PROBE_OUT"):  # an xdist worker's output is not shown
        with open(os.environ["LAYOUT_PROBE_OUT"], "a") as out:
            out.write(line + "\\n")
"""


def _addresses(result: pytest.RunResult) -> list[str]:
    return [line.split("ADDRESS ", 1)[1] for line in result.outlines if "ADDRESS " in line]


@needs_linux
def test_the_option_re_executes_pytest_with_a_fixed_layout_and_says_so(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_layout_probe=LAYOUT_TEST)
    json_path = pytester.path / "run.json"
    args = ("-p", "no:cacheprovider", "-s", "--efficiency-fixed-layout", f"--efficiency-json={json_path}")
    runs = [pytester.runpytest_subprocess(*args, timeout=180) for _ in range(2)]
    # A third run with a longer command line and environment: the padding keeps the stack where it was.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EFFICIENCY_TEST_LONGER_ENVIRONMENT", "x" * 333)
        runs.append(pytester.runpytest_subprocess(*args, "-k", "where or nothing_else", timeout=180))
    for result in runs:
        result.assert_outcomes(passed=1)
        result.stdout.fnmatch_lines(["process layout: ASLR off, str hash seed 0, stack padded"])
    seen = [_addresses(result) for result in runs]
    assert all(len(s) == 1 for s in seen), seen
    # With ASLR on the stack would start elsewhere in every run; unpadded, the third run's would
    # start lower by its extra bytes. (Heap addresses are not compared: what the interpreter
    # allocates before the test depends on the command line.)
    stack, _, _, seed, _, str_hash = zip(*(s[0].split() for s in seen))
    assert len(set(stack)) == 1 and len(set(str_hash)) == 1 and set(seed) == {"0"}, seen
    record = json.loads(json_path.read_text())["records"][0]
    assert record["fingerprint"]["process_layout"] == {"aslr": False, "hash_seed": "0", "stack_padded": True}


def test_without_the_option_the_summary_names_the_random_layout(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_layout_probe=LAYOUT_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s", timeout=180)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["process layout: *stack not padded (--efficiency-fixed-layout*"])


@needs_linux
def test_xdist_workers_measure_under_the_layout_of_a_serial_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_layout_probe=LAYOUT_TEST)
    where = pytester.path / "where.txt"
    json_path = pytester.path / "run.json"
    args = ("-p", "no:cacheprovider", "--efficiency-fixed-layout")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAYOUT_PROBE_OUT", str(where))
        pytester.runpytest_subprocess(*args, timeout=180).assert_outcomes(passed=1)
        result = pytester.runpytest_subprocess(*args, "-n", "2", f"--efficiency-json={json_path}", timeout=180)
    result.assert_outcomes(passed=1)
    # execnet starts a worker with a command line of its own; the controller padded the
    # environment for that one, so the worker's stack starts where the serial run's did.
    serial, worker = (line.split() for line in where.read_text().splitlines())
    assert (serial[1], serial[-1]) == (worker[1], worker[-1])  # stack start, str hash
    record = json.loads(json_path.read_text())["records"][0]
    assert record["fingerprint"]["process_layout"] == {"aslr": False, "hash_seed": "0", "stack_padded": True}
    assert "xdist worker(s)" not in result.stdout.str()


def test_workers_the_controller_could_not_pad_are_named_with_their_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    from execnet import XSpec

    for name in (layout.PAD_ENV, layout.REEXEC_ENV, "PYTHONHASHSEED"):
        monkeypatch.setenv(name, "")  # so that the value this run had is restored after the test
        monkeypatch.delenv(name)
    assert "not by this interpreter" in layout.pad_for_xdist_workers([XSpec("popen//python=/opt/other/python3")])
    assert "other than popen" in layout.pad_for_xdist_workers([XSpec("popen"), XSpec("ssh=elsewhere")])
    assert layout.PAD_ENV not in os.environ
    assert layout.pad_for_xdist_workers([XSpec("popen"), XSpec("popen")]) == ""
    assert os.environ["PYTHONHASHSEED"] == "0" and layout.PAD_ENV in os.environ

    fixed = {"aslr": False, "hash_seed": "0", "stack_padded": True}
    unpadded = {**fixed, "stack_padded": False}
    assert layout.workers_note(fixed, {"gw0": fixed, "gw1": fixed}) == ""
    assert layout.workers_note(fixed, {"gw0": unpadded, "gw1": fixed, "gw2": unpadded}) == (
        "xdist worker(s) gw0, gw2 measured with ASLR off, str hash seed 0, stack not padded"
    )


def _forked_child_padded() -> bool:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe and never returns
        try:
            os.write(write, b"1" if layout.current_layout()["stack_padded"] else b"0")
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as answer:
        padded = answer.read()
    os.waitpid(pid, 0)
    return padded == b"1"


def test_a_forked_child_has_its_parent_s_padding(monkeypatch: pytest.MonkeyPatch) -> None:
    # A distributed test's ranks are forked from an xdist worker, which its controller marked:
    # the mark names the controller, the rank's grandparent, yet the rank runs on a copy of the
    # worker's padded stack.
    argv = list(sys.orig_argv)
    monkeypatch.setenv(layout.REEXEC_ENV, layout._token(argv, os.getppid()))
    assert layout.current_layout()["stack_padded"] is True
    assert _forked_child_padded() is True
    monkeypatch.setenv(layout.REEXEC_ENV, "not-this-process:1")
    assert _forked_child_padded() is False

"""One fixed process layout, so that two runs differ only in what they measure.

Linux places each new process's heap, stack and libraries at random addresses (ASLR),
and Python seeds its str hashes at random (so dict and set layouts differ). Both change
how a workload's data falls into caches, and Python-heavy workloads (a small
transformer's forward: many small ops, much dispatch) run faster or slower by several
percent for the whole life of a process: on the development VM the medians of 12 fresh
processes spread 4.8% (standard deviation of the log), 1.8% with both fixed
(benchmarks/RESULTS.md, "Gate noise"). A gate compares one process against another, so
that spread lands in every verdict.

`--efficiency-fixed-layout` asks for ASLR off (`personality(ADDR_NO_RANDOMIZE)`, what
`setarch -R` does) and `PYTHONHASHSEED=0`. Neither can change inside a running
interpreter, so the pytest process re-executes itself once, with the same arguments,
before it has collected anything; xdist workers and other child processes inherit both.

With ASLR off, where the stack starts still depends on how many bytes of arguments and
environment `execve` copies onto it, and that moves a workload's speed too (Mytkowicz
et al., "Producing wrong data without doing anything obviously wrong", ASPLOS 2009):
unpadded, every forward false alarm of `gate_evidence.py --fixed-layout` (9 of 9) came from
processes whose environment differed from the baseline's by one value. So the
re-executed process gets `PAD_ENV`, sized to make those bytes `STACK_BYTES` in every run.
Where the kernel refuses, or the option is off, the run goes on as it is and the summary
says which layout it measured under (it is also in every record's fingerprint).

xdist workers are started by execnet with a command line of their own (`python -u -c
<bootstrap>`), so padding sized for the controller's command line would leave their stacks
elsewhere. Before execnet starts them, the controller sizes `PAD_ENV` in its environment
for the workers' command line (`pad_for_xdist_workers`): a worker starts with the stack of a
serial run and records `stack_padded: true`, as a serial run does. Workers this process
does not start itself (`--tx ssh=...`, `via=`, another `python=`) are left as they are, and
`workers_note` makes the summary say what they measured under.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import struct
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ADDR_NO_RANDOMIZE = 0x0040000
_QUERY = 0xFFFFFFFF
# Set in the environment of the re-executed process, naming its command line: one attempt
# per command line, never a loop; a child process with another command line re-executes.
REEXEC_ENV = "PYTEST_EFFICIENTLLM_REEXEC"
FIXED_HASH_SEED = "0"
PAD_ENV = "PYTEST_EFFICIENTLLM_STACK_PAD"
STACK_BYTES = 64 * 1024  # far above a usual command line and environment (a few KiB)
_POINTER = struct.calcsize("P")


def stack_bytes(executable: str, argv: list[str], env: dict[str, str]) -> int:
    """Bytes `execve` puts on the new stack for these: the strings and the pointer arrays to them."""
    strings = len(os.fsencode(executable)) + 1 + sum(len(os.fsencode(a)) + 1 for a in argv)
    strings += sum(len(os.fsencode(k)) + len(os.fsencode(v)) + 2 for k, v in env.items())
    return strings + _POINTER * (len(argv) + 1 + len(env) + 1)


def padded_env(executable: str, argv: list[str], env: dict[str, str]) -> dict[str, str]:
    """`env` plus `PAD_ENV`, sized so that `stack_bytes` is `STACK_BYTES` (or unpadded if already above)."""
    out = {k: v for k, v in env.items() if k != PAD_ENV}
    short = STACK_BYTES - stack_bytes(executable, argv, {**out, PAD_ENV: ""})
    out[PAD_ENV] = "x" * max(0, short)
    return out


def process_environ() -> dict[str, str]:
    """The environment a child started without an explicit one gets: the C library's, which
    can hold variables that `os.environ` never saw (a library's `setenv`, e.g. LINES, COLUMNS)."""
    try:
        entries = ctypes.POINTER(ctypes.c_char_p).in_dll(ctypes.CDLL(None), "environ")
        out: dict[str, str] = {}
        i = 0
        while entries[i] is not None:
            name, _, value = os.fsdecode(entries[i]).partition("=")
            out.setdefault(name, value)
            i += 1
        return out
    except (OSError, ValueError, AttributeError):
        return dict(os.environ)


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _token(argv: list[str], pid: int) -> str:
    """Names the command line a fixed start was prepared for, and the process that prepared it.

    A child with another command line is not padded for it. The process id keeps the mark
    from leaking further than meant: it holds for the process that set it (`reexec_fixed`:
    `execve` keeps the pid) and for that process's own children (xdist workers, confirmation
    processes), but not for a grandchild that inherited it: an xdist worker's test that starts
    pytest with xdist again would otherwise see its own workers (execnet's command line is
    always the same) as padded when they are not.
    """
    digest = hashlib.sha256("\0".join(argv).encode(errors="surrogateescape")).hexdigest()[:16]
    return f"{digest}:{pid}"


def _marked_for_this_process(argv: list[str]) -> bool:
    mark = os.environ.get(REEXEC_ENV)
    return mark is not None and mark in (_token(argv, os.getpid()), _token(argv, os.getppid()))


# A forked child (a distributed test's ranks, started by `fork`) runs on a copy of its parent's
# stack, so it has the parent's padding whatever its pid; an `exec` clears this again.
_padded_at_fork = False
_forked_from_padded = False


def _before_fork() -> None:
    global _padded_at_fork
    _padded_at_fork = _forked_from_padded or _marked_for_this_process(list(sys.orig_argv))


def _in_forked_child() -> None:
    global _forked_from_padded
    _forked_from_padded = _padded_at_fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_in_forked_child)


def current_layout() -> dict[str, Any]:
    """This process's layout: `aslr` (True, False, or None where unknown), `hash_seed`, and
    `stack_padded` (re-executed by `reexec_fixed` for this very command line, or forked from a
    process that was)."""
    personality = _read("/proc/self/personality")
    system = _read("/proc/sys/kernel/randomize_va_space")
    aslr: bool | None
    if personality is None and system is None:
        aslr = None
    else:
        off_here = personality is not None and bool(int(personality, 16) & ADDR_NO_RANDOMIZE)
        off_everywhere = system == "0"
        aslr = not (off_here or off_everywhere)
    # The interpreter read PYTHONHASHSEED at start-up; seed 0 also shows in sys.flags.
    env_seed = os.environ.get("PYTHONHASHSEED", "")
    seed = "0" if sys.flags.hash_randomization == 0 else env_seed if env_seed.isdigit() else "random"
    padded = _forked_from_padded or _marked_for_this_process(list(sys.orig_argv))
    return {"aslr": aslr, "hash_seed": seed, "stack_padded": padded}


def is_fixed(layout: dict[str, Any]) -> bool:
    """The whole fixed layout: what a confirmation process started from it gets, and the stack padded too."""
    return children_start_fixed(layout) and bool(layout.get("stack_padded"))


def children_start_fixed(layout: dict[str, Any]) -> bool:
    """Whether a fresh process this one starts to measure a test again gets the fixed layout
    (`fixed_child_env`): where this process runs with ASLR off, which the child inherits, and a
    fixed hash seed. Unlike `is_fixed`, its own stack need not be padded: the child's is padded
    for its own command line, as a run with the fixed layout would have it."""
    return layout.get("aslr") is False and layout.get("hash_seed") != "random"


def describe(layout: dict[str, Any]) -> str:
    aslr = {True: "ASLR on", False: "ASLR off", None: "ASLR unknown"}[layout.get("aslr")]
    seed = layout.get("hash_seed", "random")
    padded = "stack padded" if layout.get("stack_padded") else "stack not padded"
    return f"{aslr}, str hash seed {seed}, {padded}"


def fixed_child_env(argv: list[str], env: dict[str, str]) -> dict[str, str]:
    """The environment that starts `argv` (a pytest command line, from a process whose ASLR is
    off, which the child inherits) with the fixed layout already in place: seeded, padded and
    marked, so it does not re-execute."""
    return padded_env(
        sys.executable, argv, {**env, "PYTHONHASHSEED": FIXED_HASH_SEED, REEXEC_ENV: _token(argv, os.getpid())}
    )


def reexec_fixed(argv: list[str]) -> str:
    """Re-execute `argv` with ASLR off and `PYTHONHASHSEED=0`; returns only with the reason it could not."""
    if os.environ.get(REEXEC_ENV) == _token(argv, os.getpid()):
        return "the re-executed process still has a random layout (the kernel ignores the personality flag)"
    if not sys.platform.startswith("linux"):
        return f"fixing the layout needs Linux (this is {sys.platform})"
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        current = libc.personality(_QUERY)
        if current == -1 or libc.personality(current | ADDR_NO_RANDOMIZE) == -1:
            return f"personality(ADDR_NO_RANDOMIZE) refused: {os.strerror(ctypes.get_errno())}"
    except (OSError, AttributeError) as exc:
        return f"personality() unavailable: {exc}"
    env = fixed_child_env(argv, dict(os.environ))
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, argv, env)
    except OSError as exc:
        return f"re-executing {sys.executable} failed: {exc}"
    return "unreachable"  # pragma: no cover


def pad_for_xdist_workers(specs: Iterable[Any]) -> str:
    """Size `PAD_ENV` in this process's environment for the command line execnet starts xdist
    workers with, so that each starts with the stack a re-executed process has; "" when done,
    else why not (the workers then record `stack_padded: false`).

    Called in the controller, which has the fixed layout (its children inherit ASLR off and the
    hash seed) and whose own fingerprint was read at start-up; the variables stay set, so a
    worker xdist restarts after a crash is padded too. `specs` are execnet `XSpec`s.
    """
    from execnet.gateway_io import popen_args

    specs = list(specs)
    if not specs:
        return ""
    if not all(getattr(spec, "popen", False) and not getattr(spec, "via", None) for spec in specs):
        return "xdist workers started elsewhere than by this process (--tx other than popen) keep their own layout"
    argvs = {tuple(popen_args(spec)) for spec in specs}
    if len(argvs) != 1:
        return "xdist workers started with several command lines; the stack can be padded for one only"
    argv = list(argvs.pop())
    if argv[0] != sys.executable:
        return f"xdist workers started by {argv[0]}, not by this interpreter: their stack is not sized"
    fixed = fixed_child_env(argv, process_environ())
    for name in (PAD_ENV, REEXEC_ENV, "PYTHONHASHSEED"):
        os.environ[name] = fixed[name]
    return ""


def workers_note(controller: dict[str, Any], workers: dict[str, dict[str, Any]]) -> str:
    """What the workers measured under, where that differs from `controller`'s layout; "" otherwise.
    `workers`: each worker's layout (`current_layout()` there) by worker id."""
    differing: dict[str, list[str]] = {}
    for workerid, theirs in sorted(workers.items()):
        if theirs and theirs != controller:
            differing.setdefault(describe(theirs), []).append(workerid)
    return "; ".join(f"xdist worker(s) {', '.join(ids)} measured with {text}" for text, ids in differing.items())

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
Where the kernel refuses, or the option is off, the run goes on as it is and the summary
says which layout it measured under (it is also in every record's fingerprint).
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path
from typing import Any

ADDR_NO_RANDOMIZE = 0x0040000
_QUERY = 0xFFFFFFFF
# Set in the environment of the re-executed process: one attempt only, never a loop.
REEXEC_ENV = "PYTEST_EFFICIENTLLM_REEXEC"
FIXED_HASH_SEED = "0"


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def current_layout() -> dict[str, Any]:
    """This process's layout: `aslr` (True, False, or None where unknown) and `hash_seed`."""
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
    return {"aslr": aslr, "hash_seed": seed}


def is_fixed(layout: dict[str, Any]) -> bool:
    return layout.get("aslr") is False and layout.get("hash_seed") != "random"


def describe(layout: dict[str, Any]) -> str:
    aslr = {True: "ASLR on", False: "ASLR off", None: "ASLR unknown"}[layout.get("aslr")]
    seed = layout.get("hash_seed", "random")
    return f"{aslr}, str hash seed {'random' if seed == 'random' else seed}"


def reexec_fixed(argv: list[str]) -> str:
    """Re-execute `argv` with ASLR off and `PYTHONHASHSEED=0`; returns only with the reason it could not."""
    if os.environ.get(REEXEC_ENV):
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
    env = {**os.environ, "PYTHONHASHSEED": FIXED_HASH_SEED, REEXEC_ENV: "1"}
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, argv, env)
    except OSError as exc:
        return f"re-executing {sys.executable} failed: {exc}"
    return "unreachable"  # pragma: no cover

"""Start N local ranks with torch.multiprocessing, run a body in each, collect what they report.

Runs in the parent (the pytest process); `_rank_entry` runs in each rank.

* The parent holds the rendezvous: a `TCPStore` bound to port 0, so the operating system
  hands out a free port atomically (no probe-then-bind race, no clash with MASTER_PORT
  29500 or another test spawning at the same time); a bind failure is retried. It is opened
  only once every rank is forked, and the ranks read its port from a file: forked beside the
  store's serving thread, a rank hung in its own store client about once in 230 spawns
  (benchmarks/RESULTS.md).
* Each rank joins the default group (gloo on the CPU, NCCL with one GPU per rank) with the
  session's collective timeout, runs the body, and writes a `RankOutcome` (plain JSON:
  the record as `Record.to_dict()`, or the traceback) to a file the parent reads.
* A rank that raises exits non-zero after writing its traceback; a rank that dies (signal,
  `os._exit`) exits non-zero without one. Either way the parent sees it at once
  (`_await_ranks`), gives the other ranks `GRACE_S` to end on their own (one blocked in a
  collective with it fails there and says so), then kills the rest: the test fails with the
  first failing rank's error, nothing waits for a timeout, and a rank killed so reads as
  terminated, not as died. The parent waits on the processes itself: `ProcessContext.join`
  SIGTERMs the survivors before returning (so they read as killed by SIGTERM), and takes
  no grace period before torch 2.5.
* Start method: `fork` where this process has not initialised CUDA (fast: the ranks share
  the already-imported modules and the fixtures' values). A forked rank runs torch with one
  intra-op thread: GNU OpenMP's thread pool does not survive `fork` (a forked child that
  starts a parallel region with more threads hangs). `spawn` otherwise (CUDA cannot be
  used in a forked child): the body and the fixture values are pickled, and each rank may
  use its share of the cores.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# torch is imported inside the functions, as in collectives: this module loads with the plugin.
from pytest_efficientllm.distributed.collectives import (
    DEFAULT_TIMEOUT_S,
    RankContext,
    join,
    leave,
)
from pytest_efficientllm.distributed.outcome import (
    DIED,
    FAILED,
    MISSING,
    PASSED,
    SKIPPED,
    RankOutcome,
    format_error,
    root_cause,
)
from pytest_efficientllm.storage.runfile import write_atomic

START_METHODS = ("auto", "fork", "spawn", "forkserver")
HOST = "127.0.0.1"


class SpawnError(RuntimeError):
    """The ranks could not be started (no port, a body that cannot be pickled for spawn)."""


def choose_start_method(requested: str = "auto") -> str:
    """`fork` unless CUDA is initialised here (or fork is unavailable); an explicit choice wins."""
    import torch
    import torch.multiprocessing as mp

    if requested not in START_METHODS:
        raise ValueError(f"start method {requested!r}: expected one of {', '.join(START_METHODS)}")
    if requested != "auto":
        return requested
    if torch.cuda.is_initialized() or "fork" not in mp.get_all_start_methods():
        return "spawn"
    return "fork"


# CPython 3.12+ warns at every fork of a process with more than one thread, and there always are
# several here: torch starts threads of its own (its import, its OpenMP pool). The forked ranks
# are safe in the ways that warning is about: the OpenMP pool is not used across the fork (each
# rank runs torch with one thread, `_rank_entry`), torch resets its own pools in the child, and
# the rendezvous store, whose serving thread a rank's store client did hang beside, is opened
# only after the last fork (`run_ranks`).
FORK_WITH_THREADS = r"This process \(pid=\d+\) is multi-threaded, use of fork\(\) may lead to deadlocks"


@contextlib.contextmanager
def quiet_fork(method: str) -> Iterator[None]:
    """Starting the ranks: without Python's warning about forking beside threads, for `fork` only."""
    with warnings.catch_warnings():
        if method == "fork":
            warnings.filterwarnings("ignore", message=FORK_WITH_THREADS, category=DeprecationWarning)
        yield


@dataclass
class RankJob:
    """What every rank needs; plain data except `body` (pickled by reference under spawn)."""

    body: Callable[[RankContext], dict[str, Any] | None]
    world_size: int
    backend: str
    timeout_s: float
    result_dir: str  # the ranks' outcomes, and the rendezvous port (`PORT_FILE`)
    start_method: str


def _is_skip(exc: BaseException) -> bool:
    try:
        import pytest

        return isinstance(exc, pytest.skip.Exception)
    except ImportError:  # pragma: no cover - pytest is always there when the plugin runs
        return False


def _write(job: RankJob, outcome: RankOutcome) -> None:
    write_atomic(Path(job.result_dir) / f"rank{outcome.rank}.json", json.dumps(outcome.to_dict()))


PORT_FILE = "port"
PORT_POLL_S = 0.005


def _await_port(job: RankJob) -> int:
    """The rendezvous port, once the parent has opened the store after forking every rank."""
    path = Path(job.result_dir) / PORT_FILE
    deadline = time.monotonic() + job.timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the parent opened no rendezvous store within {job.timeout_s:g} s")
        time.sleep(PORT_POLL_S)
    return int(path.read_text(encoding="utf-8"))


def _rank_entry(index: int, job: RankJob) -> None:
    """One rank: join, run the body, write the outcome; exit 1 after a failure so the others stop."""
    import torch
    import torch.distributed as dist

    if job.start_method == "fork":
        torch.set_num_threads(1)
    try:
        port = _await_port(job)
        os.environ.update(
            {
                "RANK": str(index),
                "WORLD_SIZE": str(job.world_size),
                "LOCAL_RANK": str(index),
                "LOCAL_WORLD_SIZE": str(job.world_size),
                "GROUP_RANK": "0",
                "MASTER_ADDR": HOST,
                "MASTER_PORT": str(port),
            }
        )
        store = dist.TCPStore(HOST, port, job.world_size, is_master=False, timeout=_dt.timedelta(seconds=job.timeout_s))
        ctx = join(
            index,
            job.world_size,
            local_rank=index,
            local_world_size=job.world_size,
            backend=job.backend,
            launcher="spawn",
            timeout_s=job.timeout_s,
            store=store,
        )
        record = job.body(ctx)
        _write(job, RankOutcome(index, PASSED, record=record))
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the parent as text
        status = SKIPPED if _is_skip(exc) else FAILED
        error = str(getattr(exc, "msg", "") or exc) if status == SKIPPED else format_error(exc)
        failed_at = time.time() if status == FAILED else None
        _write(job, RankOutcome(index, status, error=error, failed_at=failed_at))
        sys.stdout.flush()
        sys.stderr.flush()
        if status == SKIPPED:
            return
        raise SystemExit(1) from None
    leave(ctx)


def _master_store(world_size: int, timeout_s: float, attempts: int = 3) -> Any:
    import torch.distributed as dist

    last: Exception | None = None
    for _ in range(attempts):
        try:
            return dist.TCPStore(
                HOST, 0, world_size, is_master=True, wait_for_workers=False, timeout=_dt.timedelta(seconds=timeout_s)
            )
        except (RuntimeError, OSError) as exc:  # e.g. EADDRINUSE on an exhausted port range
            last = exc
            time.sleep(0.2)
    raise SpawnError(f"could not open a rendezvous port on {HOST} after {attempts} attempts: {last}")


def _describe_exit_code(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"killed by signal {name}; no Python traceback (see the captured output)"
    return f"exited with code {code} without a Python traceback (os._exit, a crash in native code, ...)"


# How long the other ranks have to end on their own once one has failed.
GRACE_S = 1.0


def _await_ranks(processes: list[Any], grace_s: float = GRACE_S) -> int | None:
    """Wait until every rank has exited; the index of the first that exited non-zero, after
    `grace_s` more for the others to end on their own (the caller kills what is left), or
    None when every rank exited 0."""
    from multiprocessing.connection import wait

    pending = {process.sentinel: rank for rank, process in enumerate(processes)}
    while pending:
        for sentinel in wait(list(pending)):
            rank = pending.pop(sentinel)
            processes[rank].join()
            if processes[rank].exitcode != 0:
                deadline = time.monotonic() + grace_s
                for process in processes:
                    process.join(max(0.0, deadline - time.monotonic()))
                return rank
    return None


def run_ranks(
    body: Callable[[RankContext], dict[str, Any] | None],
    world_size: int,
    *,
    backend: str = "gloo",
    timeout_s: float = DEFAULT_TIMEOUT_S,
    start_method: str = "auto",
) -> list[RankOutcome]:
    """Run `body(ctx)` in `world_size` fresh ranks; one `RankOutcome` per rank, in rank order.

    Returns when every rank has finished, or as soon as one fails (the others are then
    terminated). Never raises for a rank's failure: that is in the outcomes.
    """
    import torch.multiprocessing as mp

    method = choose_start_method(start_method)
    with tempfile.TemporaryDirectory(prefix="efficiency-ranks-") as tmp:
        job = RankJob(body, world_size, backend, timeout_s, tmp, method)
        try:
            with quiet_fork(method):
                context = mp.start_processes(
                    _rank_entry, args=(job,), nprocs=world_size, join=False, start_method=method
                )
        except (TypeError, AttributeError, __import__("pickle").PicklingError) as exc:
            raise SpawnError(
                f"start method {method!r} must pickle the test function and its fixture values, and could not: {exc}"
            ) from exc
        first: int | None = None
        store = None
        try:
            # Only now, with every rank forked (the module's docstring says why).
            store = _master_store(world_size, timeout_s)
            write_atomic(Path(tmp) / PORT_FILE, str(store.port))
            first = _await_ranks(context.processes)
        finally:
            # A rank that was already gone when the first failure was seen ended on its own
            # (it may be the cause: a rank that dies makes its peers' collectives fail too);
            # only the ones alive now are terminated by us.
            ended_alone = {rank for rank, process in enumerate(context.processes) if not process.is_alive()}
            for process in context.processes:
                if process.is_alive():
                    process.kill()
                process.join()
        del store
        outcomes = []
        for rank in range(world_size):
            path = Path(tmp) / f"rank{rank}.json"
            if path.exists():
                outcome = RankOutcome.from_dict(json.loads(path.read_text(encoding="utf-8")))
            elif rank in ended_alone and context.processes[rank].exitcode not in (None, 0):
                outcome = RankOutcome(rank, DIED, error=_describe_exit_code(context.processes[rank].exitcode))
            else:
                code = context.processes[rank].exitcode
                why = (
                    f"terminated after rank {first} failed"
                    if first is not None
                    else f"exited with code {code} without reporting"
                )
                outcome = RankOutcome(rank, MISSING, error=why)
            outcomes.append(outcome)
        cause = root_cause(outcomes, first)
        for outcome in outcomes:
            outcome.first = outcome.rank == cause
        return outcomes

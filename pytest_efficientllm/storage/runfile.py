"""A run file: every record of one pytest run (or of merged runs), as one JSON document.

Written by `--efficiency-json=PATH`, read by the `compare`, `merge` and `report` commands.

    {"format": "pytest-efficientllm-run", "schema": 1,
     "runs": [{"profile": "cpu", "fingerprint": {...}, "started": "...", "label": "..."}],
     "records": [Record.to_dict(), ...]}

`runs` lists the sessions the records came from (one for a plain run, several after a
merge); each record keeps its own fingerprint, so nothing is lost when runs are merged.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_efficientllm.core.record import SCHEMA_VERSION, Record, SchemaError

FORMAT = "pytest-efficientllm-run"


class RunFileError(ValueError):
    """A run file that cannot be read; the message names the file and what is wrong."""


@dataclass
class Run:
    records: list[Record]
    runs: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "schema": SCHEMA_VERSION,
            "runs": self.runs,
            "records": [r.to_dict() for r in sorted(self.records, key=lambda r: (r.nodeid, r.profile))],
        }


@contextlib.contextmanager
def _ctrl_c_held() -> Iterator[None]:
    """Ctrl-C (SIGINT) held back until the block ends, then delivered as it would have been.

    A KeyboardInterrupt can land on any bytecode: inside `mkstemp` after it created the file, or in
    the handler that removes it, and then the temporary file is left behind. Python runs signal
    handlers in the main thread only, so only there can the handler be swapped; elsewhere (no
    KeyboardInterrupt is raised there) the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is None:
        yield  # None: a handler Python did not install, which it could not put back
        return
    caught: list[Any] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught and callable(previous):
            previous(signal.SIGINT, caught[0])
        elif caught and previous == signal.SIG_DFL:
            os.kill(os.getpid(), signal.SIGINT)


def write_atomic(path: str | Path, text: str) -> None:
    """Write via a temporary file in the same directory and rename: readers see old or new, never half.

    Ctrl-C during the write takes effect once it is done (`_ctrl_c_held`), so it never leaves the
    temporary file behind; an error inside it removes the temporary file and leaves the old one."""
    with _ctrl_c_held():
        _write_atomic(Path(path), text)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600; a baseline or report is shared, so honour the umask
        # like a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_run(path: str | Path, run: Run) -> None:
    path = Path(path)
    if not path.parent.is_dir():
        raise RunFileError(f"{path}: directory {path.parent} does not exist")
    write_atomic(path, json.dumps(run.to_dict(), indent=1, sort_keys=True) + "\n")


def read_run(path: str | Path) -> Run:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RunFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunFileError(f"{path}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise RunFileError(f'{path}: not a pytest-efficientllm run file (no "format": "{FORMAT}")')
    schema = data.get("schema")
    if not isinstance(schema, int) or schema > SCHEMA_VERSION:
        raise RunFileError(
            f"{path}: schema {schema!r} is not one this version reads (<= {SCHEMA_VERSION}); upgrade the plugin"
        )
    try:
        records = [Record.from_dict(r) for r in data.get("records", [])]
    except SchemaError as exc:
        raise RunFileError(f"{path}: {exc}") from None
    return Run(records=records, runs=list(data.get("runs", [])))

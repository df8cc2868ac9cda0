"""Text fitted to the terminal summary's width: a 100-column CI log.

Test ids cut to a column (`short_ids`), lines wrapped with an indent (`wrap`), paths shown
relative to the working directory. Plain strings; no pytest.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

WIDTH = 100


def _cut(text: str, width: int) -> str:
    """Cut in the middle: the function's start and the end of the parameters stay."""
    if len(text) <= width:
        return text
    head = max(4, width * 2 // 3)
    return text[:head] + "…" + text[-(width - head - 1) :]


def short_ids(nodeids: list[str], width: int) -> dict[str, str]:
    """Each test's id within `width`, named alike for all the tests of a file: with the file name
    (no folders) where every one of them fits so, else with the short file name (`attention::`, no
    `test_` or `.py`) and the rest cut in the middle where even that is too long. One row had read
    `test_moe.py::test_decode[dense]`, the next `moe::test_train_step[dense]`, and a long one had
    lost its file. Files of one name in different folders keep as many folders as tell them apart
    (`a/test_x.py`, `b/test_x.py`): the bare name had read the same for both."""
    by_file: dict[str, list[str]] = {}
    for nodeid in nodeids:
        by_file.setdefault(nodeid.partition("::")[0], []).append(nodeid)
    files = _distinct_names(list(by_file))
    out = {}
    for path, group in by_file.items():
        file = files[path]
        folders, _, base = file.rpartition("/")
        stem = (folders + "/" if folders else "") + (base.removesuffix(".py").removeprefix("test_") or base)
        rests = {n: n.partition("::")[2] for n in group}
        if all(len(f"{file}::{rest}") <= width for rest in rests.values()):
            out.update({n: f"{file}::{rest}" for n, rest in rests.items()})
            continue
        # The file's short name stays while the rest keeps room to be read.
        prefix = f"{stem}::" if width - len(stem) - 2 >= 16 else ""
        out.update({n: prefix + _cut(rest, width - len(prefix)) for n, rest in rests.items()})
    return out


def _distinct_names(paths: list[str]) -> dict[str, str]:
    """Each path by its fewest trailing parts that no other path ends with."""
    parts = {p: p.split("/") for p in paths}
    out = {}
    for path, mine in parts.items():
        n = 1
        while n < len(mine) and any(o != path and theirs[-n:] == mine[-n:] for o, theirs in parts.items()):
            n += 1
        out[path] = "/".join(mine[-n:])
    return out


def shown_path(path: Path) -> str:
    """Relative to the working directory when below it: shorter in a CI log."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def wrap(text: str, indent: str, width: int) -> list[str]:
    return textwrap.wrap(
        text, width=width, initial_indent=indent, subsequent_indent=indent + "  ", break_on_hyphens=False
    ) or [indent]


def count_tests(n: int) -> str:
    return f"{n} test{'s' if n != 1 else ''}"

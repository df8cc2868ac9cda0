"""Which technique is being measured, and how far along the suite is: one line per started test.

Pure bookkeeping (no terminal here): `hooks` feeds node ids in and writes the lines through
pytest's terminal reporter on the process that owns the terminal (the xdist controller,
or the only process), so workers never write and pytest's own output stays intact.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pytest_efficientllm.report.axes import OTHER, axis_of, function_of, technique_of

MODES: tuple[str, ...] = ("auto", "on", "off")


def shown(nodeid: str, mode: str) -> bool:
    """`auto`: the suites' tests (a known axis); `on`: every test; `off`: none.

    `hooks` turns `auto` into `off` where pytest does not write to a terminal (a CI log)."""
    if mode == "on":
        return True
    if mode == "auto":
        return axis_of(nodeid) != OTHER
    return False


@dataclass
class Progress:
    mode: str = "auto"
    total: int = 0
    started: int = 0
    seen: set[str] = field(default_factory=set)

    def collected(self, nodeids: Iterable[str]) -> None:
        """The run's tests (called once per collection; under xdist once per worker, same ids)."""
        self.total = max(self.total, sum(1 for n in set(nodeids) if shown(n, self.mode)))

    def start(self, nodeid: str) -> str | None:
        """The line to show when `nodeid` starts, or None when it is not shown (or started already)."""
        if not shown(nodeid, self.mode) or nodeid in self.seen:
            return None
        self.seen.add(nodeid)
        self.started += 1
        of = f"/{self.total}" if self.total >= self.started else ""
        return (
            f"efficiency [{self.started}{of}] measuring {axis_of(nodeid)} - "
            f"{function_of(nodeid)} - {technique_of(nodeid)}"
        )

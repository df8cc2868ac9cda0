"""The order of fresh processes: ABBA pairs, so a drift of the machine falls on both sides alike.

Pair k runs BASE then HEAD when k is even, HEAD then BASE when odd: A B | B A | A B | B A ...
Within a pair the two processes are adjacent in time, so a slow spell that covers both
cancels in their ratio; across two pairs, a drift that is linear in time adds the same to
each side, and so does any effect of running first or second (warm page cache, CPU clock
ramping up). A random order would balance these only on average; ABBA balances them
by construction, and a fixed order is reproducible. Plain data; no processes.
"""

from __future__ import annotations

from dataclasses import dataclass

BASE, HEAD = "base", "head"


@dataclass(frozen=True)
class Slot:
    """One fresh process: its pair, its side, and its place in the run."""

    pair: int
    side: str
    index: int


def abba(pairs: int) -> list[Slot]:
    """The processes of `pairs` pairs in the order they run."""
    if pairs < 1:
        raise ValueError(f"pairs={pairs}: expected 1 or more")
    out: list[Slot] = []
    for k in range(pairs):
        order = (BASE, HEAD) if k % 2 == 0 else (HEAD, BASE)
        for side in order:
            out.append(Slot(k, side, len(out)))
    return out

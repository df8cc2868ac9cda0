"""Tests held for confirmation, each fresh process started a spacing after the test's last one.

A slow spell on a shared machine lasts seconds to tens of seconds, so a fresh process
started right after the suspect one often measures the same spell (`confirm`). The queue
keeps each held test's `Vote` with the time its next fresh process may start (its last
measurement's end plus `spacing_s`): `run_due` starts those whose time has come, called
between tests, so the run goes on while the spacing passes; `drain` starts the rest at
the end of the run, sleeping out what is left of their spacing. Whatever the caller must
keep until a vote is decided (pytest's reports) rides along as `payload`.

Plain scheduling over callables and a clock; no pytest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pytest_efficientllm.confirmation.vote import Vote
from pytest_efficientllm.core.record import Record
from pytest_efficientllm.judging.verdicts import Verdict


@dataclass
class Held:
    """One test awaiting its fresh processes."""

    vote: Vote
    measure_again: Callable[[], Record | str]
    judge_record: Callable[[Record], list[Verdict]]
    payload: Any
    next_at: float  # the clock's time at which its next fresh process may start


class ConfirmQueue:
    def __init__(
        self, spacing_s: float, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.spacing_s = spacing_s
        self._clock = clock
        self._sleep = sleep
        self._held: list[Held] = []

    def __len__(self) -> int:
        return len(self._held)

    def hold(
        self,
        vote: Vote,
        measure_again: Callable[[], Record | str],
        judge_record: Callable[[Record], list[Verdict]],
        payload: Any,
    ) -> Held:
        """Hold a test measured just now; its first fresh process may start `spacing_s` from now."""
        held = Held(vote, measure_again, judge_record, payload, self._clock() + self.spacing_s)
        self._held.append(held)
        return held

    def run_due(self) -> list[Held]:
        """Start every fresh process whose time has come, earliest first; the tests now decided."""
        decided: list[Held] = []
        while self._held:
            now = self._clock()
            due = [h for h in self._held if h.next_at <= now]
            if not due:
                break
            decided += self._step(min(due, key=lambda h: h.next_at))
        return decided

    def drain(self) -> Iterator[Held]:
        """Decide every held test, waiting where a spacing has not passed yet; each as it is decided."""
        while self._held:
            held = min(self._held, key=lambda h: h.next_at)
            wait = held.next_at - self._clock()
            if wait > 0:
                self._sleep(wait)
            yield from self._step(held)

    def abandon(self, why: str) -> list[Held]:
        """Give up on every held test (the run was interrupted): each keeps this process's verdicts."""
        out, self._held = self._held, []
        for held in out:
            held.vote.problem = why
            held.vote.stopped = True
        return out

    def _step(self, held: Held) -> list[Held]:
        start = self._clock()
        held.vote.add(held.measure_again(), held.judge_record)
        end = self._clock()
        held.vote.seconds += end - start
        held.next_at = end + self.spacing_s
        if not held.vote.done:
            return []
        self._held.remove(held)
        return [held]

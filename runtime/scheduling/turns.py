"""Requests that each run alone (V2 inference: no micro-batching) taking turns on the event
loop (``Turns``): at most as many hold a worker thread as the endpoint may run at once, the
rest wait in line on the loop, bounded, and leave it when their deadline passes, never run.

A request that waited for its run in a worker thread held one of the loop's default executor
threads (min(32, CPUs + 4)) while it waited: sixty V2 requests queued for a slow model held
them all, and every other endpoint's requests, which need those threads too, waited behind
them (seconds for a one-row predict)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from runtime.errors import DeadlineExceeded, Overloaded, Shed
from runtime.scheduling.deadlines import Deadline

T = TypeVar("T")


class Turns:
    """One model's line. ``concurrency``: requests that may hold their turn at once (the
    endpoint's ``max_concurrent_batches``). ``max_waiting``: requests that may wait for one;
    more are refused ``Overloaded`` (503, Retry-After). ``target_s``: with a latency target,
    a request that the ones ahead of it would keep past its deadline is refused ``Shed`` at
    once, and one whose turn comes too late for a run to end by its deadline is answered
    ``DeadlineExceeded`` then, not run: a run whose answer would be thrown away is taken
    from those that would not. An idle line always runs what comes, and so learns anew how
    long a run takes."""

    __slots__ = ("_active", "_concurrency", "_line", "_max_waiting", "_run_s", "_target_s")

    def __init__(
        self, concurrency: int, max_waiting: int | None, target_s: float | None = None
    ) -> None:
        self._concurrency = concurrency
        self._max_waiting = max_waiting
        self._target_s = target_s
        self._active = 0
        self._line: collections.deque[asyncio.Future[None]] = collections.deque()
        self._run_s: float | None = None  # a moving average of a turn's length

    @property
    def waiting(self) -> int:
        return len(self._line)

    async def take(self, work: Callable[[], Awaitable[T]], deadline: Deadline | None) -> T:
        """``await work()`` in a turn: at once when one is free and nobody waits, else after
        the requests ahead of it. The caller's cutoff (``within``) cancels the wait."""
        if self._active >= self._concurrency or self._line:
            self._refuse_if_late(deadline)
            turn = asyncio.get_running_loop().create_future()
            self._line.append(turn)
            try:
                await turn  # handed over by the turn before: counted active already
            except BaseException:
                if turn.done() and not turn.cancelled():
                    self._hand_on()  # handed this turn as it was cancelled: the next takes it
                else:
                    with contextlib.suppress(ValueError):  # or dropped by a hand-over
                        self._line.remove(turn)
                raise
            ends = time.monotonic() + (self._run_s or 0.0)
            if deadline is not None and self._run_s is not None and ends > deadline.at:
                self._hand_on()  # its run would end past the deadline: never started
                raise DeadlineExceeded(deadline.budget_ms)
        else:
            self._active += 1
        started = time.monotonic()
        try:
            result = await work()
        except BaseException:
            self._hand_on()
            raise
        took = time.monotonic() - started
        self._run_s = took if self._run_s is None else 0.8 * self._run_s + 0.2 * took
        self._hand_on()
        return result

    def _refuse_if_late(self, deadline: Deadline | None) -> None:
        if self._max_waiting is not None and len(self._line) >= self._max_waiting:
            raise Overloaded(len(self._line))
        if self._target_s is None or deadline is None or self._run_s is None:
            return
        # The turns ahead (half of those running, on average, and every waiting one), then
        # its own, spread over the turns that run at once.
        ahead = 0.5 * self._active + len(self._line)
        expected = (ahead / self._concurrency + 1) * self._run_s
        left = deadline.at - time.monotonic()
        if expected > left:
            raise Shed(expected * 1000, left * 1000, self._target_s * 1000)

    def _hand_on(self) -> None:
        """The turn ends: given to the first request still waiting, else freed."""
        while self._line:
            turn = self._line.popleft()
            if not turn.done():
                turn.set_result(None)  # stays active: the turn passes on
                return
        self._active -= 1

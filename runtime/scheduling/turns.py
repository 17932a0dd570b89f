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
from typing import Any, TypeVar

from runtime.errors import DeadlineExceeded, Overloaded, Shed
from runtime.scheduling.deadlines import Deadline
from runtime.scheduling.placement import _left_running

T = TypeVar("T")


class Turns:
    """One model's line. ``concurrency``: requests that may hold their turn at once (the
    endpoint's ``max_concurrent_batches``). ``max_waiting``: requests that may wait for one;
    more are refused ``Overloaded`` (503, Retry-After). ``target_s``: with a latency target,
    a request that the ones ahead of it would keep past its deadline is refused ``Shed`` at
    once, and one whose turn comes too late for a run to end by its deadline is answered
    ``DeadlineExceeded`` then, not run: a run whose answer would be thrown away is taken
    from those that would not. How long a run takes is told by the run itself (``ran``,
    timed where it runs: no load, no wait for a slot or for the loop), as the batcher's are.
    A turn whose caller gave up (its deadline) ends when its worker thread does, not before:
    threads cannot be stopped, and the next turn would run beside it."""

    __slots__ = (
        "_active", "_concurrency", "_last_s", "_line", "_loop", "_max_waiting", "_run_s",
        "_target_s",
    )  # fmt: skip

    def __init__(
        self, concurrency: int, max_waiting: int | None, target_s: float | None = None
    ) -> None:
        self._concurrency = concurrency
        self._max_waiting = max_waiting
        self._target_s = target_s
        self._active = 0
        self._line: collections.deque[asyncio.Future[None]] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._run_s: float | None = None  # a moving average of a run's length
        self._last_s = 0.0

    @property
    def waiting(self) -> int:
        return len(self._line)

    @property
    def last_run_s(self) -> float:
        """How long the last run took (0 before any): a 504 says when it is longer than the
        request's whole deadline, which no retry then meets."""
        return self._last_s

    def ran(self, seconds: float) -> None:
        """A run took ``seconds`` (told by the run, on its thread)."""
        self._last_s = seconds
        known = self._run_s
        self._run_s = seconds if known is None else 0.8 * known + 0.2 * seconds

    async def take(self, work: Callable[[], Awaitable[T]], deadline: Deadline | None) -> T:
        """``await work()`` in a turn: at once when one is free and nobody waits, else after
        the requests ahead of it. The caller's cutoff (``within``) cancels the wait."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (a test's, a restarted worker's)
            self._loop, self._active, self._line = loop, 0, collections.deque()
        if self._active >= self._concurrency or self._line:
            self._refuse_if_late(deadline)
            turn = loop.create_future()
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
            if deadline is not None and self._too_late(deadline):
                self._hand_on()  # its run would end past the deadline: never started
                raise DeadlineExceeded(deadline.budget_ms)
        else:
            self._active += 1
        left: list[asyncio.Future[Any]] = []
        token = _left_running.set(left)  # the thread ``work`` may leave running
        try:
            result = await work()
        except BaseException:
            running = [f for f in left if not f.done()]
            if running:  # the turn is the thread's until it ends
                running[0].add_done_callback(lambda _: self._hand_on(loop))
            else:
                self._hand_on()
            raise
        finally:
            _left_running.reset(token)
        self._hand_on()
        return result

    def _too_late(self, deadline: Deadline) -> bool:
        """With a target: a run starting now would end past ``deadline``."""
        if self._target_s is None or self._run_s is None:
            return False
        return time.monotonic() + self._run_s > deadline.at

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

    def _hand_on(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """The turn ends: given to the first request still waiting, else freed. ``loop``:
        the loop the turn was taken on, when it ends from a thread's callback (on that loop,
        unless it has been left for another: its line is gone then)."""
        if loop is not None and loop is not self._loop:
            return
        while self._line:
            turn = self._line.popleft()
            if not turn.done():
                turn.set_result(None)  # stays active: the turn passes on
                return
        self._active -= 1

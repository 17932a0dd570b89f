"""Where blocking work runs: on the event loop when work of its size has proved shorter than a
trip to a worker thread and back, in a worker thread otherwise (``Placement.run``, the one place
that chooses, for the predict and the Open Inference Protocol services alike)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from runtime import telemetry

T = TypeVar("T")
M = TypeVar("M")  # what work holds while it runs: a loaded model
M_co = TypeVar("M_co", covariant=True)
P = ParamSpec("P")

# A trip to a worker thread and back costs ~40 µs on the 2-core reference machine
# (bench/RESULTS.md); work shorter than a few of those is cheaper done in place, and blocks the
# loop no longer than parsing a small request body does.
INLINE_BELOW_S = 200e-6


class Holder(Protocol[M_co]):
    """What work holds while it runs (a loaded model, a run slot), held two ways."""

    def held_now(self) -> AbstractContextManager[M_co] | None:
        """Held without waiting for anything (a load, a run slot), or None: on the loop."""

    def held(self) -> AbstractContextManager[M_co]:
        """Held, waiting (and loading) as need be: on a worker thread."""


class Placement:
    """Learns how long one kind of work (a model's runs, say) takes, per size class (sizes
    in powers of two: 1, 2-3, 4-7, ...), as a moving average of the runs that succeeded. Work
    of a size class measured below ``inline_below_s`` may run in place; the rest, and any size
    not measured yet, runs in a worker thread."""

    def __init__(self, inline_below_s: float | None = None) -> None:
        self._limit = INLINE_BELOW_S if inline_below_s is None else inline_below_s
        self._seconds: dict[int, float] = {}

    async def run(
        self,
        size: int,
        holder: Holder[M],
        work: Callable[Concatenate[M, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """``await work(held, *args, **kwargs)`` on the loop when work of ``size`` has proved
        short and ``holder.held_now()`` holds what it needs without waiting; else in a worker
        thread with ``holder.held()`` (``here``). ``work`` is a coroutine function that never
        waits (on a thread it runs with no loop: ``finished``). Only the work is timed, never
        the holding (a load)."""
        if self.fast(size):
            now = holder.held_now()
            if now is not None:
                # On the loop's thread: the worker attributes log lines there by the task.
                with now as held:
                    started = time.perf_counter()
                    result = await work(held, *args, **kwargs)
                    self._learn(size, started)
                    return result
        return await asyncio.to_thread(lambda: self.here(size, holder, work, *args, **kwargs))

    def here(
        self,
        size: int,
        holder: Holder[M],
        work: Callable[Concatenate[M, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """``work`` on this thread, which runs no event loop (a worker thread, a Spark task),
        with ``holder.held()`` and the current invocation's id on the thread (its log lines are
        attributed to it on Azure); timed."""
        with telemetry.InvocationOnThread(), holder.held() as held:
            started = time.perf_counter()
            result = finished(work(held, *args, **kwargs))
            self._learn(size, started)
            return result

    def fast(self, size: int) -> bool:
        """Work of ``size`` has proved shorter than the limit."""
        seconds = self._seconds.get(max(size, 1).bit_length())
        return seconds is not None and seconds < self._limit

    def _learn(self, size: int, started: float) -> None:
        """Learn from the duration of work that succeeded (not from a failure: a quick error
        says nothing about how long the work takes)."""
        # A run stalled by something else (a collection, a descheduled process) counts as
        # twice the limit at most: one stall must not send a model's next runs to threads,
        # which slow them and are timed there, keeping the average up; runs that are slow
        # again and again still cross the limit in a few.
        took = min(time.perf_counter() - started, 2 * self._limit)
        key = max(size, 1).bit_length()
        average = self._seconds.get(key)
        self._seconds[key] = took if average is None else 0.8 * average + 0.2 * took


def finished(coroutine: Awaitable[T]) -> T:
    """The result of a coroutine that never waits (every ``await`` in it is of one that answers
    at once), run to its end on this thread, with no event loop: so logic written once, async,
    serves a sync caller too (a sync predict's chunk loop, the rows service's halving)."""
    step: Any = coroutine.__await__()
    try:
        waited = step.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    step.close()
    raise RuntimeError(f"{coroutine!r} waited for {waited!r}: it needs an event loop")

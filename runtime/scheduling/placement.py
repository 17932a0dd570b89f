"""Where a run goes: on the event loop when work of its size has proved shorter than a trip to
a worker thread and back, in a worker thread otherwise (``Placement``, for the predict and the
Open Inference Protocol services alike); threads that outlive a cancelled wait (``in_thread``);
async logic run to its end on a thread with no loop (``finished``)."""

from __future__ import annotations

import asyncio
import contextvars
import math
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from runtime import telemetry

T = TypeVar("T")
M = TypeVar("M")  # what work holds while it runs: a loaded model
M_co = TypeVar("M_co", covariant=True)
P = ParamSpec("P")


class NotNow:
    """What ``Placement.now`` and a batcher's ``run_now`` answer for work they cannot run at
    once (a class of its own: a result may be None)."""

    __slots__ = ()


NOT_NOW = NotNow()


# The worker threads a task's work was still running in when the task was cancelled (threads
# cannot be stopped), noted by in_thread for the batcher, whose run slot stays taken until they
# end: else the next request would run beside them.
_left_running: contextvars.ContextVar[list[asyncio.Future[Any]] | None] = contextvars.ContextVar(
    "mlfn_left_running", default=None
)


async def in_thread(fn: Callable[[], T]) -> T:
    """``fn()`` in a worker thread, with this task's context (as ``asyncio.to_thread``);
    cancelled meanwhile, the thread's future is noted in ``_left_running`` (a cancelled wait is
    done at once, long before the thread). How long the loop took to resume this task once
    the thread was done is learnt (``loop_lag``)."""
    loop = asyncio.get_running_loop()
    ended = 0.0

    def timed() -> T:
        nonlocal ended
        try:
            return fn()
        finally:
            ended = time.monotonic()

    running = loop.run_in_executor(None, contextvars.copy_context().run, timed)
    try:
        result = await asyncio.shield(running)
    except asyncio.CancelledError:
        left = _left_running.get()
        if left is not None:
            left.append(running)
        # Its outcome is no one's now (a request answered 504 meanwhile, whose run then met
        # the passed deadline): taken, so that asyncio does not log it as never retrieved.
        running.add_done_callback(_outcome_taken)
        raise
    _lag.learn(time.monotonic() - ended)
    return result


def _outcome_taken(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class _Lag:
    """How long the event loop takes to resume a task whose thread's work is done: a moving
    average, which fades (halved every ``half_life_s``) while nothing is learnt, as when a
    busy endpoint sheds every request and runs none."""

    __slots__ = ("_at", "_seconds", "half_life_s")

    def __init__(self, half_life_s: float) -> None:
        self.half_life_s = half_life_s
        self._seconds = 0.0
        self._at = 0.0

    def learn(self, seconds: float) -> None:
        now = time.monotonic()
        # One stall (a collection, a descheduled process) moves the average by a fifth of
        # MAX_LAG_SAMPLE_S at most: it fades in a few half-lives, not after a long shedding.
        seconds = min(seconds, MAX_LAG_SAMPLE_S)
        self._seconds = 0.8 * self.now(now) + 0.2 * seconds
        self._at = now

    def now(self, at: float | None = None) -> float:
        at = time.monotonic() if at is None else at
        if not self._seconds:
            return 0.0
        return self._seconds * math.exp2((self._at - at) / self.half_life_s)


MAX_LAG_SAMPLE_S = 0.1
_lag = _Lag(half_life_s=0.5)


def loop_lag() -> float:
    """Seconds the event loop lately took to resume a task once its worker thread's work was
    done, whoever's: near nothing while the loop keeps up, the length of its backlog under
    overload, which a request waiting for a run waits for too once the run is done."""
    return _lag.now()


# --- placement: on the loop or in a worker thread ---------------------------------------------


# A trip to a worker thread and back costs ~40 µs on the 2-core reference machine
# (bench/RESULTS.md); work shorter than a few of those is cheaper done in place, and blocks the
# loop no longer than parsing a small request body does.
INLINE_BELOW_S = 200e-6
# Work of a size class is sent to threads once this share of its recent runs were slow.
SLOW_SHARE = 0.2


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
        # Per size class: the moving average of a run's seconds, and of the share of slow runs.
        self._seconds: dict[int, tuple[float, float]] = {}

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
        done = self.now(size, holder, work, *args, **kwargs)
        if not isinstance(done, NotNow):
            return done
        return await in_thread(lambda: self.here(size, holder, work, *args, **kwargs))

    def now(
        self,
        size: int,
        holder: Holder[M],
        work: Callable[Concatenate[M, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T | NotNow:
        """``work``'s result, run here and now when work of ``size`` has proved short and
        ``holder.held_now()`` holds what it needs without waiting; ``NOT_NOW`` otherwise. On
        the loop's thread, the worker attributes log lines by the task."""
        if not self.fast(size):
            return NOT_NOW
        now = holder.held_now()
        if now is None:
            return NOT_NOW
        with now as held:
            started = time.perf_counter()
            result = finished(work(held, *args, **kwargs))
            self._learn(size, started)
            return result

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
        """Work of ``size`` has proved shorter than the limit, and seldom longer."""
        learnt = self._seconds.get(max(size, 1).bit_length())
        return learnt is not None and learnt[0] < self._limit and learnt[1] < SLOW_SHARE

    def _learn(self, size: int, started: float) -> None:
        """Learn from the duration of work that succeeded (not from a failure: a quick error
        says nothing about how long the work takes)."""
        # A run stalled by something else (a collection, a descheduled process) counts as
        # twice the limit at most: one stall must not send a model's next runs to threads,
        # which slow them and are timed there, keeping the average up; runs that are slow
        # again and again still cross the limit in a few.
        # Work slow often, not once (by its inputs: a long text, say) is told by the share of
        # slow runs, which a stall moves little, and a run of stalls enough.
        took = time.perf_counter() - started
        slow = 1.0 if took >= self._limit else 0.0
        took = min(took, 2 * self._limit)
        key = max(size, 1).bit_length()
        learnt = self._seconds.get(key)
        if learnt is None:
            self._seconds[key] = (took, slow)
        else:
            self._seconds[key] = (0.8 * learnt[0] + 0.2 * took, 0.9 * learnt[1] + 0.1 * slow)


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

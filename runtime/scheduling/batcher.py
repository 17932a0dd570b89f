"""Micro-batching (``Batcher``): concurrent requests for one endpoint merged into few model
calls, interactive requests ahead of bulk work, deadlines kept and, with a latency target,
waiting and shedding by what the endpoint's runs are known to take."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from runtime import telemetry
from runtime.errors import DeadlineExceeded, Overloaded, RunAbandoned, Shed
from runtime.scheduling.deadlines import Deadline, _deadline, within
from runtime.scheduling.placement import NotNow, _left_running, in_thread, loop_lag
from runtime.scheduling.run_times import Busy, RunTimes, bulk_rest
from runtime.telemetry import Invocation

log = logging.getLogger("mlfn.batching")

# An idle endpoint's request skips the turn of the loop that lets company join it, unless the
# last request found company, or this many have gone by since one looked.
LOOK_EVERY = 16
# Bulk work (queue messages, batch-file rows) waits while interactive requests do, but after
# this many runs taken ahead of it, its oldest request goes first: slowed, never starved.
BULK_AFTER = 4

I = TypeVar("I")  # noqa: E741 - one instance
O = TypeVar("O")  # noqa: E741 - what a run returns for the instances it was given


@dataclass
class _Request(Generic[I, O]):
    instances: list[I]
    future: asyncio.Future[O]
    invocation: Invocation | None = None  # whose the run is, for log lines and traces
    queued_at: float = 0.0  # with telemetry on: when it started waiting
    merge: bool = True  # False: it shares no run, its caller isolates its failures
    arrived: float = 0.0  # time.monotonic(), with a latency target: its answer's budget starts
    deadline: Deadline | None = None  # with a latency target: its caller's, if any


@dataclass
class BatchStats:
    """How many requests the batcher has taken (for tests; telemetry will add more)."""

    requests: int = 0


# An idle endpoint with a latency target that has run nothing this long runs the next request
# its estimate would shed: only runs refresh the estimate, so one learnt in a stall would
# otherwise shed every request for good.
PROBE_AFTER_S = 0.1


class _Line(collections.deque[_Request[I, O]]):
    """Waiting requests, oldest first, and how many instances they hold: a latency target
    asks that of every request it may shed, and under overload the line is long. Only
    ``append`` and ``popleft`` change a line; anything else makes a new one."""

    def __init__(self, requests: Iterable[_Request[I, O]] = ()) -> None:
        super().__init__(requests)
        self.instances = sum(len(r.instances) for r in self)

    def append(self, request: _Request[I, O]) -> None:
        super().append(request)
        self.instances += len(request.instances)

    def popleft(self) -> _Request[I, O]:
        request = super().popleft()
        self.instances -= len(request.instances)
        return request


class Batcher(Generic[I, O]):
    """Runs ``run(instances)`` for the instances of as many waiting requests as fit in
    ``max_batch_size`` (a sync ``run`` in a worker thread, an async one as it is), then hands
    each request its share via ``split(result, start, count)``.

    There is no standing batching task: when a request finds a run slot free, a task starts
    that runs batches while requests wait, and ends when none does. Up to ``max_concurrency``
    such tasks run at once. An idle
    endpoint runs a request at once; ``max_wait_s`` is spent gathering company only when other
    requests are in flight (under load, where a fuller batch pays). At most ``max_pending``
    requests wait; more are refused with ``Overloaded`` (503 + Retry-After) rather than let
    latency grow without limit.

    A request larger than ``max_batch_size`` runs alone (``run`` chunks it). If a merged run
    fails, each of its requests is run again on its own, so one bad request cannot fail its
    neighbours; unless ``shared_failure(exc)`` says the failure is not any one request's (the
    model could not be loaded), and then they all get that answer at once. A request whose
    caller isolates its own failures (the rows service halves its rows) is submitted with
    ``merge`` False: it waits in line with the others but shares no run, so its failure is its
    own, answered at once, and no merged run fails for it: one isolation, never two stacked.

    ``run_now(instances)``, if given, runs them on the calling task without waiting for
    anything, or answers ``NOT_NOW`` when it cannot (the run would wait: for a slot, a load, a
    thread). An idle endpoint's request that would not look for company is run by it directly:
    no task, future or turn of the loop, and nothing can arrive while it runs (it never waits).
    """

    def __init__(
        self,
        run: Callable[[list[I]], O] | Callable[[list[I]], Awaitable[O]],
        split: Callable[[O, int, int], O],
        max_batch_size: int,
        max_wait_s: float = 0.0,
        max_concurrency: int = 1,
        max_pending: int | None = None,
        shared_failure: Callable[[BaseException], bool] = lambda exc: False,
        name: str = "",
        run_now: Callable[[list[I]], O | NotNow] | None = None,
        latency_target_s: float | None = None,
        join: Callable[[list[O]], O] | None = None,
        timed_by_caller: bool = False,
        busy: Busy | None = None,
    ) -> None:
        self.name = name  # the endpoint's, in telemetry
        self._target = latency_target_s
        self._gap: float | None = None  # with a target: seconds between requests, averaged
        self._last_run_s = 0.0
        self._probed_at = 0.0  # when a run last ended, or a shed-bound request was run anyway
        # The caller times its runs itself (``ran``), where they run: timed here, a run would
        # also count the wait for a busy loop to resume it, which shedding must not mistake
        # for the model's time.
        self._timed_by_caller = timed_by_caller
        self._last_arrival = 0.0
        self._join = join  # bulk requests larger than a batch: their pieces' results joined
        self.run_times = RunTimes()  # learnt with a latency target: waiting, shedding
        self.interactive_at = 0.0  # when the last interactive request came (bulk rests)
        # How busy interactive requests keep the endpoint (their callers count it): bulk
        # work rests longer the busier they are.
        self.busy = busy or Busy()
        self._run = run
        self._run_now = run_now
        self._run_is_async = inspect.iscoroutinefunction(run)
        self._split = split
        self._max = max_batch_size
        self._wait = max_wait_s
        self._concurrency = max_concurrency
        self._max_pending = max_pending
        self._shared_failure = shared_failure
        self.stats = BatchStats()
        # Bound to the running loop on first use: futures belong to one loop, and the
        # Functions worker's loop (or a test's) does not exist at import time.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: _Line[I, O] = _Line()
        self._bulk: _Line[I, O] = _Line()  # behind _pending
        self._bulk_passed = 0  # runs taken while bulk work waited
        self._arrived: asyncio.Event | None = None
        self._running = 0
        self._alone = 0  # idle requests in a row that found no company

    async def submit(
        self,
        instances: list[I],
        *,
        bounded: bool = True,
        merge: bool = True,
        deadline: Deadline | None = None,
        bulk: bool = False,
    ) -> O:
        """Score ``instances`` with whatever else is waiting. ``bounded`` False: never refused
        as overloaded (a caller whose own concurrency is bounded, like a queue listener).
        ``merge`` False: in a run of their own, and a failure is raised as it is, never run
        again (for a caller that isolates failures itself, by halving). ``deadline``: at it
        the caller gets ``DeadlineExceeded``, and the request, if it has not started, never
        does. ``bulk``: work that waits while interactive requests do (queue messages, batch
        files); bulk work not to ``merge`` (a file's rows) runs in pieces of a batch, so that
        no request waits long behind it."""
        if not bulk:
            self.interactive_at = time.monotonic()
        if deadline is not None:
            return await self._by(deadline, instances, bounded, merge, bulk)
        if bulk and not merge and len(instances) > self._max and self._join is not None:
            return await self._in_pieces(instances, bounded, merge)
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (a test's, a restarted worker's)
            self._loop, self._pending, self._running = loop, _Line(), 0
            self._bulk = _Line()
            self._arrived = asyncio.Event()
        if (
            self._run_now is not None
            and not self._pending
            and not self._bulk
            and not self._running
            and (not merge or self._alone % LOOK_EVERY)  # not one to look for company
            and not telemetry.current().on  # traced runs get the batch's span: the long way
        ):
            try:
                result = self._run_now(instances)
            except BaseException:
                self._ran_now(merge)
                raise
            if not isinstance(result, NotNow):
                self._ran_now(merge)
                return result
        if bounded and self._max_pending is not None and len(self._pending) >= self._max_pending:
            self._drop_answered()  # callers that gave up no longer count
            if len(self._pending) >= self._max_pending:
                raise Overloaded(len(self._pending))
        request: _Request[I, O] = _Request(
            instances, loop.create_future(), telemetry.current_invocation(), merge=merge
        )
        if telemetry.current().on:
            request.queued_at = time.perf_counter()
        if self._target is not None:
            request.arrived = now = time.monotonic()
            request.deadline = _deadline.get()  # the caller's: ``within`` around this call
            if not bulk:
                # The first request, or one after a quiet spell, says little of the rate.
                gap = min(now - self._last_arrival, self._target)
                if self._last_arrival:
                    self._gap = gap if self._gap is None else 0.9 * self._gap + 0.1 * gap
                self._last_arrival = now
        queue = self._bulk if bulk else self._pending
        queue.append(request)
        assert self._arrived is not None
        self._arrived.set()
        self.stats.requests += 1
        if (
            len(queue) == 1
            and not (self._pending if bulk else self._bulk)
            and self._running < self._concurrency
        ):
            return await self._lead_own(loop, request, queue)
        self._alone = 0  # company: the next idle request looks for more
        self._start_leader(loop)
        # A caller that is cancelled here cancels only its own future: the batch its request
        # is in runs in the leader's task, for the other requests in it.
        return await request.future

    async def _by(
        self, deadline: Deadline, instances: list[I], bounded: bool, merge: bool, bulk: bool
    ) -> O:
        """``submit`` answered by ``deadline`` (``within``), or refused at once when a latency
        target says it cannot make it."""
        if bounded:
            self.shed_if_late(len(instances), deadline)
        work = self.submit(instances, bounded=bounded, merge=merge, bulk=bulk)
        return await within(deadline, work)  # nothing more under the caller's own cutoff

    @property
    def last_run_s(self) -> float:
        """How long the last run took, of whatever size (0 before any)."""
        return self._last_run_s

    def ran(self, n: int, seconds: float) -> None:
        """A run of ``n`` instances took ``seconds`` (told by a caller that times its own)."""
        self._last_run_s = seconds
        self._probed_at = time.monotonic()
        if self._target is not None:
            self.run_times.learn(n, seconds)

    def shed_if_late(self, n: int, deadline: Deadline) -> None:
        """Raise ``Shed`` when, with a latency target, a request of ``n`` instances arriving
        now would be answered after ``deadline`` (before its body is read too, with ``n`` 1:
        under overload, reading what will be refused is work taken from what will not). The
        answer is expected after the runs ahead of it and its own and, unless the endpoint is
        idle (its run starts at once, on this task), a wait for the event loop to resume the
        request after its run as long as such waits lately were (``loop_lag``): under overload,
        what the run times alone do not see. One wait, not one per task the answer passes
        through: counting two shed half the requests a 20 ms target could serve at 32
        connections (bench/NOTES.md, "Latency")."""
        if self._target is None:
            return
        left = deadline.at - time.monotonic()
        runs = self._expected_s(n)
        if runs is None:
            return
        waits = bool(self._pending) or self._running >= self._concurrency  # else: runs now
        expected = runs + (loop_lag() if waits else 0.0)
        if left > 0 and expected > left:
            now = time.monotonic()
            if not waits and not self._running and now - self._probed_at > PROBE_AFTER_S:
                # Idle, and nothing run for a while: the estimate shed everything since, so
                # nothing refreshed it (run times learnt under a stall, a loaded machine).
                # Only runs teach it: this request is run, and the run times learnt anew.
                self._probed_at = now
                self.run_times.forget()
                return
            alone = not waits and not self._running
            raise Shed(expected * 1000, left * 1000, self._target * 1000, alone)

    def _expected_s(self, n: int) -> float | None:
        """How long until a request of ``n`` instances arriving now would be answered: what
        is left of the run in progress (half of the last run, on average), then the runs for
        the interactive requests ahead of it and its own, each of the size it will have (a
        full batch only for what fills one: the slope to sizes never run is a guess), spread
        over the endpoint's concurrent runs. None while the run times are not known yet."""
        times = self.run_times
        if times.expect(1) is None:
            return None
        ahead = n + self._pending.instances
        full, rest = divmod(ahead, self._max)
        last = (times.expect(rest) or 0.0) if rest else 0.0
        runs = full * (times.expect(self._max) or 0.0) + last
        in_flight = 0.5 * self._last_run_s if self._running >= self._concurrency else 0.0
        return in_flight + runs / self._concurrency

    async def _in_pieces(self, instances: list[I], bounded: bool, merge: bool) -> O:
        """Bulk work larger than a batch, a batch at a time, each in line behind the requests
        waiting then, and joined: an interactive request waits for one piece's run at most,
        not the whole. A piece that fails ends the work there."""
        assert self._join is not None
        size = self._max
        results = []
        for i in range(0, len(instances), size):
            piece = instances[i : i + size]
            results.append(await self.submit(piece, bounded=bounded, merge=merge, bulk=True))
            rest = bulk_rest(self._last_run_s, self.interactive_at, self.busy.share())
            if rest:
                await asyncio.sleep(rest)
        return self._join(results)

    def _ran_now(self, merge: bool) -> None:
        """Count a request ``run_now`` served, as the long way counts a lone one."""
        self.stats.requests += 1
        if merge:  # one not to merge never looks for company: it tells nothing of it
            self._alone += 1

    async def _lead_own(
        self,
        loop: asyncio.AbstractEventLoop,
        request: _Request[I, O],
        queue: _Line[I, O],
    ) -> O:
        """An idle endpoint's request runs in its own task, with no leader task to start and
        no future to wake it. It first gives requests that arrived with it one turn of the loop
        to join (then, with company, all go to a leader task as any other, so a caller cancelled
        meanwhile cancels only its own answer), unless the last requests found none: that turn
        costs as much as the rest of the batcher, so a client calling one request at a time
        pays it once in ``LOOK_EVERY``; any sign of company makes every request look again."""
        self._running += 1
        alone = False
        left: list[asyncio.Future[Any]] = []
        token = _left_running.set(left)
        try:
            if not request.merge:  # nothing may join it: no turn to look for company
                alone = True
            else:
                if self._alone % LOOK_EVERY == 0:
                    await asyncio.sleep(0)
                alone = len(queue) == 1 and queue[0] is request
                self._alone = self._alone + 1 if alone else 0
            if alone:
                queue.popleft()
                await self._lead_batch([request])
        except BaseException:
            request.future.cancel()
            raise
        finally:
            _left_running.reset(token)
            # Cancelled while its run goes on in a thread: the slot is the run's until it ends.
            if left and not left[0].done():
                left[0].add_done_callback(lambda _: self._leave(loop))
            else:
                self._leave(loop)  # a leader for whoever waits: this one too, with company
        return request.future.result() if alone else await request.future

    def _start_leader(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start a task that runs batches while requests wait, if a run slot is free. Starting
        it as a task also lets requests that arrived in the same loop iteration join its first
        batch."""
        if self._running >= self._concurrency:
            return
        self._running += 1
        # The leader runs other requests' batches too: none of their deadlines is its own.
        context = contextvars.copy_context()
        context.run(_deadline.set, None)
        task = loop.create_task(self._lead(), name="mlfn-batch", context=context)
        task.add_done_callback(lambda _: self._leave(loop))

    def _leave(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self._loop:
            return  # a task of a loop this batcher has left behind
        self._running -= 1
        self._drop_answered()
        if self._pending or self._bulk:
            self._start_leader(loop)

    async def _lead(self) -> None:
        """Run batches until no request waits."""
        while batch := self._take([]):
            if batch[0].merge and self._fill(batch) < self._max and self._busy(batch):
                if self._wait:
                    await self._gather(batch, self._wait)
                elif self._target is not None:
                    await self._gather_within_target(batch)
            await self._lead_batch(batch)

    async def _gather_within_target(self, batch: list[_Request[I, O]]) -> None:
        """Add requests to ``batch`` while waiting for the next one pays (``_worth_waiting``)."""
        assert self._arrived is not None
        while self._fill(batch) < self._max:
            more = self._take(batch)
            if more:
                batch += more
                continue
            if self._pending:  # the next does not fit
                return
            wait = self._within_deadlines(batch, self._worth_waiting(batch))
            if wait <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), wait)
            except TimeoutError:
                return

    def _worth_waiting(self, batch: list[_Request[I, O]]) -> float:
        """How long ``batch`` should wait for one more request: as long as a run with it
        would still cost less per instance than the run without it, and its oldest request
        would still be answered within half the latency target (the other half is the
        request's way in and out, and the runs ahead of it); zero when the next request is
        not expected that soon (the time between requests, averaged)."""
        n = self._fill(batch)
        now_run, next_run = self.run_times.expect(n), self.run_times.expect(n + 1)
        if self._target is None or self._gap is None or now_run is None or next_run is None:
            return 0.0
        pays = (n + 1) * now_run / n - next_run
        oldest = min(r.arrived for r in batch)
        budget = oldest + self._target / 2 - next_run - time.monotonic()
        wait = min(pays, budget)
        return wait if self._gap < wait else 0.0

    async def _lead_batch(self, batch: list[_Request[I, O]]) -> None:
        try:
            await self._dispatch(batch)
        except Exception as exc:  # a bug in split: fail these requests, keep going
            log.exception("batch dispatch failed")
            for request in batch:
                _settle(request.future, exc=exc)
        except BaseException:  # cancelled (the loop shuts down): nobody is left unanswered
            for request in batch:
                request.future.cancel()
            raise

    def _drop_answered(self) -> None:
        """Forget waiting requests that are already answered (their callers gave up)."""
        if any(r.future.done() for r in self._pending):
            self._pending = _Line(r for r in self._pending if not r.future.done())
        if any(r.future.done() for r in self._bulk):
            self._bulk = _Line(r for r in self._bulk if not r.future.done())

    async def _gather(self, batch: list[_Request[I, O]], wait: float) -> None:
        """Add requests arriving within ``wait`` seconds to ``batch``, until it is full."""
        assert self._arrived is not None
        deadline = asyncio.get_running_loop().time() + wait
        while self._fill(batch) < self._max:
            more = self._take(batch)
            if more:
                batch += more
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            remaining = self._within_deadlines(batch, remaining)
            if remaining <= 0 or self._pending:  # time is up, or the next does not fit
                return
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    def _busy(self, batch: list[_Request[I, O]]) -> bool:
        """Other requests in flight (this batch has company, or another batch is running):
        waiting for more is worth it. A lone request on an idle endpoint never waits."""
        return len(batch) > 1 or self._running > 1

    def _fill(self, batch: list[_Request[I, O]]) -> int:
        return sum(len(r.instances) for r in batch)

    def _take(self, taken: list[_Request[I, O]]) -> list[_Request[I, O]]:
        """The oldest waiting requests that fit beside the ``taken`` ones (a batch when none
        is; more for it otherwise); an oversized request, or one not to ``merge``, is taken
        alone. With a latency target and the run times known, no more than a run answers by
        the deadline of each request in it (``_answers_by``), and a request whose deadline
        no run could meet any longer is answered ``DeadlineExceeded`` now, not run: under
        overload a run for answers that would come too late is taken from those that would
        not (bench/NOTES.md, "Latency")."""
        extending = bool(taken)
        filled = self._fill(taken)
        room = self._max - filled
        batch: list[_Request[I, O]] = []
        size = 0
        answers_by = self._answers_by()
        earliest = _earliest(taken)
        # Interactive requests first; bulk work fills what room they leave, and goes first
        # once BULK_AFTER runs have been taken ahead of it.
        bulk_first = bool(self._bulk) and (not self._pending or self._bulk_passed >= BULK_AFTER)
        lines = (self._bulk, self._pending) if bulk_first else (self._pending, self._bulk)
        took_bulk = False
        for line in lines:
            ended = False
            while line:
                nxt = line[0]
                if nxt.future.done():  # cancelled by its caller while waiting (or its deadline)
                    line.popleft()
                    continue
                if batch and size + len(nxt.instances) > room:
                    ended = True
                    break
                if not batch and len(nxt.instances) > room and room < self._max:
                    ended = True
                    break
                if not nxt.merge and (batch or extending):
                    ended = True
                    break
                if answers_by is not None:
                    due = earliest if nxt.deadline is None else min(earliest, nxt.deadline.at)
                    if answers_by(filled + size + len(nxt.instances)) > due:
                        if batch or extending:  # the smaller run answers those in time
                            ended = True
                            break
                        assert nxt.deadline is not None  # ``due`` is finite
                        line.popleft()  # too late even alone: not run, answered now
                        _settle(nxt.future, exc=DeadlineExceeded(nxt.deadline.budget_ms))
                        continue
                    earliest = due
                batch.append(line.popleft())
                took_bulk = took_bulk or line is self._bulk
                size += len(nxt.instances)
                if size >= room or not nxt.merge:
                    ended = True
                    break
            if ended:
                break
        if not extending and batch:
            self._bulk_passed = 0 if took_bulk or not self._bulk else self._bulk_passed + 1
        return batch

    def _within_deadlines(self, batch: list[_Request[I, O]], wait: float) -> float:
        """``wait``, cut to what still lets a run with one more request answer each request
        of ``batch`` by its deadline (with a target and the run times known): a wait for
        company must not make late the answers ``_take`` took because they would be on time."""
        answers_by = self._answers_by()
        if answers_by is None:
            return wait
        return min(wait, _earliest(batch) - answers_by(self._fill(batch) + 1))

    def _answers_by(self) -> Callable[[int], float] | None:
        """With a latency target and the run times known: when a run of ``n`` instances
        started now would have answered (its run, then the loop's wait to resume its tasks,
        ``loop_lag``); None otherwise."""
        times = self.run_times
        if self._target is None or times.expect(1) is None:
            return None
        start = time.monotonic() + loop_lag()
        return lambda n: start + (times.expect(n) or 0.0)

    async def _call(self, instances: list[I]) -> O:
        if self._run_is_async:
            return await cast(Awaitable[O], self._run(instances))
        run = cast(Callable[[list[I]], O], self._run)
        return await in_thread(lambda: run(instances))

    async def _call_as(
        self, tel: telemetry.Telemetry, batch: list[_Request[I, O]], instances: list[I]
    ) -> O:
        """The run as the batch's first request's (its log lines, its trace): this task may
        have been started by a request long answered."""
        token = telemetry.enter(batch[0].invocation)
        try:
            with tel.batch(self.name, batch, len(instances)) if tel.on else telemetry.NOOP_SPAN:
                return await self._call(instances)
        finally:
            telemetry.leave(token)

    async def _dispatch(self, batch: list[_Request[I, O]]) -> None:
        if len(batch) == 1:  # an idle endpoint's request, most of all: no lists to make
            if batch[0].future.done():
                return
            instances = batch[0].instances
        else:
            batch = [r for r in batch if not r.future.done()]
            if not batch:
                return
            instances = [i for r in batch for i in r.instances]
        tel, first = telemetry.current(), batch[0].invocation
        started = time.perf_counter()
        token = _run_for.set(batch)  # the run's thread asks whether anyone still waits
        try:
            if tel.on or first is not telemetry.current_invocation():
                result = await self._call_as(tel, batch, instances)
            else:  # this request's own task runs it, untraced: nothing to set
                result = await self._call(instances)
            if not self._timed_by_caller:
                self.ran(len(instances), time.perf_counter() - started)
        except Exception as exc:
            if isinstance(exc, RunAbandoned):
                return  # nobody is left to answer
            if len(batch) == 1 or self._shared_failure(exc):
                for request in batch:  # every request would fail the same way alone
                    _settle(request.future, exc=exc)
                return
            log.info("merged run of %d requests failed; running each alone", len(batch))
            for request in batch:
                await self._dispatch([request])
            return
        finally:
            _run_for.reset(token)
        start = 0
        for request in batch:
            count = len(request.instances)
            _settle(request.future, value=self._split(result, start, count))
            start += count


# The requests of the run the current task or thread does (``_dispatch``'s), for
# ``end_if_unanswered``.
_run_for: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "mlfn_run_for", default=None
)


def end_if_unanswered() -> None:
    """Raise when nobody waits any more for the run this task or thread does, between the
    chunks of a request larger than a batch: what is left of it is never started. A request
    run for itself (on its own task, or its thread) past its own deadline:
    ``DeadlineExceeded``, its answer (an async predict that never yields gets no other);
    every request of a leader's batch answered already, or past its deadline:
    ``RunAbandoned``, which the batcher drops."""
    own = _deadline.get()  # a request's own, where its task runs it (a leader has none)
    if own is not None and own.passed():
        raise DeadlineExceeded(own.budget_ms)  # its answer, where nothing answered it yet
    batch = _run_for.get()
    # A deadline is read here as it passes, not only once the loop has answered it (a busy
    # loop does that late): each request's in the batch (with a target), or its answer.
    if batch is not None and all(
        request.future.done() or (request.deadline is not None and request.deadline.passed())
        for request in batch
    ):
        raise RunAbandoned()


def _earliest(batch: list[_Request[I, O]]) -> float:
    """The earliest deadline of ``batch``'s requests (``time.monotonic()``), inf for none."""
    return min((r.deadline.at for r in batch if r.deadline is not None), default=math.inf)


def _settle(
    future: asyncio.Future[O], value: O | None = None, exc: BaseException | None = None
) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)  # type: ignore[arg-type]

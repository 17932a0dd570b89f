"""Micro-batching: concurrent score requests for one endpoint merged into few model calls."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

log = logging.getLogger("mlfn.batching")

I = TypeVar("I")  # noqa: E741 - one instance
O = TypeVar("O")  # noqa: E741 - what a run returns for the instances it was given


@dataclass
class _Request(Generic[I, O]):
    instances: list[I]
    future: asyncio.Future[O]


@dataclass
class BatchStats:
    """How many requests the batcher has taken (for tests; telemetry will add more)."""

    requests: int = 0


class Batcher(Generic[I, O]):
    """Runs ``run(instances)`` for the instances of as many waiting requests as fit in
    ``max_batch_size`` (a sync ``run`` in a worker thread, an async one on the loop), waiting
    up to ``max_wait_s`` for company, then hands each request its share via
    ``split(result, start, count)``.

    A request larger than ``max_batch_size`` runs alone (``run`` chunks it). If a merged run
    fails, each of its requests is run again on its own, so one bad request cannot fail its
    neighbours.
    """

    def __init__(
        self,
        run: Callable[[list[I]], O] | Callable[[list[I]], Awaitable[O]],
        split: Callable[[O, int, int], O],
        max_batch_size: int,
        max_wait_s: float = 0.0,
    ) -> None:
        self._run = run
        self._run_is_async = inspect.iscoroutinefunction(run)
        self._split = split
        self._max = max_batch_size
        self._wait = max_wait_s
        self.stats = BatchStats()
        # Created inside the running loop on first use: asyncio primitives belong to one loop,
        # and the Functions worker's loop (or a test's) does not exist at import time.
        self._queue: asyncio.Queue[_Request[I, O]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, instances: list[I]) -> O:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._worker is None or self._worker.done():
            self._loop, self._queue = loop, asyncio.Queue()
            self._worker = loop.create_task(self._work(self._queue), name="mlfn-batcher")
        assert self._queue is not None
        future: asyncio.Future[O] = loop.create_future()
        self._queue.put_nowait(_Request(instances, future))
        return await future

    async def _call(self, instances: list[I]) -> O:
        if self._run_is_async:
            return await cast(Awaitable[O], self._run(instances))
        return await asyncio.to_thread(cast(Callable[[list[I]], O], self._run), instances)

    async def _work(self, queue: asyncio.Queue[_Request[I, O]]) -> None:
        carry: _Request[I, O] | None = None
        while True:
            first = carry or await queue.get()
            carry = None
            batch, size = [first], len(first.instances)
            deadline = asyncio.get_running_loop().time() + self._wait
            while size < self._max:
                try:
                    nxt = queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - asyncio.get_running_loop().time()
                    if remaining <= 0:
                        break
                    try:
                        nxt = await asyncio.wait_for(queue.get(), remaining)
                    except TimeoutError:
                        break
                if size + len(nxt.instances) > self._max:
                    carry = nxt  # starts the next batch
                    break
                batch.append(nxt)
                size += len(nxt.instances)
            try:
                await self._dispatch(batch)
            except Exception as exc:  # a bug in split: fail these requests, keep the worker
                log.exception("batch dispatch failed")
                for request in batch:
                    _settle(request.future, exc=exc)

    async def _dispatch(self, batch: list[_Request[I, O]]) -> None:
        batch = [r for r in batch if not r.future.cancelled()]
        if not batch:
            return
        instances = [i for r in batch for i in r.instances]
        self.stats.requests += len(batch)
        try:
            result = await self._call(instances)
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0].future, exc=exc)
                return
            log.info("merged run of %d requests failed; running each alone", len(batch))
            for request in batch:
                await self._dispatch([request])
            return
        start = 0
        for request in batch:
            count = len(request.instances)
            _settle(request.future, value=self._split(result, start, count))
            start += count


def _settle(
    future: asyncio.Future[O], value: O | None = None, exc: BaseException | None = None
) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)  # type: ignore[arg-type]

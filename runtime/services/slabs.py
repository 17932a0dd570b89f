"""A file's slabs through three threads, each doing its part of every slab in turn: one reads
them, one scores them, one writes them, handed on through queues; a bounded number of slabs
held at once, from the start of their reading to the end of their writing.

Why three threads and not a thread a slab (batch files' row path) or the event loop handing
each slab on: a columnar predict call is short (64 iris rows, ~20 us) and lets the GIL go
while the model runs, so a slab's 256 calls wait to get it back whenever another Python
thread is busy; slabs read and checked side by side slowed the calls more than they
overlapped. And a thread that wakes the event loop (a future's result) lets the GIL go in the
write to the loop's pipe: the scoring thread waited for it there, a slab at a time. Here a
slab passes between threads through a queue, which takes no system call that lets the GIL
go, and the loop hears once, at the end. What runs beside the scoring thread mostly waits for
the storage or runs in Arrow (CSV text, Parquet pages), which lets the GIL go.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from typing import Any, Generic, TypeVar

Read = TypeVar("Read")
Scored = TypeVar("Scored")
T = TypeVar("T")

_POLL_S = 0.05  # how soon a thread waiting for a slab sees that the slabs were stopped


class Slabs(Generic[Read, Scored]):
    """``read()`` until it gives None, ``score`` each slab it read, ``write`` each scored slab,
    in order; at most ``held`` slabs (at least 3, one a part) from the start of their reading
    to the end of their writing."""

    def __init__(
        self,
        read: Callable[[], Read | None],
        score: Callable[[Read], Scored],
        write: Callable[[Scored], None],
        held: int = 4,
    ) -> None:
        self._read, self._score, self._write = read, score, write
        self._stop = threading.Event()
        self._failed: list[BaseException] = []  # what the first part that failed raised
        # Taken to read a slab, given back once it is written.
        self._held = threading.Semaphore(max(3, held))
        self._read_slabs: queue.Queue[Any] = queue.Queue()
        self._scored_slabs: queue.Queue[Any] = queue.Queue()
        self._written = False  # the last slab too

    def stop(self) -> None:
        """No part starts after this (a part waiting on something else through ``wait``
        raises CancelledError); one running finishes its slab."""
        self._stop.set()

    def run(self) -> None:
        """Every slab read, scored and written (the writing on this thread), or the first
        failure of a part raised once the others have stopped (CancelledError: ``stop``
        came first)."""
        threads = [
            threading.Thread(
                target=contextvars.copy_context().run,  # the caller's context: its trace, ...
                args=(self._part, part),
                name=f"mlfn-{name}",
                daemon=True,
            )
            for name, part in (("read", self._reading), ("score", self._scoring))
        ]
        for thread in threads:
            thread.start()
        try:
            self._part(self._writing)
        finally:
            self._stop.set()  # the end, or a failure: the others stop at their next step
            for thread in threads:
                thread.join()
        if self._failed:
            raise self._failed[0]
        if not self._written:
            raise CancelledError  # stopped from outside: not every slab was written

    async def run_aside(self) -> None:
        """``run`` on a thread of its own, awaited. Not on a thread of the loop's default
        executor: the file would hold it to its end, and the rows service (which a slab the
        columns cannot hold goes to) needs one, as every other invocation does; a few files at
        once would take them all and wait for one another for ever."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def ran() -> None:
            failure: BaseException | None = None
            try:
                self.run()
            except BaseException as exc:
                failure = exc
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_settle, done, failure)

        context = contextvars.copy_context()  # the caller's: its trace, its invocation
        threading.Thread(target=context.run, args=(ran,), name="mlfn-write", daemon=True).start()
        await done

    def _part(self, part: Callable[[], None]) -> None:
        try:
            part()
        except CancelledError as exc:
            if self._stop.is_set():  # not done: another part failed, or the slabs were stopped
                return
            # Cancelled by its own work (a coroutine it waited for), not by a stop: a failure,
            # or the other parts would wait for this one's slabs for ever.
            failed = RuntimeError("a part of the file's scoring was cancelled")
            failed.__cause__ = exc
            self._failed.append(failed)
            self._stop.set()
        except BaseException as exc:
            self._failed.append(exc)
            self._stop.set()

    def _reading(self) -> None:
        while True:
            while not self._held.acquire(timeout=_POLL_S):
                self._check()
            self._check()
            slab = self._read()
            self._put(self._read_slabs, slab)
            if slab is None:
                return

    def _scoring(self) -> None:
        while True:
            slab = self._get(self._read_slabs)
            if slab is None:
                self._put(self._scored_slabs, None)
                return
            self._put(self._scored_slabs, (self._score(slab),))

    def _writing(self) -> None:
        while True:
            scored = self._get(self._scored_slabs)
            if scored is None:
                self._written = True
                return
            self._check()
            self._write(scored[0])
            self._held.release()

    def wait(self, future: Future[T]) -> T:
        """``future``'s result, waited for by a part (the scoring's, for work it handed to the
        loop); CancelledError, with the future cancelled, once the slabs are stopped."""
        while True:
            try:
                return future.result(timeout=_POLL_S)
            except TimeoutError:
                if self._stop.is_set():
                    future.cancel()
                    raise CancelledError from None

    def _check(self) -> None:
        if self._stop.is_set():
            raise CancelledError

    def _put(self, slabs: queue.Queue[Any], item: Any) -> None:
        self._check()
        slabs.put(item)  # never full: the slabs held are bounded where they are read

    def _get(self, slabs: queue.Queue[Any]) -> Any:
        while True:
            self._check()
            try:
                return slabs.get(timeout=_POLL_S)
            except queue.Empty:
                continue


def _settle(done: asyncio.Future[None], failure: BaseException | None) -> None:
    if done.done():  # its waiter was cancelled
        return
    if failure is None:
        done.set_result(None)
    elif isinstance(failure, CancelledError):  # stopped from outside: its waiter is cancelled
        done.cancel()
    else:
        done.set_exception(failure)

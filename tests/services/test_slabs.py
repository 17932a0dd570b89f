"""A file's slabs through three threads: read, scored and written in order, at most the
slabs asked held at once, the first failure of any part the file's, and nothing started after it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError
from typing import Any

import pytest

from runtime.services.slabs import Slabs


def _reader(n: int, fail_at: int | None = None) -> Callable[[], int | None]:
    slabs = iter(range(n))

    def read() -> int | None:
        slab = next(slabs, None)
        if slab is not None and slab == fail_at:
            raise OSError("the storage went away")
        return slab

    return read


def test_every_slab_is_read_scored_and_written_in_order() -> None:
    written: list[int] = []
    threads: set[str] = set()

    def score(slab: int) -> int:
        threads.add(threading.current_thread().name)
        time.sleep(0.001 * (slab % 3))  # parts of unequal length
        return slab * 10

    Slabs(_reader(50), score, written.append).run()
    assert written == [i * 10 for i in range(50)]
    assert threads == {"mlfn-score"}


@pytest.mark.parametrize("held", [3, 4, 6])
def test_no_more_slabs_are_held_at_once_than_asked(held: int) -> None:
    alive: set[int] = set()
    most = 0
    changed = threading.Condition()

    def read() -> int | None:
        nonlocal most
        slab = next(slabs, None)
        if slab is not None:
            with changed:
                alive.add(slab)
                most = max(most, len(alive))
                changed.notify_all()
        return slab

    def write(slab: int) -> None:
        with changed:
            if slab == 0:  # the writer is the slow part: the reader goes as far as it may
                changed.wait_for(lambda: len(alive) >= held, timeout=10)
            alive.discard(slab)

    slabs = iter(range(40))
    Slabs(read, lambda slab: slab, write, held=held).run()
    assert not alive and most == held  # read ahead as far as allowed, and no further


@pytest.mark.parametrize("part", ["read", "score", "write"])
def test_the_first_failure_of_any_part_is_raised_and_nothing_starts_after_it(part: str) -> None:
    written: list[int] = []
    scored: list[int] = []

    def score(slab: int) -> int:
        if part == "score" and slab == 5:
            raise ValueError("predict failed")
        scored.append(slab)
        return slab

    def write(slab: int) -> None:
        if part == "write" and slab == 5:
            raise RuntimeError("the disk is full")
        written.append(slab)

    read = _reader(100, fail_at=5 if part == "read" else None)
    with pytest.raises((OSError, ValueError, RuntimeError)) as raised:
        Slabs(read, score, write).run()
    assert type(raised.value) is {"read": OSError, "score": ValueError, "write": RuntimeError}[part]
    # In order, and none at or after the failure (the file fails: slabs before it, still on
    # their way, need not be written either).
    assert written == list(range(len(written))) and len(written) <= 5
    if part == "write":
        assert written == list(range(5))
    assert len(scored) <= 5 + 4  # no more than the slabs held ahead of the writer


def test_slabs_stopped_from_outside_say_so_and_their_threads_end() -> None:
    started = threading.Event()

    def write(slab: int) -> None:
        started.set()
        time.sleep(0.01)

    slabs: Slabs[int, int] = Slabs(_reader(10_000), lambda s: s, write)
    done: list[BaseException | None] = []

    def run() -> None:
        try:
            slabs.run()
            done.append(None)
        except BaseException as exc:
            done.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    assert started.wait(5)
    slabs.stop()
    runner.join(5)
    assert not runner.is_alive() and isinstance(done[0], CancelledError)
    assert not [t for t in threading.enumerate() if t.name in ("mlfn-read", "mlfn-score")]


def test_the_caller_s_context_reaches_every_part() -> None:
    import contextvars

    where: contextvars.ContextVar[str] = contextvars.ContextVar("where", default="none")
    where.set("invocation 7")
    seen: set[Any] = set()

    def score(slab: int) -> int:
        seen.add(where.get())
        return slab

    Slabs(_reader(3), score, lambda slab: seen.add(where.get())).run()
    assert seen == {"invocation 7"}


def test_a_part_cancelled_by_its_own_work_is_a_failure_not_a_hang() -> None:
    """A CancelledError no stop asked for (a coroutine the scoring waited for was cancelled)
    fails the file, and the other parts end, rather than waiting for its slabs for ever."""

    def score(slab: int) -> int:
        if slab == 2:
            raise CancelledError
        return slab

    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            Slabs(_reader(10), score, lambda slab: None).run()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the slabs waited for ever"
    assert isinstance(outcome[0], RuntimeError) and "cancelled" in str(outcome[0])

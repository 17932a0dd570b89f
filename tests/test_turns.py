"""Requests that each run alone (V2 inference) taking turns on the event loop: at most the
endpoint's concurrency hold one, the rest wait on the loop, bounded, and a request whose
deadline its turn would miss is never run."""

from __future__ import annotations

import asyncio
import threading

import pytest

from runtime.errors import DeadlineExceeded, Overloaded, Shed
from runtime.scheduling import Deadline, Turns, within
from runtime.scheduling.placement import in_thread


async def _held(turns: Turns, release: asyncio.Event, ran: list[str], name: str) -> str:
    async def work() -> str:
        ran.append(name)
        await release.wait()
        return name

    return await turns.take(work, None)


def test_turns_run_one_at_a_time_in_order_and_a_full_line_is_refused() -> None:
    async def main() -> tuple[list[str], list[str], BaseException]:
        turns, release, ran = Turns(1, max_waiting=2), asyncio.Event(), []
        tasks = [asyncio.ensure_future(_held(turns, release, ran, n)) for n in "abc"]
        await asyncio.sleep(0.01)
        assert (ran, turns.waiting) == (["a"], 2)  # b and c wait on the loop, not running
        with pytest.raises(Overloaded) as refused:
            await turns.take(lambda: asyncio.sleep(0), None)
        release.set()
        return await asyncio.gather(*tasks), ran, refused.value

    answers, ran, refused = asyncio.run(main())
    assert answers == ran == ["a", "b", "c"]
    assert (refused.status, refused.headers()) == (503, {"Retry-After": "1"})


def test_a_request_whose_deadline_passes_in_line_leaves_it_and_is_never_run() -> None:
    async def main() -> tuple[list[str], BaseException | None]:
        turns, release, ran = Turns(1, max_waiting=10), asyncio.Event(), []
        first = asyncio.ensure_future(_held(turns, release, ran, "first"))
        await asyncio.sleep(0.01)
        deadline = Deadline.after(30)
        caught = None
        try:
            await within(deadline, _held(turns, release, ran, "late"))
        except DeadlineExceeded as exc:
            caught = exc
        assert turns.waiting == 0  # it left the line at its deadline
        release.set()
        await first
        assert await _held(turns, release, ran, "next") == "next"  # the turn was handed on
        return ran, caught

    ran, caught = asyncio.run(main())
    assert isinstance(caught, DeadlineExceeded)
    assert ran == ["first", "next"]


def test_with_a_target_what_the_line_would_keep_past_its_deadline_is_shed_or_not_run() -> None:
    async def main() -> tuple[list[str], BaseException, BaseException]:
        turns, ran, release = Turns(1, max_waiting=10, target_s=0.1), [], asyncio.Event()
        turns.ran(0.05)  # a run takes about 50 ms, as its thread said

        async def run(name: str) -> str:
            ran.append(name)
            await release.wait()
            return name

        holding = asyncio.ensure_future(turns.take(lambda: run("long"), None))
        await asyncio.sleep(0.01)
        waiting = asyncio.ensure_future(turns.take(lambda: run("w"), None))
        await asyncio.sleep(0.01)
        # Two ahead (half the running one, the waiting one) and its own: ~125 ms of 100.
        with pytest.raises(Shed) as shed:
            await turns.take(lambda: run("shed"), Deadline.after(100))
        # Taken (the line was shorter then: ~125 of 200 ms), but its turn comes once those
        # ahead have held the line past its deadline, less a run: not run, 504 then.
        taken = asyncio.ensure_future(turns.take(lambda: run("late"), Deadline.after(200)))
        await asyncio.sleep(0.2)
        release.set()
        with pytest.raises(DeadlineExceeded) as late:
            await taken
        await holding
        await waiting
        return ran, shed.value, late.value

    ran, shed, late = asyncio.run(main())
    assert "shed" not in ran and "late" not in ran
    assert shed.status == 503 and late.status == 504


def test_without_a_target_a_turn_that_comes_late_is_left_to_its_deadline() -> None:
    async def main() -> str:
        turns, release = Turns(1, max_waiting=10), asyncio.Event()
        turns.ran(1.0)  # a slow first run (a cold load): no reason to refuse the next

        async def held() -> None:
            await release.wait()

        holding = asyncio.ensure_future(turns.take(held, None))
        await asyncio.sleep(0.01)
        after = asyncio.ensure_future(turns.take(lambda: _named("ran"), Deadline.after(500)))
        await asyncio.sleep(0.01)
        release.set()
        await holding
        return await after

    assert asyncio.run(main()) == "ran"


def test_a_turn_whose_caller_gave_up_ends_when_its_thread_does() -> None:
    # At its deadline the turn was handed on while its worker thread still waited or ran:
    # the next request's thread then ran beside it, and a backlog held every thread.
    async def main() -> list[str]:
        turns, order = Turns(1, max_waiting=10), []
        go = threading.Event()

        def blocking() -> None:
            go.wait(10)
            order.append("first's thread ends")

        async def first_work() -> None:
            await in_thread(blocking)

        async def second_work() -> None:
            order.append("second runs")

        with pytest.raises(DeadlineExceeded):
            await within(Deadline.after(30), turns.take(first_work, None))
        second = asyncio.ensure_future(turns.take(second_work, None))
        await asyncio.sleep(0.05)
        assert order == []  # the first's thread holds the turn still
        go.set()
        await second
        return order

    assert asyncio.run(main()) == ["first's thread ends", "second runs"]


async def _named(name: str) -> str:
    return name

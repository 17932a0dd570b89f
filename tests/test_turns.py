"""Requests that each run alone (V2 inference) taking turns on the event loop: at most the
endpoint's concurrency hold one, the rest wait on the loop, bounded, and a request whose
deadline its turn would miss is never run."""

from __future__ import annotations

import asyncio

import pytest

from runtime.errors import DeadlineExceeded, Overloaded, Shed
from runtime.scheduling import Deadline, Turns, within


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
        turns, ran = Turns(1, max_waiting=10, target_s=0.1), []

        async def run(name: str, seconds: float) -> str:
            ran.append(name)
            await asyncio.sleep(seconds)
            return name

        await turns.take(lambda: run("learn", 0.05), None)  # a run takes about 50 ms
        holding = asyncio.ensure_future(turns.take(lambda: run("long", 0.3), None))
        await asyncio.sleep(0.01)
        waiting = asyncio.ensure_future(turns.take(lambda: run("w", 0.05), None))
        await asyncio.sleep(0.01)
        # Two ahead (half the running one, the waiting one) and its own: ~125 ms of 100.
        with pytest.raises(Shed) as shed:
            await turns.take(lambda: run("shed", 0.05), Deadline.after(100))
        # Taken (the line was shorter then), but its turn comes when a run no longer fits.
        taken = asyncio.ensure_future(turns.take(lambda: run("late", 0.05), Deadline.after(400)))
        with pytest.raises(DeadlineExceeded) as late:
            await taken  # its turn comes ~330 ms on, and a run takes 50 ms at least
        await holding
        await waiting
        return ran, shed.value, late.value

    ran, shed, late = asyncio.run(main())
    assert "shed" not in ran and "late" not in ran
    assert shed.status == 503 and late.status == 504


def test_an_idle_line_runs_what_comes_whatever_it_learnt() -> None:
    async def main() -> str:
        turns = Turns(1, max_waiting=10, target_s=0.01)
        await turns.take(lambda: asyncio.sleep(0.05), None)  # learnt: 50 ms, over the target
        return await turns.take(lambda: _named("ran"), Deadline.after(10))

    assert asyncio.run(main()) == "ran"


async def _named(name: str) -> str:
    return name

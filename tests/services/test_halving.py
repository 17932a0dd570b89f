"""The halving driver: which predict calls find the rows a predict fails on, made by one driver
whether its caller awaits them on an event loop or makes them on a thread with none."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from runtime.errors import PredictFailed
from runtime.scheduling import finished
from runtime.services.halving import Part, outcomes

ITEMS = list(range(7))  # fewer than FAILS_EVERYWHERE_AT: halved, no random probes


def _call(calls: list[list[int]], bad: int, waits: bool) -> Callable[[list[int]], Awaitable[Part]]:
    async def call(items: list[int]) -> Part:
        calls.append(items)
        if waits:
            await asyncio.sleep(0)
        if bad in items:
            raise PredictFailed("ep", ValueError(f"row {bad}"))
        return Part([i * 10 for i in items], None)

    return call


@pytest.mark.parametrize("waits", [True, False])
def test_one_driver_finds_the_bad_row_with_or_without_an_event_loop(waits: bool) -> None:
    calls: list[list[int]] = []
    driven = outcomes(ITEMS, _call(calls, 4, waits))
    results, _ = asyncio.run(driven) if waits else finished(driven)
    assert [r if isinstance(r, int) else "error" for r in results] == [
        0, 10, 20, 30, "error", 50, 60,
    ]  # fmt: skip
    assert calls == [ITEMS, [0, 1, 2], [3, 4, 5, 6], [3, 4], [3], [4], [5, 6]]


def test_a_call_that_failed_already_is_not_made_again() -> None:
    calls: list[list[int]] = []
    failed = PredictFailed("ep", ValueError("row 4"))
    results, _ = finished(outcomes(ITEMS, _call(calls, 4, False), failed))
    assert isinstance(results[4], PredictFailed) and results[3] == 30
    assert calls[0] == [0, 1, 2]  # halved at once

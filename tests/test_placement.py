"""Where a sync run goes: on the event loop once runs of its size prove shorter than a thread
hop and what it holds is free now, in a thread otherwise; and work written once, async, run to
its end with no loop."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

import pytest

from runtime import telemetry
from runtime.scheduling import Placement, finished


class _Clock:
    """Placement's clock, moved by the work alone: how long a run takes is what the test says,
    never what a busy machine makes of a sleep."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    from runtime.scheduling import placement

    found = _Clock()
    monkeypatch.setattr(placement, "time", found)
    return found


def _taking(clock: _Clock) -> Any:
    async def work(model: str, seconds: float) -> None:
        clock.now += seconds

    return work


def test_work_proved_short_runs_in_place_and_work_proved_long_does_not(clock: _Clock) -> None:
    placement, work = Placement(inline_below_s=0.01), _taking(clock)
    assert not placement.fast(1)  # not measured yet
    placement.here(1, _Held(True), work, 0)
    assert placement.fast(1)
    assert not placement.fast(64)  # another size class, not measured
    for _ in range(5):
        placement.here(1, _Held(True), work, 0.03)
    assert not placement.fast(1)


def test_one_stalled_run_does_not_send_the_next_ones_to_threads(clock: _Clock) -> None:
    """A collection or a descheduled process stalls a run now and then; counted whole, one
    stall of 50 limits kept a fast model's runs in threads (where they are slower, and timed
    there) for many runs after."""
    placement, work = Placement(inline_below_s=0.002), _taking(clock)
    for _ in range(5):
        placement.here(1, _Held(True), work, 0)
    placement.here(1, _Held(True), work, 0.1)
    assert placement.fast(1)
    for _ in range(3):
        placement.here(1, _Held(True), work, 0.1)
    assert not placement.fast(1)  # slow again and again: it is slow


class _Held:
    """A holder whose model is free now or not, counting how it was held."""

    def __init__(self, free_now: bool) -> None:
        self.free_now = free_now
        self.now = self.waited = 0

    def held_now(self) -> contextlib.AbstractContextManager[str] | None:
        self.now += 1
        return contextlib.nullcontext("model") if self.free_now else None

    def held(self) -> contextlib.AbstractContextManager[str]:
        self.waited += 1
        return contextlib.nullcontext("model")


async def _where(model: str, n: int) -> tuple[int, str, int]:
    current = telemetry.current_invocation()
    on_thread = getattr(current.thread_local, "invocation_id", None) if current else None
    return threading.get_ident(), f"{model} {n} {on_thread}", n


def test_work_slow_every_third_run_is_sent_to_threads(clock: _Clock) -> None:
    """Work slow by its inputs now and then (a long text, say): capped like a stall, its slow
    runs kept the average under the limit and blocked the loop for their whole length, 19
    times in 20."""
    placement, work = Placement(inline_below_s=0.002), _taking(clock)
    for _ in range(2):
        placement.here(1, _Held(True), work, 0)
    inline = []  # whether each slow run would have gone on the loop
    for _ in range(12):
        for seconds in (0, 0, 0.02):
            if seconds:
                inline.append(placement.fast(1))
            placement.here(1, _Held(True), work, seconds)
    assert inline[0]  # the first one cannot be told from a stall
    assert not any(inline[6:]), inline  # then they are known: in threads


@pytest.mark.parametrize("free_now", [True, False])
def test_work_runs_on_the_loop_once_proved_short_and_held_without_waiting(free_now: bool) -> None:
    placement, holder = Placement(inline_below_s=60.0), _Held(free_now)

    async def main() -> tuple[int, list[tuple[int, str, int]]]:
        done = [await placement.run(1, holder, _where, n) for n in range(3)]
        return threading.get_ident(), done

    loop, done = asyncio.run(main())
    assert [d[1:] for d in done] == [("model 0 None", 0), ("model 1 None", 1), ("model 2 None", 2)]
    # Not measured yet: the first in a thread; then on the loop while the model is free now.
    assert [thread == loop for thread, _, _ in done] == [False, free_now, free_now]
    assert (holder.now, holder.waited) == ((2, 1) if free_now else (2, 3))


def test_work_in_a_thread_carries_the_invocation_to_the_threads_storage() -> None:
    storage = threading.local()
    placement = Placement(inline_below_s=1e-9)  # never short enough: always a thread

    async def main() -> tuple[int, str, int]:
        token = telemetry.enter(telemetry.Invocation("inv-7", storage))
        try:
            return await placement.run(1, _Held(True), _where, 5)
        finally:
            telemetry.leave(token)

    thread, said, _ = asyncio.run(main())
    assert thread != threading.get_ident() and said == "model 5 inv-7"


def test_a_coroutine_that_waits_cannot_be_finished_without_a_loop() -> None:
    async def answers() -> int:
        return 4

    async def waits() -> int:
        await asyncio.sleep(0)
        return 4

    assert finished(answers()) == 4
    with pytest.raises(RuntimeError, match="needs an event loop"):
        finished(waits())

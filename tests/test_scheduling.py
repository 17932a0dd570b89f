"""Micro-batching: concurrent requests share model calls; one bad request fails alone."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from runtime.errors import Overloaded
from runtime.scheduling import Batcher


def _batcher(
    max_batch_size: int, wait_s: float = 0.0, poison: int | None = None
) -> tuple[Batcher[int, list[int]], list[list[int]]]:
    calls: list[list[int]] = []
    lock = threading.Lock()

    def run(instances: list[int]) -> list[int]:
        with lock:
            calls.append(list(instances))
        if poison is not None and poison in instances:
            raise ValueError(f"cannot score {poison}")
        return [i * 10 for i in instances]

    return Batcher(run, lambda out, start, n: out[start : start + n], max_batch_size, wait_s), calls


def _held(
    max_batch_size: int, max_pending: int | None = None, times: int = 1, holds: int | None = None
) -> tuple[Batcher[int, list[int]], threading.Event, threading.Event]:
    """A batcher whose runs (those with instance ``holds`` only, if given) set ``started`` and
    wait for ``release``; each instance scores as itself ``times``."""
    started, release = threading.Event(), threading.Event()

    def run(instances: list[int]) -> list[int]:
        if holds is None or holds in instances:
            started.set()
            release.wait(10)
        return [i * times for i in instances]

    split = lambda out, start, n: out[start : start + n]  # noqa: E731
    return Batcher(run, split, max_batch_size, max_pending=max_pending), started, release


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Let the loop run until ``condition`` holds: tasks scheduled now do their part in a few
    iterations, so a bound on iterations, not a sleep, says when to give up."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"the event loop never got to {what}")


def test_concurrent_requests_are_merged_up_to_max_batch_size_and_split_back() -> None:
    batcher, calls = _batcher(max_batch_size=8)

    async def main() -> list[list[int]]:
        return await asyncio.gather(*(batcher.submit([i, i + 100]) for i in range(10)))

    results = asyncio.run(main())
    assert results == [[i * 10, (i + 100) * 10] for i in range(10)]
    assert all(len(c) <= 8 for c in calls)
    assert len(calls) == 3  # 20 instances in runs of at most 8: 8 + 8 + 4
    assert batcher.stats.requests == 10


def test_a_request_larger_than_max_batch_size_runs_alone() -> None:
    batcher, calls = _batcher(max_batch_size=4)

    async def main() -> list[list[int]]:
        return await asyncio.gather(
            batcher.submit([1]), batcher.submit(list(range(10))), batcher.submit([2])
        )

    small, big, other = asyncio.run(main())
    assert big == [i * 10 for i in range(10)] and small == [10] and other == [20]
    assert list(range(10)) in calls


def test_a_failing_request_does_not_fail_its_neighbours() -> None:
    batcher, calls = _batcher(max_batch_size=16, poison=13)

    async def main() -> list[object]:
        return await asyncio.gather(
            *(batcher.submit([i]) for i in range(10, 16)), return_exceptions=True
        )

    results = asyncio.run(main())
    assert isinstance(results[3], ValueError)
    assert [r for i, r in enumerate(results) if i != 3] == [[100], [110], [120], [140], [150]]
    assert calls[0] == list(range(10, 16))  # merged first, then each alone


def test_under_load_a_batch_waits_for_company_until_it_is_full() -> None:
    batcher, calls = _batcher(max_batch_size=3, wait_s=60)  # full long before the wait is up

    async def main() -> None:
        together = [asyncio.create_task(batcher.submit([i])) for i in (1, 2)]
        # The leader has taken both into its batch and waits for company: none is queued.
        await _until(lambda: batcher.stats.requests == 2 and not batcher._pending, "a batch")
        await asyncio.gather(*together, batcher.submit([3]))

    asyncio.run(main())
    assert calls == [[1, 2, 3]]


def test_a_lone_request_on_an_idle_endpoint_never_waits() -> None:
    batcher, calls = _batcher(max_batch_size=16, wait_s=60)

    async def main() -> list[int]:
        return await asyncio.wait_for(batcher.submit([1]), 10)  # far less than the wait

    assert asyncio.run(main()) == [10]
    assert calls == [[1]]


def test_requests_beyond_the_pending_limit_are_refused_as_overloaded() -> None:
    batcher, started, release = _held(1, max_pending=2)

    async def main() -> list[object]:
        first = asyncio.create_task(batcher.submit([0]))
        await asyncio.to_thread(started.wait, 10)  # running, no longer pending
        waiting = [asyncio.create_task(batcher.submit([i])) for i in (1, 2)]
        await _until(lambda: batcher.stats.requests == 3, "the two waiting requests")
        with pytest.raises(Overloaded) as caught:
            await batcher.submit([3])
        assert caught.value.status == 503 and caught.value.headers() == {"Retry-After": "1"}
        release.set()
        return list(await asyncio.gather(first, *waiting))

    assert asyncio.run(main()) == [[0], [1], [2]]


def test_up_to_max_concurrency_batches_run_at_once() -> None:
    running, peak, lock = [0], [0], threading.Lock()
    both = threading.Barrier(2, timeout=10)  # fails unless two runs overlap

    def run(instances: list[int]) -> list[int]:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        both.wait()
        with lock:
            running[0] -= 1
        return instances

    batcher: Batcher[int, list[int]] = Batcher(
        run, lambda out, start, n: out[start : start + n], 1, max_concurrency=2
    )

    async def main() -> list[list[int]]:
        return list(await asyncio.gather(*(batcher.submit([i]) for i in range(4))))

    assert asyncio.run(main()) == [[0], [1], [2], [3]]
    assert peak[0] == 2


def test_the_batcher_follows_a_new_event_loop() -> None:
    batcher, _ = _batcher(max_batch_size=4)
    assert asyncio.run(batcher.submit([1])) == [10]
    assert asyncio.run(batcher.submit([2])) == [20]


@pytest.mark.parametrize("size", [0, -1])
def test_max_batch_size_must_be_positive_in_limits(size: int) -> None:
    from runtime.endpoint import Limits

    with pytest.raises(ValueError, match="max_batch_size"):
        Limits(max_batch_size=size)


def test_a_failing_split_fails_its_requests_and_the_batcher_keeps_working() -> None:
    calls = {"split": 0}

    def split(out: list[int], start: int, n: int) -> list[int]:
        calls["split"] += 1
        if calls["split"] == 1:
            raise RuntimeError("bug in split")
        return out[start : start + n]

    batcher: Batcher[int, list[int]] = Batcher(lambda xs: [x * 10 for x in xs], split, 8)

    async def main() -> tuple[object, list[int]]:
        first = await asyncio.gather(batcher.submit([1]), return_exceptions=True)
        return first[0], await asyncio.wait_for(batcher.submit([2]), 5)

    failed, later = asyncio.run(main())
    assert isinstance(failed, RuntimeError)
    assert later == [20]


def test_a_cancelled_waiting_request_does_not_stall_the_endpoint() -> None:
    batcher, started, release = _held(1)

    async def main() -> list[list[int]]:
        first = asyncio.create_task(batcher.submit([1]))
        await asyncio.to_thread(started.wait, 10)  # running
        gone = asyncio.create_task(batcher.submit([2]))
        await _until(lambda: batcher.stats.requests == 2, "the second request to wait")
        gone.cancel()  # its caller gave up while it waited
        later = asyncio.create_task(batcher.submit([3]))
        release.set()
        return list(await asyncio.wait_for(asyncio.gather(first, later), 10))

    assert asyncio.run(main()) == [[1], [3]]


def test_a_cancelled_caller_does_not_strand_the_requests_batched_with_it() -> None:
    batcher, started, release = _held(8, times=10)

    async def main() -> list[int]:
        first = asyncio.create_task(batcher.submit([1]))
        second = asyncio.create_task(batcher.submit([2]))  # joins the same batch
        await asyncio.to_thread(started.wait, 10)
        first.cancel()  # e.g. a timeout around the first caller's request
        release.set()
        return await asyncio.wait_for(second, 10)

    assert asyncio.run(main()) == [20]


def test_a_queue_caller_is_never_refused_as_overloaded() -> None:
    batcher, started, release = _held(1, max_pending=1)

    async def main() -> list[object]:
        tasks = [asyncio.create_task(batcher.submit([i], bounded=False)) for i in range(4)]
        await asyncio.to_thread(started.wait, 10)  # the first runs: the other three wait,
        await _until(lambda: batcher.stats.requests == 4, "all four requests")  # past the limit
        release.set()
        return list(await asyncio.wait_for(asyncio.gather(*tasks), 10))

    assert asyncio.run(main()) == [[0], [1], [2], [3]]


def test_an_idle_endpoints_requests_run_in_their_own_task_and_look_for_company_now_and_then() -> (
    None
):
    """A request on an idle endpoint runs without a turn of the event loop (no leader task, no
    future to wake), except the first and every LOOK_EVERY-th, which give requests that arrived
    with it a turn to join."""
    from runtime.scheduling.batcher import LOOK_EVERY

    async def run(instances: list[int]) -> list[int]:
        return instances  # no await: a run that never gives the loop a turn

    batcher: Batcher[int, list[int]] = Batcher(run, lambda out, s, n: out[s : s + n], 8)

    async def main() -> list[bool]:
        turned = []
        for i in range(2 * LOOK_EVERY + 1):
            ran: list[int] = []
            asyncio.get_running_loop().call_soon(ran.append, 1)
            assert await batcher.submit([i]) == [i]
            turned.append(bool(ran))
            await asyncio.sleep(0)  # the callback's turn, before the next request
        return turned

    turned = asyncio.run(main())
    assert [i for i, t in enumerate(turned) if t] == [0, LOOK_EVERY, 2 * LOOK_EVERY]


def test_a_burst_after_many_lone_requests_is_still_merged() -> None:
    batcher, calls = _batcher(max_batch_size=16)

    async def main() -> list[list[int]]:
        for i in range(5):  # one at a time: they stop looking for company
            await batcher.submit([i])
        return await asyncio.gather(*(batcher.submit([i]) for i in range(100, 110)))

    assert asyncio.run(main()) == [[i * 10] for i in range(100, 110)]
    burst = calls[5:]
    # The first may run alone (it did not look); it runs in a thread, and the rest wait for it
    # and are merged into one run.
    assert len(burst) <= 2 and sorted(i for c in burst for i in c) == list(range(100, 110))


def test_a_cancelled_lone_request_leaves_the_endpoint_working() -> None:
    batcher, started, release = _held(4, holds=0)

    async def main() -> list[int]:
        first = asyncio.create_task(batcher.submit([0]))
        await asyncio.to_thread(started.wait, 10)
        later = asyncio.create_task(batcher.submit([1]))  # waits: the first holds the slot
        first.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await first
        return await asyncio.wait_for(later, 10)

    assert asyncio.run(main()) == [1]


def test_a_request_not_to_merge_shares_no_run_and_its_failure_is_not_run_again() -> None:
    """Its caller isolates its failures itself (the rows service halves): it waits in line
    with the others, but nothing is merged with it, even while a batch waits for company."""
    batcher, calls = _batcher(max_batch_size=16, wait_s=0.05, poison=13)

    async def main() -> list[object]:
        return await asyncio.gather(
            batcher.submit([1]),
            batcher.submit([12, 13], merge=False),
            batcher.submit([2]),
            batcher.submit([14], merge=False),
            batcher.submit([3]),
            return_exceptions=True,
        )

    one, bad, two, fourteen, three = asyncio.run(main())
    assert (one, two, three, fourteen) == ([10], [20], [30], [140])
    assert isinstance(bad, ValueError) and "13" in str(bad)
    assert [12, 13] in calls and [14] in calls and calls.count([12, 13]) == 1
    assert not any(set(c) & {12, 13, 14} and len(c) > 2 for c in calls)
    assert sorted(i for c in calls if set(c) <= {1, 2, 3} for i in c) == [1, 2, 3]


def test_a_cancelled_lone_requests_run_keeps_its_slot_until_its_thread_ends() -> None:
    """A thread cannot be stopped: cancelled while its run is in one, the request's run still
    holds the endpoint's slot, so the next request waits for it instead of running beside it
    (max_concurrency is a promise to the model's memory and CPU)."""
    started, release = threading.Event(), threading.Event()
    lock = threading.Lock()
    active, peak = 0, 0

    def run(instances: list[int]) -> list[int]:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        if instances == [0]:
            started.set()
            release.wait(10)
        with lock:
            active -= 1
        return instances

    batcher: Batcher[int, list[int]] = Batcher(run, lambda out, s, n: out[s : s + n], 4)

    async def main() -> list[int]:
        first = asyncio.create_task(batcher.submit([0]))
        await asyncio.to_thread(started.wait, 10)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        second = asyncio.create_task(batcher.submit([1]))
        await _until(lambda: batcher.stats.requests == 2, "the second request")
        for _ in range(20):
            await asyncio.sleep(0)
        assert not second.done() and peak == 1  # waits for the first run's thread
        release.set()
        return await asyncio.wait_for(second, 10)

    assert asyncio.run(main()) == [1]
    assert peak == 1


def test_an_idle_request_that_can_run_now_runs_on_the_callers_task_and_the_rest_wait() -> None:
    """``run_now`` serves an idle endpoint's request directly (no task, future or turn of the
    loop), except when it looks for company, when others wait, or when it answers NOT_NOW."""
    from runtime.scheduling import NOT_NOW, NotNow
    from runtime.scheduling.batcher import LOOK_EVERY

    now_calls: list[list[int]] = []
    can = [True]

    def run_now(instances: list[int]) -> list[int] | NotNow:
        now_calls.append(list(instances))
        return [i * 100 for i in instances] if can[0] else NOT_NOW

    batcher, calls = _batcher(max_batch_size=8)
    batcher._run_now = run_now

    async def main() -> tuple[list[list[int]], list[list[int]]]:
        alone = [await batcher.submit([i]) for i in range(LOOK_EVERY + 1)]
        can[0] = False
        refused = await batcher.submit([99])
        can[0] = True
        together = await asyncio.gather(*(batcher.submit([i]) for i in range(200, 204)))
        return [*alone, refused], together

    alone, together = asyncio.run(main())
    # The first request looks for company (the long way); the next LOOK_EVERY - 1 run now,
    # the LOOK_EVERY-th looks again; then one that cannot run now goes the long way.
    assert alone[0] == [0] and alone[LOOK_EVERY] == [LOOK_EVERY * 10]
    assert alone[1:LOOK_EVERY] == [[i * 100] for i in range(1, LOOK_EVERY)]
    assert alone[-1] == [990]
    assert now_calls[: LOOK_EVERY - 1] == [[i] for i in range(1, LOOK_EVERY)]
    assert [99] in now_calls and [99] in calls
    # Arriving together, each runs now in its turn: a run that never waits leaves no one
    # waiting, so there is nothing to merge.
    assert together == [[i * 100] for i in range(200, 204)]
    assert batcher.stats.requests == LOOK_EVERY + 2 + 4


def test_run_now_is_not_asked_while_a_run_goes_on_nor_with_telemetry_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request arriving while another's run goes on in a thread waits its turn in line, and
    a traced one takes the long way (its run gets the batch's span): neither is run now."""
    from runtime import telemetry
    from runtime.scheduling import NOT_NOW, NotNow

    batcher, started, release = _held(8, holds=0)
    asked: list[list[int]] = []

    def run_now(instances: list[int]) -> list[int] | NotNow:
        asked.append(list(instances))
        return NOT_NOW if 0 in instances else [i * 100 for i in instances]

    batcher._run_now = run_now

    async def main() -> list[list[int]]:
        assert await batcher.submit([1]) == [1]  # the first looks for company: the long way
        blocked = asyncio.create_task(batcher.submit([0]))  # refused now: runs in a thread
        await asyncio.to_thread(started.wait, 10)
        waiting = asyncio.create_task(batcher.submit([2]))
        await _until(lambda: len(batcher._pending) == 1, "the request queued")
        release.set()
        # 2 found company: the next looks for more (the long way), the one after runs now.
        return [await blocked, await waiting, await batcher.submit([3]), await batcher.submit([5])]

    on = type("On", (telemetry.Telemetry,), {"on": True})()
    assert asyncio.run(main()) == [[0], [2], [3], [500]]
    assert asked == [[0], [5]]  # never asked for 2, which waited its turn
    monkeypatch.setattr(telemetry, "_current", on)
    assert asyncio.run(batcher.submit([4])) == [4] and asked == [[0], [5]]

"""Latency the batcher can promise: deadlines (answered at the deadline, work not started by
then never started), interactive requests ahead of bulk work (which is slowed, never starved),
and a latency target that sheds what cannot make it."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from runtime.errors import BadRequest, DeadlineExceeded, Shed
from runtime.scheduling import BULK_AFTER, Batcher, Deadline, RunTimes, deadlines, placement
from runtime.scheduling.placement import in_thread


def _held(
    max_batch_size: int = 4,
    target_s: float | None = None,
    concurrency: int = 1,
    max_wait_s: float = 0.0,
) -> tuple[Batcher[int, list[int]], list[list[int]], threading.Event, threading.Event]:
    """A batcher whose runs of instance 0 set ``started`` and wait for ``release``; each run's
    instances are noted in ``calls``."""
    calls: list[list[int]] = []
    started, release = threading.Event(), threading.Event()

    def run(instances: list[int]) -> list[int]:
        calls.append(list(instances))
        if 0 in instances:
            started.set()
            release.wait(10)
        return [i * 10 for i in instances]

    batcher = Batcher(
        run, lambda out, s, n: out[s : s + n], max_batch_size, latency_target_s=target_s,
        join=lambda parts: [x for p in parts for x in p], max_concurrency=concurrency,
        max_wait_s=max_wait_s,
    )  # fmt: skip
    return batcher, calls, started, release


async def _started(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, 10)


def test_a_request_waiting_past_its_deadline_is_answered_then_and_never_run() -> None:
    batcher, calls, started, release = _held()

    async def main() -> tuple[float, BaseException | None]:
        busy = asyncio.ensure_future(batcher.submit([0]))  # holds the one run slot
        await _started(started)
        begun = time.monotonic()
        try:
            await batcher.submit([7], deadline=Deadline.after(50))
            caught = None
        except DeadlineExceeded as exc:
            caught = exc
        waited = time.monotonic() - begun
        release.set()
        await busy
        await batcher.submit([8])  # the endpoint goes on
        return waited, caught

    waited, caught = asyncio.run(main())
    assert isinstance(caught, DeadlineExceeded) and caught.status == 504
    assert caught.headers() == {"Retry-After": "1"}
    assert waited < 5  # at the deadline, long before the run ahead of it ended (10 s)
    assert [7] not in calls and [8] in calls


def test_a_deadline_already_past_is_refused_without_a_run() -> None:
    batcher, calls, _, _ = _held()
    with pytest.raises(DeadlineExceeded):
        asyncio.run(batcher.submit([3], deadline=Deadline(time.monotonic() - 1, 5)))
    assert calls == []


def test_interactive_requests_go_ahead_of_bulk_work_which_is_never_starved() -> None:
    batcher, calls, started, release = _held(max_batch_size=1)

    async def main() -> None:
        busy = asyncio.ensure_future(batcher.submit([0]))
        await _started(started)
        bulk = [asyncio.ensure_future(batcher.submit([100 + i], bulk=True)) for i in range(2)]
        await asyncio.sleep(0)
        asks = [asyncio.ensure_future(batcher.submit([1 + i])) for i in range(BULK_AFTER + 2)]
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(busy, *bulk, *asks)

    asyncio.run(main())
    order = [c[0] for c in calls[1:]]
    # BULK_AFTER interactive runs first, then the oldest bulk one, then the rest by priority.
    assert order[:BULK_AFTER] == list(range(1, BULK_AFTER + 1))
    assert order[BULK_AFTER] == 100
    assert order[BULK_AFTER + 1 :] == [BULK_AFTER + 1, BULK_AFTER + 2, 101]


def test_bulk_work_not_to_merge_runs_a_batch_at_a_time_with_requests_between() -> None:
    batcher, calls, started, release = _held(max_batch_size=4)

    async def main() -> list[int]:
        busy = asyncio.ensure_future(batcher.submit([0]))
        await _started(started)
        rows = asyncio.ensure_future(batcher.submit(list(range(200, 212)), merge=False, bulk=True))
        await asyncio.sleep(0)
        ask = asyncio.ensure_future(batcher.submit([5]))
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(busy, ask)
        return await rows

    scored = asyncio.run(main())
    assert scored == [i * 10 for i in range(200, 212)]
    assert [len(c) for c in calls[1:]] == [1, 4, 4, 4] and calls[1] == [5]


def test_with_a_latency_target_a_request_that_cannot_make_it_is_shed_at_once() -> None:
    batcher, calls, started, release = _held(max_batch_size=2, target_s=0.05)
    for n in (1, 2, 2, 1):  # runs of about 40 ms each
        batcher.run_times.learn(n, 0.04)

    async def main() -> list[object]:
        busy = asyncio.ensure_future(batcher.submit([0]))
        await _started(started)
        deadline = Deadline.after(50)
        first = asyncio.ensure_future(batcher.submit([1], deadline=deadline))
        await asyncio.sleep(0)
        outcomes = await asyncio.gather(
            *(batcher.submit([i], deadline=Deadline.after(50)) for i in range(2, 8)),
            return_exceptions=True,
        )
        release.set()
        await busy
        outcomes.append(await asyncio.gather(first, return_exceptions=True))
        return outcomes

    outcomes = asyncio.run(main())
    shed = [o for o in outcomes if isinstance(o, Shed)]
    assert shed and all(o.status == 503 and o.headers() == {"Retry-After": "1"} for o in shed)
    assert "ms left of the request's deadline (the endpoint's target is 50 ms)" in shed[0].message
    assert shed[0].detail["expected_ms"] > shed[0].detail["left_ms"] > 0
    refused = {i for i, o in zip(range(2, 8), outcomes, strict=False) if isinstance(o, Shed)}
    assert not refused & {i for c in calls for i in c}  # never run


def test_a_request_too_large_for_its_deadline_on_an_idle_endpoint_is_told_so_not_to_retry() -> None:
    # It was told "the endpoint is at capacity ... retry shortly", and a retry met the same.
    batcher, calls, _, _ = _held(max_batch_size=2, target_s=0.05)
    for n in (1, 2, 2, 1):  # runs of about 40 ms each
        batcher.run_times.learn(n, 0.04)
    batcher.ran(2, 0.04)  # just now: no probe of the estimate yet
    with pytest.raises(Shed) as shed:
        asyncio.run(batcher.submit(list(range(1, 9)), deadline=Deadline.after(50)))
    assert "with nothing ahead of it, an answer would take about" in shed.value.message
    assert shed.value.message.endswith("it needs a longer deadline, or fewer instances per request")
    assert shed.value.detail["alone"] is True
    assert calls == []


def test_with_a_latency_target_a_request_no_run_could_answer_in_time_is_not_run() -> None:
    """Its caller gets the 504 once the line reaches it, not a run's worth of work later: under
    overload, a run for an answer that comes too late is taken from those that would not."""
    batcher, calls, started, release = _held(max_batch_size=4, target_s=5.0)
    for n, seconds in ((1, 0.5), (2, 1.0), (4, 2.0)):  # half a second an instance
        batcher.run_times.learn(n, seconds)

    async def main() -> list[object]:
        busy = asyncio.ensure_future(batcher.submit([0]))
        await _started(started)
        late = asyncio.ensure_future(batcher.submit([1], deadline=Deadline.after(1000)))
        free = asyncio.ensure_future(batcher.submit([2]))  # no deadline: always runs
        await asyncio.sleep(0.6)  # 0.4 s left to [1]: less than its run takes
        release.set()
        await busy
        return await asyncio.gather(late, free, return_exceptions=True)

    began = time.monotonic()
    late, free = asyncio.run(main())
    assert isinstance(late, DeadlineExceeded) and late.headers() == {"Retry-After": "1"}
    assert time.monotonic() - began < 0.95  # when the line reached it, before its deadline
    assert free == [20]
    assert not any(1 in c for c in calls) and [2] in calls


def test_with_a_latency_target_a_batch_ends_where_its_run_would_miss_a_deadline_in_it() -> None:
    batcher, calls, started, release = _held(max_batch_size=4, target_s=10.0)
    for n, seconds in ((1, 1.0), (2, 2.0), (4, 4.0)):  # a second an instance
        batcher.run_times.learn(n, seconds)

    async def main() -> list[object]:
        busy = asyncio.ensure_future(batcher.submit([0]))
        await _started(started)
        due = asyncio.ensure_future(batcher.submit([1], deadline=Deadline.after(2500)))
        await asyncio.sleep(0)
        rest = [asyncio.ensure_future(batcher.submit([i])) for i in (2, 3)]
        await asyncio.sleep(0)
        release.set()
        await busy
        return await asyncio.gather(due, *rest)

    assert asyncio.run(main()) == [[10], [20], [30]]
    # Three instances would take 3 s, past [1]'s 2.5 s: two run with it, the third after.
    assert calls[1:] == [[1, 2], [3]]


def test_run_times_are_fitted_as_a_line_through_the_sizes_seen() -> None:
    times = RunTimes()
    assert times.expect(8) is None
    for n in (1, 2, 4, 8, 16, 32) * 3:
        times.learn(n, 0.001 + 0.0005 * n)
    assert times.expect(64) == pytest.approx(0.033, rel=0.01)
    assert times.expect(1) == pytest.approx(0.0015, rel=0.05)


def test_with_a_latency_target_a_wait_for_company_ends_in_time_for_the_deadlines_taken() -> None:
    # A wait of 3 s for company: longer than [1]'s deadline.
    batcher, calls, started, release = _held(target_s=10.0, max_wait_s=3.0)
    for n, seconds in ((1, 0.1), (2, 0.2), (4, 0.4)):
        batcher.run_times.learn(n, seconds)

    async def main() -> tuple[list[object], float]:
        busy = asyncio.ensure_future(batcher.submit([0]))
        await _started(started)
        due = asyncio.ensure_future(batcher.submit([1], deadline=Deadline.after(1500)))
        rest = asyncio.ensure_future(batcher.submit([2]))
        await asyncio.sleep(0)
        began = time.monotonic()
        release.set()
        await busy
        answers = await asyncio.gather(due, rest, return_exceptions=True)
        return answers, time.monotonic() - began

    answers, took = asyncio.run(main())
    assert answers == [[10], [20]]  # run before [1]'s deadline, not at the wait's end
    assert took < 1.5 and [1, 2] in calls


def test_run_times_learnt_after_an_estimate_change_the_next_one() -> None:
    times = RunTimes()
    for n in (1, 2, 4):
        times.learn(n, 0.01 * n)
    assert times.expect(8) == pytest.approx(0.08)
    for _ in range(20):  # runs twice as long since
        for n in (1, 2, 4):
            times.learn(n, 0.02 * n)
    assert times.expect(8) == pytest.approx(0.16, rel=0.01)
    times.forget()
    assert times.expect(8) is None


def test_a_fit_that_a_learn_overtook_is_used_once_not_kept() -> None:
    """Runs are learnt on worker threads while the loop estimates: a learn that lands while
    a line is fitted must not be hidden behind that stale line until the next learn."""

    class Overtaken(RunTimes):
        racing = True

        def _fit(self) -> tuple[float, float]:
            line = super()._fit()  # fitted from the runs before the learns below
            if self.racing:  # another thread's learns, meanwhile: runs twice as long
                self.racing = False
                for _ in range(20):
                    for n in (1, 2, 4):
                        self.learn(n, 0.02 * n)
            return line

    times = Overtaken()
    for n in (1, 2, 4):
        times.learn(n, 0.01 * n)
    assert times.expect(8) == pytest.approx(0.08)  # the fit it made, used once
    assert times.expect(8) == pytest.approx(0.16, rel=0.01)  # fitted anew, not the stale one


def test_a_target_counts_the_instances_waiting_now_not_those_that_waited_before() -> None:
    """Requests that left the line (run, or answered at their deadline) no longer count in
    the estimate a new request is shed by."""
    batcher, calls, started, release = _held(max_batch_size=1, target_s=5.0)
    for n in (1, 1, 1):
        batcher.run_times.learn(n, 0.15)  # 150 ms a run

    async def main() -> list[int]:
        busy = asyncio.ensure_future(batcher.submit([0]))
        await _started(started)
        waiting = [asyncio.ensure_future(batcher.submit([i])) for i in (1, 2, 3)]
        gone = asyncio.ensure_future(batcher.submit([4], deadline=Deadline.after(5000)))
        await asyncio.sleep(0)
        assert batcher._pending.instances == 4  # [1], [2], [3] and [4] wait
        gone.cancel()  # its caller went away: it leaves the line unrun
        release.set()
        await busy
        await asyncio.gather(*waiting)
        # Idle again, nothing waiting: a run (150 ms) is expected within the 250 ms.
        return await batcher.submit([5], deadline=Deadline.after(250))

    assert asyncio.run(main()) == [50]
    assert [4] not in calls


def test_one_size_seen_says_nothing_of_larger_batches() -> None:
    """Runs of one instance only (an endpoint that was quiet) must not make a batch of 64
    look 64 times as long: that would shed the load batching is there to serve."""
    times = RunTimes()
    for _ in range(10):
        times.learn(1, 0.0006)
    assert times.expect(64) == pytest.approx(0.0006)


def test_a_run_that_gets_its_slot_after_its_requests_deadline_is_not_started(
    tmp_path: Path,
) -> None:
    from runtime.scheduling.deadlines import _deadline
    from tests.models.onnx_builders import adder
    from tests.services.pairs import services

    app = services(adder(tmp_path / "adder.onnx"), tmp_path)
    runs = app.predict.scorer("pairs")._runs
    token = _deadline.set(Deadline(time.monotonic() - 0.001, 5))
    try:
        with pytest.raises(DeadlineExceeded), runs.held():
            raise AssertionError("the run started")
    finally:
        _deadline.reset(token)
    with runs.held():  # the slot was given back
        pass


@pytest.mark.parametrize(
    "text",
    ["0", "-5", "nan", "inf", "1e400", "soon", "9" * 500, "86400001", "1_000", "5e1", "+50",
     "\u0665\u0660", "0x10", "50ms", "", "."],
)  # fmt: skip
def test_a_timeout_header_that_is_no_usable_number_is_refused_by_name(text: str) -> None:
    # Python's float took 1_000, 5e1 and another script's digits (Arabic-Indic 50).
    with pytest.raises(BadRequest, match="x-mlfn-timeout-ms must be a positive decimal number"):
        Deadline.asked(text, None, "x-mlfn-timeout-ms")
    assert Deadline.asked(None, None, "x-mlfn-timeout-ms") is None
    assert Deadline.asked(None, 20, "x-mlfn-timeout-ms") is not None


@pytest.mark.parametrize("text", ["50", "12.5", ".5", "86400000", " 50 "])
def test_a_timeout_header_of_decimal_milliseconds_is_taken(text: str) -> None:
    deadline = Deadline.asked(text, None, "x-mlfn-timeout-ms")
    assert deadline is not None and deadline.budget_ms == float(text)


def test_a_refused_timeout_header_is_echoed_as_its_bytes_were_sent() -> None:
    # A header's bytes reach the app as Latin-1 text: echoed as such, escaped, not mangled.
    sent = "\u0665\u0660".encode().decode("latin-1")
    with pytest.raises(BadRequest) as refused:
        Deadline.asked(sent, None, "x-mlfn-timeout-ms")
    assert str(refused.value).endswith("not '\\xd9\\xa5\\xd9\\xa0'")


def test_a_deadline_counts_from_when_the_host_says_the_request_arrived() -> None:
    now = time.monotonic()
    with deadlines.arrived(now - 0.03):  # it waited 30 ms before its function was called
        assert Deadline.after(50).at == pytest.approx(now + 0.02)
        assert Deadline.asked(None, 50, "x").at == pytest.approx(now + 0.02)  # type: ignore[union-attr]
    assert Deadline.after(50).at >= now + 0.05  # no host said: from now


def test_the_loop_s_lag_in_resuming_a_threads_waiter_is_learnt_and_fades(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def resumed_late() -> None:
        waiter = asyncio.ensure_future(in_thread(lambda: None))
        await asyncio.sleep(0)  # the thread has its work, done in well under 100 ms
        time.sleep(0.1)  # the loop is busy meanwhile: it resumes the waiter 100 ms late
        await waiter

    lag = placement._Lag(half_life_s=0.5)
    monkeypatch.setattr(placement, "_lag", lag)
    asyncio.run(resumed_late())
    learnt = lag.now(lag._at)
    # A moving average (a fifth of each), moved by one lag of about 100 ms, which counts as
    # MAX_LAG_SAMPLE_S at most: one stall moves it that little.
    assert 0.01 < learnt <= 0.2 * placement.MAX_LAG_SAMPLE_S
    assert lag.now(lag._at + 1.0) == pytest.approx(learnt / 4)  # two half-lives: a quarter


def test_with_a_latency_target_a_request_the_loop_s_lag_would_make_late_is_shed_unless_idle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Runs of 100 ms leave room in a 500 ms budget; a loop that lately took 450 ms to resume
    # a task after its run does not, unless the endpoint is idle (the run starts at once).
    batcher, calls, started, release = _held(max_batch_size=2, target_s=0.5)
    for n in (1, 2, 2, 1):
        batcher.run_times.learn(n, 0.1)
    lag = 0.0
    monkeypatch.setattr("runtime.scheduling.batcher.loop_lag", lambda: lag)

    async def beside_a_run(i: int) -> list[int]:
        busy = asyncio.ensure_future(batcher.submit([0]))  # the endpoint is not idle
        await _started(started)
        asyncio.get_running_loop().call_later(0.01, release.set)
        try:
            return await batcher.submit([i], deadline=Deadline.after(500))
        finally:
            await busy
            release.clear()
            started.clear()

    assert asyncio.run(beside_a_run(3)) == [30]
    lag = 0.45
    assert asyncio.run(batcher.submit([4], deadline=Deadline.after(500))) == [40]  # idle
    with pytest.raises(Shed):
        asyncio.run(beside_a_run(5))
    assert [5] not in calls


def test_the_loop_s_lag_is_not_counted_for_a_request_whose_run_starts_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two concurrent runs: beside one in flight, nothing pending, a request's run starts at
    # once, as on an idle endpoint; only a request that waits for a run slot waits for the loop.
    batcher, calls, started, release = _held(max_batch_size=2, target_s=0.5, concurrency=2)
    for n in (1, 2, 2, 1):
        batcher.run_times.learn(n, 0.1)
    monkeypatch.setattr("runtime.scheduling.batcher.loop_lag", lambda: 0.45)

    async def beside_one_run() -> list[int]:
        busy = asyncio.ensure_future(batcher.submit([0]))
        await _started(started)
        try:
            return await batcher.submit([6], deadline=Deadline.after(500))
        finally:
            release.set()
            await busy

    assert asyncio.run(beside_one_run()) == [60]
    assert [6] in calls


def test_a_thread_s_failure_after_its_waiter_was_cancelled_is_not_logged_as_lost() -> None:
    # A request answered 504 (its task cancelled) while its run's thread still waits for a
    # slot; the thread then meets the passed deadline and fails. No one awaits that outcome:
    # asyncio must not log "Future exception was never retrieved" for it.
    import gc

    reported: list[dict[str, Any]] = []
    release = threading.Event()

    def fails() -> None:
        release.wait(10)
        raise DeadlineExceeded(1.0)

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(
            lambda _, context: reported.append(context)
        )
        waiting = asyncio.ensure_future(in_thread(fails))
        await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        release.set()
        for _ in range(200):  # the thread's failure reaches the loop
            await asyncio.sleep(0.005)
        gc.collect()

    asyncio.run(main())
    assert [c["message"] for c in reported] == []


def test_run_times_learnt_in_a_stall_do_not_shed_every_request_for_good() -> None:
    # Runs learnt at 300 ms (a stall, a loaded machine) against a 50 ms target: every request
    # would be shed, nothing run, nothing learnt again. An idle endpoint that ran nothing for a
    # while runs one anyway; its runs teach the real time, and requests are served again.
    batcher, _, _, _ = _held(max_batch_size=2, target_s=0.05)
    for n in (1, 2, 2, 1):
        batcher.run_times.learn(n, 0.3)

    async def main() -> list[object]:
        outcomes: list[object] = []
        for i in range(1, 60):
            try:
                outcomes.append(await batcher.submit([i], deadline=Deadline.after(50)))
                batcher.ran(1, 0.001)  # as the endpoint's own timing tells it
            except Shed as shed:
                outcomes.append(shed)
            await asyncio.sleep(0.02)
        return outcomes

    outcomes = asyncio.run(main())
    assert [o for o in outcomes if isinstance(o, Shed)] == []  # the first ran: learnt anew
    assert (batcher.run_times.expect(1) or 1.0) < 0.01


def test_a_request_is_run_against_the_estimate_once_a_while_not_every_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A probe is run when the endpoint ran nothing for PROBE_AFTER_S: right after a run, a
    # request the estimate says is late is shed as before.
    from runtime.scheduling import batcher as batching

    monkeypatch.setattr(batching, "PROBE_AFTER_S", 1.0)
    batcher, calls, _, _ = _held(max_batch_size=2, target_s=0.05)

    def stale() -> None:
        for n in (1, 2, 2, 1):
            batcher.run_times.learn(n, 0.3)

    async def main() -> list[bool]:
        served = []
        for i in (1, 2, 3):
            stale()
            if i == 3:
                await asyncio.sleep(1.1)  # nothing run for longer than PROBE_AFTER_S
            try:
                await batcher.submit([i], deadline=Deadline.after(50))
                served.append(True)
            except Shed:
                served.append(False)
        return served

    assert asyncio.run(main()) == [True, False, True]
    assert calls == [[1], [3]]

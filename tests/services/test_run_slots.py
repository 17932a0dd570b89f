"""An endpoint's run slot between a request's run and bulk work scored as columns (a file's
slabs, Spark partitions): the bulk calls take the slot one call at a time, behind any request
that waits for it; a request waits for one bulk call at most."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from runtime.endpoint import Limits
from runtime.errors import DeadlineExceeded, Overloaded
from runtime.models.onnx_model import OnnxModel
from runtime.scheduling.run_times import BULK_REST, BULK_REST_BUSY, RECENT_S, bulk_rest
from runtime.services import predict as predict_module
from tests.models.onnx_builders import adder
from tests.services.pairs import Pair, Sum, by_columns, by_rows, pairs, services


def _around(runs: Any, order: list[str], request: Callable[[], object]) -> None:
    """Two bulk calls on a thread, the first holding its slot until a request's run waits for
    one; ``request`` started on another thread once the first call has begun; both joined."""
    done = threading.Event()

    def first_call() -> None:
        order.append("bulk 1")
        for _ in range(2000):  # until the request waits for the slot
            if runs._urgent:
                break
            time.sleep(0.005)
        order.append("bulk 1 ends")  # the request has not run beside it

    def bulk() -> None:
        runs.bulk_call(first_call)
        runs.bulk_call(order.append, "bulk 2")  # behind the request
        done.set()

    first = threading.Thread(target=bulk)
    first.start()
    while not order:
        time.sleep(0.001)
    second = threading.Thread(target=request)
    second.start()
    assert done.wait(30)
    first.join()
    second.join()


def test_a_waiting_request_runs_between_two_bulk_calls(tmp_path: Path) -> None:
    app = services(adder(tmp_path / "adder.onnx"), tmp_path, predict=by_columns, columnar=True)
    runs = app.predict.scorer("pairs")._runs
    order: list[str] = []

    def request() -> None:
        with runs.held():
            order.append("request")

    _around(runs, order, request)
    assert order == ["bulk 1", "bulk 1 ends", "request", "bulk 2"]


def test_bulk_calls_take_the_slot_anyway_after_their_patience(tmp_path: Path) -> None:
    app = services(adder(tmp_path / "adder.onnx"), tmp_path, predict=by_columns, columnar=True)
    runs = app.predict.scorer("pairs")._runs
    runs._urgent = 1  # a request that never stops waiting (as a flood of them would)
    began = time.monotonic()
    waited = runs.bulk_call(lambda: time.monotonic() - began)
    assert waited >= predict_module.BULK_PATIENCE_S * 0.9


def _infer_body() -> bytes:
    tensor = {"shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}
    inputs = [{"name": "x", **tensor}, {"name": "y", **tensor}]
    return json.dumps({"inputs": inputs}).encode()


def test_a_waiting_v2_infer_runs_between_two_bulk_calls_and_makes_bulk_work_rest(
    tmp_path: Path,
) -> None:
    # V2's infer shares the endpoint's run slots with its predict route: it goes ahead of bulk
    # calls waiting for a slot, and bulk work rests while such requests come.
    app = services(adder(tmp_path / "adder.onnx"), tmp_path, predict=by_columns, columnar=True)
    runs = app.predict.scorer("pairs")._runs
    order: list[str] = []
    service = app.infer
    run = service._run  # called with the slot and the model held

    def counted(*args: Any) -> Any:
        order.append("infer")
        return run(*args)

    service._run = counted  # type: ignore[method-assign]
    answers: list[bytes] = []

    def infer() -> None:
        answers.append(asyncio.run(service.infer_body("pairs", _infer_body(), None))[0])

    assert runs.interactive_at() == 0.0  # no request yet: bulk work does not rest
    before = time.monotonic()
    _around(runs, order, infer)
    assert order == ["bulk 1", "bulk 1 ends", "infer", "bulk 2"]
    assert json.loads(answers[0])["outputs"][0]["data"] == [2.0, 4.0]
    assert runs.interactive_at() >= before  # when it came: bulk calls rest after it


def test_v2_infer_on_an_async_predicts_endpoint_takes_no_run_slot(tmp_path: Path) -> None:
    # An async predict's runs take no slot, so neither do V2's beside them: a slot held
    # elsewhere does not hold them up.
    async def by_rows_async(rows: list[Pair], model: OnnxModel) -> list[Sum]:
        return by_rows(rows, model)

    app = services(adder(tmp_path / "adder.onnx"), tmp_path, predict=by_rows_async)
    runs = app.predict.scorer("pairs")._runs
    assert runs._slots.acquire(blocking=False)  # as a bulk call of a sync predict would
    answers: list[bytes] = []

    def infer() -> None:
        answers.append(asyncio.run(app.infer.infer_body("pairs", _infer_body(), None))[0])

    asking = threading.Thread(target=infer, daemon=True)
    asking.start()
    asking.join(30)
    answered_while_held = bool(answers)
    runs.release()
    asking.join(30)
    assert answered_while_held
    assert json.loads(answers[0])["outputs"][0]["data"] == [2.0, 4.0]
    assert runs.interactive_at() > 0.0  # bulk work rests all the same


def test_a_bulk_call_rests_after_it_while_interactive_requests_come(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = services(adder(tmp_path / "adder.onnx"), tmp_path, predict=by_columns, columnar=True)
    runs = app.predict.scorer("pairs")._runs
    rests: list[tuple[float, float]] = []  # (the call's time, its rest)

    def rest(ran_s: float, interactive_at: float, busy: float) -> float:
        rests.append((ran_s, bulk_rest(ran_s, interactive_at, busy)))
        assert runs._slots.acquire(blocking=False)  # the slot given back before the rest
        runs.release()
        return rests[-1][1]

    monkeypatch.setattr(predict_module, "bulk_rest", rest)
    runs.bulk_call(time.sleep, 0.01)  # no interactive request yet: no rest
    runs.interactive_at = time.monotonic  # one came just now
    runs.bulk_call(time.sleep, 0.01)
    runs.busy = SimpleNamespace(share=lambda: 0.5)  # in flight half the time: a longer rest
    runs.bulk_call(time.sleep, 0.01)
    (first, none), (second, rested), (third, longer) = rests
    assert first >= 0.01 and none == 0.0
    assert second >= 0.01 and rested == second * BULK_REST
    assert longer == third * (BULK_REST + 0.5 * BULK_REST_BUSY)


def test_the_share_of_time_interactive_requests_are_in_flight_is_learnt_per_window(
    tmp_path: Path,
) -> None:
    # Bulk work rested a quarter of the time however busy the requests beside it were: a
    # client calling one request after another saw its p99 3-4x idle beside a batch file.
    app = services(adder(tmp_path / "adder.onnx"), tmp_path)
    scorer = app.predict.scorer("pairs")
    busy = scorer._runs.busy
    assert busy is scorer.busy is scorer.batcher.busy  # one count for the endpoint's work
    assert busy.share() == 0.0
    began = time.monotonic()
    while time.monotonic() - began < 0.6:  # over a window, one request after another
        asyncio.run(scorer.predict_body(_body(pairs(1))))
    assert busy.seconds > 0  # their time in flight, counted by the scorer
    busy._at -= RECENT_S  # the window ends: its share is taken (and the count restarts)
    share = busy.share()
    assert 0.0 < share <= 1.0 and busy.seconds == 0.0
    asyncio.run(app.infer.infer_body("pairs", _infer_body(), None))
    assert busy.seconds > 0  # V2's requests count too
    # A share is of the time since the window began, however long: 0.3 s in 3 s is 0.1.
    busy.seconds, busy._at = 0.3, time.monotonic() - 3.0
    assert 0.09 < busy.share() < 0.11


def _executor_threads() -> int:
    """Threads in the loop's default executor (asyncio's rule)."""
    return min(32, (os.cpu_count() or 1) + 4)


@pytest.mark.parametrize("deadline", [None, "50"], ids=["no-deadline", "answered-504"])
def test_v2_requests_waiting_for_a_run_hold_no_worker_thread_and_a_full_line_is_refused(
    tmp_path: Path, deadline: str | None
) -> None:
    # They waited in worker threads of the loop's default executor (CPUs + 4 of them): a
    # backlog of V2 requests to one endpoint held them all, and every other request that
    # needs one (another endpoint's predict, a model's load) waited behind it for seconds.
    # Answered 504 at their deadlines, each left a thread waiting for the slot behind it.
    # And V2 had no bound on its backlog: max_pending_requests holds for it too.
    waiting = _executor_threads() + 2  # more than the executor's threads
    app = services(
        adder(tmp_path / "adder.onnx"), tmp_path, limits=Limits(max_pending_requests=waiting)
    )
    runs = app.predict.scorer("pairs")._runs
    app.predict.scorer("pairs").load()

    async def main() -> tuple[list[Any], float]:
        assert runs._slots.acquire(blocking=False)  # a long run holds the endpoint's slot
        backlog = []
        for _ in range(waiting + 2):
            backlog.append(
                asyncio.ensure_future(
                    app.infer.infer_body("pairs", _infer_body(), None, None, deadline)
                )
            )
            if deadline is not None:  # one after another: each 504 in its own turn of the loop
                await asyncio.sleep(0.01)
        try:
            await asyncio.sleep(0.3)  # past the deadlines, when there are
            begun = time.monotonic()
            await asyncio.wait_for(asyncio.to_thread(lambda: None), 10)  # a thread is free
            free_after = time.monotonic() - begun
        finally:
            runs.release()
        return await asyncio.gather(*backlog, return_exceptions=True), free_after

    answers, free_after = asyncio.run(main())
    assert free_after < 5  # at once, not after the backlog (which waits for the slot)
    if deadline is None:
        refused = [a for a in answers if isinstance(a, Overloaded)]
        assert len(refused) == 1 and refused[0].status == 503  # 1 holds its turn, all wait
        scored = [json.loads(a[0])["outputs"][0]["data"] for a in answers if isinstance(a, tuple)]
        assert scored == [[2.0, 4.0]] * (waiting + 1)
    else:  # each answered at its deadline, the first's thread holding the turn meanwhile
        assert all(isinstance(a, DeadlineExceeded) for a in answers)


@pytest.mark.parametrize("behind", [False, True], ids=["idle", "behind-another"])
def test_a_large_requests_chunks_not_started_by_its_deadline_never_start(
    tmp_path: Path, behind: bool
) -> None:
    # All its chunks ran after its 504: hidden load, and the next requests waited (or missed
    # their own deadlines) behind work nobody would read.
    calls: list[int] = []
    gates: dict[int, threading.Event] = {}  # a call's gate, by its rank

    def held(rows: list[Pair], model: OnnxModel) -> list[Sum]:
        calls.append(len(rows))
        gates.setdefault(len(calls), threading.Event()).wait(10)
        return by_rows(rows, model)

    app = services(
        adder(tmp_path / "adder.onnx"), tmp_path, predict=held, limits=Limits(max_batch_size=2)
    )
    scorer = app.predict.scorer("pairs")
    scorer.load()

    async def until(count: int) -> None:
        for _ in range(2000):
            if len(calls) >= count:
                return
            await asyncio.sleep(0.005)

    async def main() -> BaseException | None:
        ahead = None
        if behind:  # a request holding the run: the large one waits in line, then a leader
            ahead = asyncio.ensure_future(scorer.predict_body(_body(pairs(1))))  # runs it
            await until(1)
        large = asyncio.ensure_future(scorer.predict_body(_body(pairs(6)), timeout_ms="1000"))
        if behind:
            await asyncio.sleep(0.05)
            gates.setdefault(1, threading.Event()).set()  # the run ahead ends, the large starts
            await ahead
        await until(len(calls) + 1)
        try:
            await large
            caught = None
        except DeadlineExceeded as exc:
            caught = exc
        for rank in range(1, 9):
            gates.setdefault(rank, threading.Event()).set()
        assert await asyncio.to_thread(scorer._runs._slots.acquire, True, 10)  # runs ended
        scorer._runs.release()
        return caught

    caught = asyncio.run(main())
    assert isinstance(caught, DeadlineExceeded)
    assert calls == ([1, 2] if behind else [2])  # its first chunk, never the other two
    assert asyncio.run(scorer.predict_body(_body(pairs(6)))).predictions  # it goes on


def _body(instances: list[Any]) -> bytes:
    return json.dumps({"instances": instances}).encode()


def test_an_async_predict_past_its_deadline_between_chunks_is_answered_504_not_500(
    tmp_path: Path,
) -> None:
    # An async predict that computes without awaiting: its task never yields, so no cutoff
    # answers it; the chunk loop's check is its answer (it raised RunAbandoned, which the
    # batcher dropped unsettled: InvalidStateError, a 500).
    calls: list[int] = []

    async def busy_async(rows: list[Pair], model: OnnxModel) -> list[Sum]:
        calls.append(len(rows))
        time.sleep(0.5)  # past the deadline, from within its first chunk
        return by_rows(rows, model)

    app = services(
        adder(tmp_path / "adder.onnx"), tmp_path, predict=busy_async,
        limits=Limits(max_batch_size=2),
    )  # fmt: skip
    scorer = app.predict.scorer("pairs")
    scorer.load()
    with pytest.raises(DeadlineExceeded):
        asyncio.run(scorer.predict_body(_body(pairs(6)), timeout_ms="300"))
    assert calls == [2]  # its first chunk, never the other two


def test_a_deadline_shorter_than_the_endpoints_runs_says_so_not_only_retry_shortly(
    tmp_path: Path,
) -> None:
    # A 1 ms budget on a 27 ms model was told "retry shortly", and every retry met the same.
    slow = {"s": 0.2}

    def timed(rows: list[Pair], model: OnnxModel) -> list[Sum]:
        time.sleep(slow["s"])
        return by_rows(rows, model)

    app = services(adder(tmp_path / "adder.onnx"), tmp_path, predict=timed)
    scorer = app.predict.scorer("pairs")
    scorer.load()
    asyncio.run(scorer.predict_body(_body(pairs(1))))  # a run of about 200 ms
    with pytest.raises(DeadlineExceeded) as short:
        asyncio.run(scorer.predict_body(_body(pairs(1)), timeout_ms="50"))
    assert "the endpoint's last run took" in short.value.message
    assert short.value.detail["timeout_ms"] == 50
    assert short.value.detail["last_run_ms"] >= 200
    # A deadline that waiting, not the run, made it miss: retry shortly, as before.
    slow["s"] = 0.0
    asyncio.run(scorer.predict_body(_body(pairs(1))))
    runs = scorer._runs

    async def behind_another_run() -> BaseException | None:
        assert runs._slots.acquire(blocking=False)  # another run holds the slot
        try:
            await scorer.predict_body(_body(pairs(1)), timeout_ms="50")
        except DeadlineExceeded as exc:
            return exc
        finally:
            runs.release()  # before the loop ends: it waits for the request's thread
        return None

    waited = asyncio.run(behind_another_run())
    assert isinstance(waited, DeadlineExceeded)
    assert waited.message.endswith("retry shortly")
    assert "last_run_ms" not in waited.detail

"""An endpoint's run slot between a request's run and bulk work scored as columns (a file's
slabs, Spark partitions): the bulk calls take the slot one call at a time, behind any request
that waits for it; a request waits for one bulk call at most."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runtime.models.onnx_model import OnnxModel
from runtime.scheduling.run_times import BULK_REST, bulk_rest
from runtime.services import predict as predict_module
from tests.models.onnx_builders import adder
from tests.services.pairs import Pair, Sum, by_columns, by_rows, services


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

    def rest(ran_s: float, interactive_at: float) -> float:
        rests.append((ran_s, bulk_rest(ran_s, interactive_at)))
        assert runs._slots.acquire(blocking=False)  # the slot given back before the rest
        runs.release()
        return rests[-1][1]

    monkeypatch.setattr(predict_module, "bulk_rest", rest)
    runs.bulk_call(time.sleep, 0.01)  # no interactive request yet: no rest
    runs.interactive_at = time.monotonic  # one came just now
    runs.bulk_call(time.sleep, 0.01)
    (first, none), (second, rested) = rests
    assert first >= 0.01 and none == 0.0
    assert second >= 0.01 and rested == second * BULK_REST

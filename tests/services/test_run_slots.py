"""An endpoint's run slot between a request's run and bulk work scored as columns (a file's
slabs, Spark partitions): the bulk calls take the slot one call at a time, behind any request
that waits for it; a request waits for one bulk call at most."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from runtime.services import predict as predict_module
from tests.models.onnx_builders import adder
from tests.services.pairs import by_columns, services


def test_a_waiting_request_runs_between_two_bulk_calls(tmp_path: Path) -> None:
    app = services(adder(tmp_path / "adder.onnx"), tmp_path, predict=by_columns, columnar=True)
    runs = app.predict.scorer("pairs")._runs
    order: list[str] = []
    done = threading.Event()

    def bulk() -> None:
        with runs.bulk_slot():
            order.append("bulk 1")
            for _ in range(2000):  # the request is waiting for the slot
                if runs._urgent:
                    break
                time.sleep(0.005)
        with runs.bulk_slot():  # behind the request
            order.append("bulk 2")
        done.set()

    def request() -> None:
        with runs.held():
            order.append("request")

    first = threading.Thread(target=bulk)
    first.start()
    while not order:
        time.sleep(0.001)
    second = threading.Thread(target=request)
    second.start()
    assert done.wait(30)
    first.join()
    second.join()
    assert order == ["bulk 1", "request", "bulk 2"]


def test_bulk_calls_take_the_slot_anyway_after_their_patience(tmp_path: Path) -> None:
    app = services(adder(tmp_path / "adder.onnx"), tmp_path, predict=by_columns, columnar=True)
    runs = app.predict.scorer("pairs")._runs
    runs._urgent = 1  # a request that never stops waiting (as a flood of them would)
    began = time.monotonic()
    with runs.bulk_slot():
        waited = time.monotonic() - began
    assert waited >= predict_module.BULK_PATIENCE_S * 0.9

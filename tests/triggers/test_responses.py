"""The edge where errors become HTTP answers: an overload's answers are logged as a count,
not a line each."""

from __future__ import annotations

import asyncio
import logging
import time

import azure.functions as func
import pytest

from runtime.errors import DeadlineExceeded, Shed, StoreUnavailable
from runtime.triggers import responses


def _request(route: str = "iris") -> func.HttpRequest:
    url = f"http://localhost/api/{route}/predict?sig=secret"
    return func.HttpRequest("POST", url, body=b"")


@pytest.fixture
def tally(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> list[float]:
    """The clock the tally reads (real time until a test moves it)."""
    clock = [0.0]
    counting = responses._OverloadAnswers(0.2, lambda: clock[0] or time.monotonic())
    monkeypatch.setattr(responses, "_overload_answers", counting)
    caplog.set_level(logging.WARNING, "mlfn.http")
    return clock


def test_an_overloads_answers_are_a_line_then_a_count_per_route_and_status(
    tally: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    tally[0] = 1000.0  # a clock that stands still while the answers come
    for _ in range(500):
        assert responses.error_response(_request(), Shed(80, 45, 50)).status_code == 503
    for _ in range(300):
        answer = responses.error_response(_request(), DeadlineExceeded(50))
        assert answer.status_code == 504 and answer.headers["Retry-After"] == "1"
    responses.error_response(_request("other"), Shed(80, 45, 50))
    # The first of each route and status at once, and nothing of the query's secret.
    assert [r.getMessage().split(" -> ")[1][:3] for r in caplog.records] == ["503", "504", "503"]
    assert "/api/other/predict" in caplog.records[2].getMessage()
    assert "secret" not in caplog.text

    tally[0] += 0.25  # the while is over; no event loop here: told with the next answer
    responses.error_response(_request(), Shed(80, 45, 50))
    told = [r.getMessage() for r in caplog.records[3:]]
    assert told[0] == (
        "POST http://localhost/api/iris/predict -> 503: 499 more such answers in the 0.2 s "
        "after the line before"
    )
    assert "-> 503 the endpoint is at capacity" in told[1]


def test_a_count_is_told_when_its_while_ends_on_the_event_loop(
    tally: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    async def burst() -> None:
        for _ in range(3):
            responses.error_response(_request(), DeadlineExceeded(50))
        await asyncio.sleep(0.3)  # no answer after the burst: the loop's timer tells

    asyncio.run(burst())
    assert len(caplog.records) == 2
    assert "-> 504: 2 more such answers" in caplog.records[1].getMessage()


def test_other_server_side_answers_are_logged_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "mlfn.http")
    for _ in range(3):
        failed = StoreUnavailable("the store did not answer")
        assert responses.error_response(_request(), failed).status_code == 503
    assert len(caplog.records) == 3

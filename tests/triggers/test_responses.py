"""The edge where errors become HTTP answers: an overload's answers are logged as a count,
not a line each."""

from __future__ import annotations

import logging

import azure.functions as func
import pytest

from runtime.errors import DeadlineExceeded, Shed, StoreUnavailable
from runtime.triggers import responses


def _request() -> func.HttpRequest:
    return func.HttpRequest("POST", "http://localhost/api/iris/predict?sig=secret", body=b"")


def test_an_overloads_answers_are_one_line_a_while_with_the_count_since(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    tally = responses._OverloadAnswers(every_s=60.0)
    monkeypatch.setattr(responses, "_overload_answers", tally)
    caplog.set_level(logging.WARNING, "mlfn.http")
    for _ in range(500):
        assert responses.error_response(_request(), Shed(80, 50)).status_code == 503
    for _ in range(300):
        answer = responses.error_response(_request(), DeadlineExceeded(50))
        assert answer.status_code == 504 and answer.headers["Retry-After"] == "1"
    assert len(caplog.records) == 1  # the first, at once
    assert "-> 503" in caplog.text and "secret" not in caplog.text

    tally._next = 0.0  # the while is over
    responses.error_response(_request(), Shed(80, 50))
    assert len(caplog.records) == 2
    assert "(799 more overload answers since the last such line)" in caplog.records[1].message


def test_other_server_side_answers_are_logged_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "mlfn.http")
    for _ in range(3):
        failed = StoreUnavailable("the store did not answer")
        assert responses.error_response(_request(), failed).status_code == 503
    assert len(caplog.records) == 3

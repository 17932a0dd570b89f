"""The edge where errors become HTTP answers: JSON responses, and one error path that turns an
``MlfnError`` into its status and body and anything else into a logged 500."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import azure.functions as func

from runtime import redact, telemetry
from runtime.errors import DeadlineExceeded, InternalError, MlfnError, Overloaded

log = logging.getLogger("mlfn.http")

HttpFunction = Callable[[func.HttpRequest], func.HttpResponse]
AsyncHttpFunction = Callable[[func.HttpRequest], Awaitable[func.HttpResponse]]
ErrorBody = Callable[[MlfnError], Any]


def json_response(
    status: int, doc: Any, headers: dict[str, str] | None = None
) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(doc, separators=(",", ":")),
        status_code=status,
        headers=headers,
        mimetype="application/json",
    )


def mlfn_error_body(err: MlfnError) -> Any:
    """mlfn's structured error body: ``{"error": {"type", "message", "detail"?}}``."""
    return {"error": err.to_dict()}


def v2_error_body(err: MlfnError) -> Any:
    """The Open Inference Protocol's error body: ``{"error": "<message>"}``."""
    return {"error": err.message}


def error_response(
    req: func.HttpRequest, exc: Exception, body: ErrorBody = mlfn_error_body
) -> func.HttpResponse:
    """The JSON error response for a runtime error; anything else is a bug: logged with its
    traceback, answered with a 500 that carries none. ``body`` shapes the JSON, which differs
    between protocols."""
    telemetry.current().record_error(exc)  # on the invocation's span, with its class
    if not isinstance(exc, MlfnError):
        log.error("unhandled error in %s %s", req.method, redact.url(req.url), exc_info=exc)
        exc = InternalError()
    elif isinstance(exc, Overloaded | DeadlineExceeded):
        _overload_answers.told(req, exc)
    elif exc.status >= 500:
        log.warning("%s %s -> %d %s", req.method, redact.url(req.url), exc.status, exc.message)
    return json_response(exc.status, body(exc), exc.headers() or None)


class _OverloadAnswers:
    """Answers of an overload (503 shed or refused, 504 past a deadline) logged at most one
    line every ``every_s``, which says how many came since the line before: under overload
    they come by the thousand a second, and a line each is a log storm (on Azure, each line an
    Application Insights trace) that costs the event loop what shedding was to save. The
    Functions host's own line for each invocation still gives each its status."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._next = 0.0
        self._since = 0  # answered since the last line, not logged

    def told(self, req: func.HttpRequest, exc: MlfnError) -> None:
        now = time.monotonic()
        if now < self._next:
            self._since += 1
            return
        self._next = now + self.every_s
        since, self._since = self._since, 0
        more = f" ({since} more overload answers since the last such line)" if since else ""
        log.warning(
            "%s %s -> %d %s%s", req.method, redact.url(req.url), exc.status, exc.message, more
        )


OVERLOAD_LOG_EVERY_S = 5.0
_overload_answers = _OverloadAnswers(OVERLOAD_LOG_EVERY_S)


def guarded(
    fn: Callable[[func.HttpRequest], Awaitable[func.HttpResponse]],
    body: ErrorBody = mlfn_error_body,
) -> AsyncHttpFunction:
    """An HTTP function that answers every exception of ``fn`` with ``error_response``."""

    async def handler(req: func.HttpRequest) -> func.HttpResponse:
        try:
            return await fn(req)
        except Exception as exc:
            return error_response(req, exc, body)

    return handler

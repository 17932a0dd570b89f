"""The edge where errors become HTTP answers: JSON responses, and one error path that turns an
``MlfnError`` into its status and body and anything else into a logged 500."""

from __future__ import annotations

import asyncio
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
    """The 503s of an overload (shed, or refused: the line full) and the 504s of deadlines,
    logged per route and status: the first at once, then the count of those that followed
    within ``every_s``, told when that while ends (from the event loop; on a sync function's
    thread, with the next such answer). Under overload they come by the thousand a second,
    and a line each is a log storm (on Azure, each line an Application Insights trace) that
    costs the event loop what shedding was to save. The Functions host's own line for each
    invocation still gives each its status."""

    def __init__(self, every_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self._clock = clock
        self._held: dict[tuple[str, str, int], list[float]] = {}  # key: [while ends, count]

    def told(self, req: func.HttpRequest, exc: MlfnError) -> None:
        key = (req.method, req.url.partition("?")[0], exc.status)
        now = self._clock()
        held = self._held.get(key)
        if held is not None and now < held[0]:
            held[1] += 1
            if held[1] == 1:
                self._tell_later(key, held[0] - now)
            return
        if held is not None:
            self._tell(key)  # a while whose count no timer told
        elif len(self._held) >= MAX_ROUTES_HELD:  # a bound, whatever routes a client names
            self._held.clear()
        self._held[key] = [now + self.every_s, 0]
        log.warning("%s %s -> %d %s", req.method, redact.url(req.url), exc.status, exc.message)

    def _tell_later(self, key: tuple[str, str, int], delay: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # a sync function's thread: told with the next such answer
        loop.call_later(delay, self._tell, key)

    def _tell(self, key: tuple[str, str, int]) -> None:
        held = self._held.get(key)
        if held is None or not held[1]:
            return
        count, held[1] = int(held[1]), 0
        method, url, status = key
        log.warning(
            "%s %s -> %d: %d more such answers in the %g s after the line before",
            method, redact.url(url), status, count, self.every_s,
        )  # fmt: skip


MAX_ROUTES_HELD = 256
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

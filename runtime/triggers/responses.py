"""The edge where errors become HTTP answers: JSON responses, and one error path that turns an
``MlfnError`` into its status and body and anything else into a logged 500."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import azure.functions as func

from runtime import redact, telemetry
from runtime.errors import InternalError, MlfnError

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
    elif exc.status >= 500:
        log.warning("%s %s -> %d %s", req.method, redact.url(req.url), exc.status, exc.message)
    return json_response(exc.status, body(exc), exc.headers() or None)


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

"""The HTTP trigger adapter: ``func.HttpRequest`` in, a call into the runtime, ``func.HttpResponse``
out. Nothing below this module sees an azure.functions type."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import azure.functions as func

from runtime.errors import MlfnError
from runtime.protocol import v1
from runtime.state import AppState

log = logging.getLogger("mlfn.http")

HttpFunction = Callable[[func.HttpRequest], func.HttpResponse]
AsyncHttpFunction = Callable[[func.HttpRequest], Awaitable[func.HttpResponse]]


class InternalError(MlfnError):
    status = 500


def json_response(
    status: int, doc: Any, headers: dict[str, str] | None = None
) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(doc, separators=(",", ":")),
        status_code=status,
        headers=headers,
        mimetype="application/json",
    )


ErrorBody = Callable[[MlfnError], Any]


def mlfn_error_body(err: MlfnError) -> Any:
    """mlfn's structured error body: ``{"error": {"type", "message", "detail"?}}``."""
    return {"error": err.to_dict()}


def error_response(
    req: func.HttpRequest, exc: Exception, body: ErrorBody = mlfn_error_body
) -> func.HttpResponse:
    """The JSON error response for a runtime error; anything else is a bug: logged with its
    traceback, answered with a 500 that carries none. ``body`` shapes the JSON, which differs
    between protocols."""
    if not isinstance(exc, MlfnError):
        log.error("unhandled error in %s %s", req.method, req.url, exc_info=exc)
        exc = InternalError("internal error; the server log has the details")
    elif exc.status >= 500:
        log.warning("%s %s -> %d %s", req.method, req.url, exc.status, exc.message)
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


def predict_function(name: str, state: AppState) -> AsyncHttpFunction:
    """``POST /api/NAME/predict``: a V1 body scored by the endpoint's predict function, through
    the endpoint's batcher (concurrent requests share model calls)."""

    async def predict(req: func.HttpRequest) -> func.HttpResponse:
        services = state.get()
        scorer = services.scorer
        limits = scorer.endpoint(name).endpoint.limits

        def decode() -> list[Any]:
            raw = v1.decode_request(req.get_body(), max_bytes=limits.max_request_bytes)
            return scorer.validate(name, raw)

        # Parsing and validating a large body is CPU work: keep it off the event loop.
        instances = await asyncio.to_thread(decode)
        scored = await services.batchers[name].submit(instances)
        return json_response(200, v1.encode_response(scored))

    return guarded(predict)


def openapi_function(state: AppState) -> HttpFunction:
    """``GET /api/openapi.json``: OpenAPI 3.1 for every endpoint of the app."""
    cached: list[bytes] = []

    def openapi(req: func.HttpRequest) -> func.HttpResponse:
        if not cached:
            from runtime.protocol.openapi import build_openapi

            doc = build_openapi(state.endpoints, state.route_prefix(), package_version())
            cached.append(json.dumps(doc).encode())
        return func.HttpResponse(cached[0], mimetype="application/json")

    return openapi


def docs_page(req: func.HttpRequest) -> func.HttpResponse:
    """``GET /api/docs``: a dependency-free page that renders openapi.json (no CDN: the machine
    that serves it may have no internet)."""
    page = (Path(__file__).resolve().parent.parent / "static" / "docs.html").read_bytes()
    return func.HttpResponse(page, mimetype="text/html")


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlfn")
    except PackageNotFoundError:  # a checkout that was not installed
        return "0"


def health_live(req: func.HttpRequest) -> func.HttpResponse:
    """``GET /api/v2/health/live``: the process answers."""
    return json_response(200, {"live": True})


def health_ready(req: func.HttpRequest) -> func.HttpResponse:
    """``GET /api/v2/health/ready``: ready to take requests. Models load lazily, on the first
    request that needs them, so readiness does not wait for (or trigger) any load."""
    return json_response(200, {"ready": True})

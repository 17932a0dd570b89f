"""The HTTP trigger adapter: ``func.HttpRequest`` in, a call into the runtime, ``func.HttpResponse``
out. Nothing below this module sees an azure.functions type."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import azure.functions as func

from runtime.errors import MlfnError
from runtime.protocol import v1
from runtime.state import AppState

log = logging.getLogger("mlfn.http")

HttpFunction = Callable[[func.HttpRequest], func.HttpResponse]


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


def error_response(err: MlfnError) -> func.HttpResponse:
    return json_response(err.status, {"error": err.to_dict()}, err.headers() or None)


def guarded(fn: Callable[[func.HttpRequest], func.HttpResponse]) -> HttpFunction:
    """Turn runtime errors into JSON error bodies; anything else is a bug: logged with its
    traceback, answered with a 500 that carries no traceback."""

    def handler(req: func.HttpRequest) -> func.HttpResponse:
        try:
            return fn(req)
        except MlfnError as err:
            if err.status >= 500:
                log.warning("%s %s -> %d %s", req.method, req.url, err.status, err.message)
            return error_response(err)
        except Exception:
            log.exception("unhandled error in %s %s", req.method, req.url)
            return error_response(InternalError("internal error; the server log has the details"))

    return handler


def predict_function(name: str, state: AppState) -> HttpFunction:
    """``POST /api/NAME/predict``: a V1 body scored by the endpoint's predict function."""

    def predict(req: func.HttpRequest) -> func.HttpResponse:
        scorer = state.get().scorer
        limits = scorer.endpoint(name).endpoint.limits
        instances = v1.decode_request(req.get_body(), max_bytes=limits.max_request_bytes)
        return json_response(200, v1.encode_response(scorer.score(name, instances)))

    return guarded(predict)


def health_live(req: func.HttpRequest) -> func.HttpResponse:
    """``GET /api/v2/health/live``: the process answers."""
    return json_response(200, {"live": True})


def health_ready(req: func.HttpRequest) -> func.HttpResponse:
    """``GET /api/v2/health/ready``: ready to take requests. Models load lazily, on the first
    request that needs them, so readiness does not wait for (or trigger) any load."""
    return json_response(200, {"ready": True})

"""The Open Inference Protocol routes as HTTP functions: ``func.HttpRequest`` in, the V2
service, ``func.HttpResponse`` out with the protocol's own error body ``{"error": "..."}``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import azure.functions as func

from runtime.protocol import v1, v2
from runtime.services import Services
from runtime.triggers.responses import AsyncHttpFunction, guarded, json_response, v2_error_body
from runtime.version import package_version


def _guarded(fn: Callable[[func.HttpRequest], Awaitable[func.HttpResponse]]) -> AsyncHttpFunction:
    return guarded(fn, v2_error_body)


def server_metadata(req: func.HttpRequest) -> func.HttpResponse:
    """``GET /api/v2``."""
    return json_response(
        200, {"name": "mlfn", "version": package_version(), "extensions": ["binary_tensor_data"]}
    )


def model_metadata(services: Services) -> AsyncHttpFunction:
    """``GET /api/v2/models/NAME[/versions/V]``: inputs and outputs with V2 datatypes and shapes
    (-1 for dynamic dimensions), and the last load's cold-start breakdown under ``parameters``.
    Loads the model if it is not in memory."""

    async def metadata(req: func.HttpRequest) -> func.HttpResponse:
        service = services.infer
        name, version = req.route_params["model_name"], req.route_params.get("model_version")
        return json_response(200, await asyncio.to_thread(service.metadata, name, version))

    return _guarded(metadata)


def model_ready(services: Services) -> AsyncHttpFunction:
    """``GET /api/v2/models/NAME[/versions/V]/ready``: 200 when the model is in memory or its file
    exists in the store; does not load it."""

    async def ready(req: func.HttpRequest) -> func.HttpResponse:
        service = services.infer
        name, version = req.route_params["model_name"], req.route_params.get("model_version")
        if await service.ready(name, version):  # its own threads: see Readiness
            return json_response(200, {"name": name, "ready": True})
        # An expected answer to a probe, not a fault: no exception, no warning in the log.
        message = (
            f"model '{name}' is not ready: its file is not in the store, "
            "or the store cannot be reached"
        )
        return json_response(503, {"error": message}, {"Retry-After": "5"})

    return _guarded(ready)


def model_infer(services: Services) -> AsyncHttpFunction:
    """``POST /api/v2/models/NAME[/versions/V]/infer``: JSON or binary tensors in and out."""

    async def infer(req: func.HttpRequest) -> func.HttpResponse:
        name, version = req.route_params["model_name"], req.route_params.get("model_version")
        payload, headers = await services.infer.infer_body(
            name,
            req.get_body(),
            req.headers.get(v2.HEADER_LENGTH),
            version,
            req.headers.get(v1.TIMEOUT_HEADER),
        )
        return func.HttpResponse(
            payload, status_code=200, headers=headers, mimetype=headers["Content-Type"]
        )

    return _guarded(infer)

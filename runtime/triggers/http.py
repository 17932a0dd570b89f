"""The HTTP trigger adapter for mlfn's own routes: ``func.HttpRequest`` in, one service call,
``func.HttpResponse`` out. Nothing below this module sees an azure.functions type."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import azure.functions as func

from runtime.host_json import route_prefix
from runtime.protocol import v1
from runtime.services import Services
from runtime.triggers.responses import (
    AsyncHttpFunction,
    HttpFunction,
    error_response,
    json_response,
)
from runtime.version import package_version

if TYPE_CHECKING:
    from runtime.services.predict import Scorer


def predict_function(name: str, services: Services) -> AsyncHttpFunction:
    """``POST /api/NAME/predict``: a V1 body scored by the endpoint's predict function, through
    the endpoint's batcher (concurrent requests share model calls). The hot path, so the
    endpoint's scorer is looked up once (the services are built on the first request) and
    errors are answered here, without a wrapper of their own."""
    scorer: Scorer | None = None

    async def predict(req: func.HttpRequest) -> func.HttpResponse:
        nonlocal scorer
        try:
            if scorer is None:
                scorer = services.predict.scorer(name)
            headers = req.headers
            scored = await scorer.predict_body(
                req.get_body(),
                headers.get(v1.ROUTE_KEY_HEADER),
                None if scorer.log is None else headers.get(v1.REQUEST_ID_HEADER),
                headers.get(v1.TIMEOUT_HEADER),
            )
        except Exception as exc:
            return error_response(req, exc)
        return func.HttpResponse(v1.encode_response(scored), mimetype="application/json")

    return predict


def openapi_function(services: Services) -> HttpFunction:
    """``GET /api/openapi.json``: OpenAPI 3.1 for every endpoint of the app."""
    cached: list[bytes] = []

    def openapi(req: func.HttpRequest) -> func.HttpResponse:
        if not cached:
            from runtime.openapi import build_openapi

            prefix = route_prefix(services.app_root)
            doc = build_openapi(services.endpoints, prefix, package_version())
            cached.append(json.dumps(doc).encode())
        return func.HttpResponse(cached[0], mimetype="application/json")

    return openapi


def docs_page(req: func.HttpRequest) -> func.HttpResponse:
    """``GET /api/docs``: a dependency-free page that renders openapi.json (no CDN: the machine
    that serves it may have no internet)."""
    page = (Path(__file__).resolve().parent.parent / "static" / "docs.html").read_bytes()
    return func.HttpResponse(page, mimetype="text/html")


def health_live(req: func.HttpRequest) -> func.HttpResponse:
    """``GET /api/v2/health/live``: the process answers."""
    return json_response(200, {"live": True})


def health_ready(req: func.HttpRequest) -> func.HttpResponse:
    """``GET /api/v2/health/ready``: ready to take requests. Models load lazily, on the first
    request that needs them, so readiness does not wait for (or trigger) any load."""
    return json_response(200, {"ready": True})

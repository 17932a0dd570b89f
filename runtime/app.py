"""Building the Azure Functions app from the endpoints in ``functions/``."""

from __future__ import annotations

from pathlib import Path

import azure.functions as func

from runtime.config import Settings
from runtime.discovery import discover
from runtime.state import AppState
from runtime.triggers import http


def build_app(functions_dir: str | Path, *, settings: Settings | None = None) -> func.FunctionApp:
    """One ``FunctionApp`` with, per endpoint NAME, ``POST /api/NAME/predict`` (auth level
    FUNCTION), plus the anonymous health routes. Imports the endpoint modules and nothing
    heavy: no onnxruntime, no storage SDK, no network, no model."""
    functions_dir = Path(functions_dir).resolve()
    endpoints = discover(functions_dir)
    state = AppState(endpoints, app_root=functions_dir.parent, settings=settings)
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
    app.state = state  # type: ignore[attr-defined]  # for tools and tests: the app's runtime

    for bound in endpoints:
        if bound.endpoint.predict_fn is None:
            continue  # tensor-only endpoints are served by the Open Inference Protocol routes
        _route(
            app,
            f"{bound.name}_predict",
            f"{bound.name}/predict",
            "POST",
            func.AuthLevel.FUNCTION,
            http.predict_function(bound.name, state),
        )

    _route(app, "health_live", "v2/health/live", "GET", func.AuthLevel.ANONYMOUS, http.health_live)
    _route(
        app, "health_ready", "v2/health/ready", "GET", func.AuthLevel.ANONYMOUS, http.health_ready
    )
    return app


def _route(
    app: func.FunctionApp,
    name: str,
    route: str,
    method: str,
    auth: func.AuthLevel,
    handler: http.HttpFunction,
) -> None:
    app.function_name(name)(app.route(route=route, methods=[method], auth_level=auth)(handler))

"""Registering the app's functions: one ``FunctionApp`` with the triggers of every endpoint in
``functions/``, plus the app-wide health, OpenAPI and Open Inference Protocol routes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import azure.functions as func

from runtime import config, redact, telemetry
from runtime.config import STORAGE_SETTING, Settings
from runtime.discovery import discover
from runtime.protocol.batch import batch_function_name
from runtime.protocol.jobs import queue_function_name
from runtime.services import Services
from runtime.triggers import http, queue, v2
from runtime.triggers.invocation import http_function
from runtime.triggers.responses import AsyncHttpFunction, HttpFunction

if TYPE_CHECKING:
    from runtime.triggers.batch import BlobFunction


def build_app(functions_dir: str | Path, *, settings: Settings | None = None) -> func.FunctionApp:
    """One ``FunctionApp`` with, per endpoint NAME, ``POST /api/NAME/predict`` (auth level
    FUNCTION), a trigger on queue ``NAME-requests`` that writes to ``NAME-results`` and a blob
    trigger (Event Grid) on ``NAME-batch`` that writes to ``NAME-batch-results``, plus the
    anonymous health routes. Imports the endpoint modules and nothing heavy: no onnxruntime,
    no storage SDK, no network, no model."""
    # Here, not in `mlfn serve`: on Azure the worker's logging is all there is, and a SAS in a
    # URL the app logs (a batch event's blob) must not reach Application Insights.
    redact.install_in_logging()
    functions_dir = Path(functions_dir).resolve()
    endpoints = discover(functions_dir)
    services = Services(endpoints, app_root=functions_dir.parent, settings=settings)
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
    app.services = services  # type: ignore[attr-defined]  # for tools and tests

    def route(
        name: str,
        path: str,
        method: str,
        handler: HttpFunction | AsyncHttpFunction,
        anonymous: bool = False,
    ) -> None:
        invoked = http_function(name, method, path, handler, services.app_root, services.endpoints)
        auth = func.AuthLevel.ANONYMOUS if anonymous else func.AuthLevel.FUNCTION
        app.function_name(name)(app.route(route=path, methods=[method], auth_level=auth)(invoked))

    for bound in endpoints:
        if bound.endpoint.predict_fn is None:
            continue  # tensor-only endpoints are served by the Open Inference Protocol routes
        predict = http.predict_function(bound.name, services)
        route(f"{bound.name}_predict", f"{bound.name}/predict", "POST", predict)
        score = queue.queue_function(bound.name, bound.requests_queue, services)
        name = queue_function_name(bound.name)
        _queue(app, name, bound.requests_queue, bound.results_queue, score)
        if bound.endpoint.batch.enabled:
            # Imported here: it registers the blob binding's SDK-type converter, which an app
            # that takes no batch files leaves to others (and need not import at all).
            from runtime.triggers import batch

            files = batch.batch_function(bound.name, bound.results_container, services)
            _blob(app, batch_function_name(bound.name), bound.batch_container, files)

    route("health_live", "v2/health/live", "GET", http.health_live, anonymous=True)
    route("health_ready", "v2/health/ready", "GET", http.health_ready, anonymous=True)
    route("openapi", "openapi.json", "GET", http.openapi_function(services), anonymous=True)
    route("docs", "docs", "GET", http.docs_page, anonymous=True)
    route("v2_server_metadata", "v2", "GET", v2.server_metadata, anonymous=True)
    model, version = "v2/models/{model_name}", "v2/models/{model_name}/versions/{model_version}"
    for prefix, path in (("v2_model", model), ("v2_model_version", version)):
        metadata, ready = v2.model_metadata(services), v2.model_ready(services)
        # Metadata loads the model: behind the key like infer, or an anonymous client could
        # make the instance download models and evict the ones paying traffic uses.
        route(f"{prefix}_metadata", path, "GET", metadata)
        route(f"{prefix}_ready", f"{path}/ready", "GET", ready, anonymous=True)
        route(f"{prefix}_infer", f"{path}/infer", "POST", v2.model_infer(services))
    if settings is None:
        config.warn_unknown()
        telemetry.start_in_background()
    services.start_preload()
    return app


def _queue(
    app: func.FunctionApp, name: str, requests: str, results: str, handler: queue.QueueFunction
) -> None:
    trigger = app.queue_trigger(arg_name="msg", queue_name=requests, connection=STORAGE_SETTING)
    output = app.queue_output(arg_name="out", queue_name=results, connection=STORAGE_SETTING)
    app.function_name(name)(output(trigger(handler)))


def _blob(app: func.FunctionApp, name: str, container: str, handler: BlobFunction) -> None:
    # Event Grid: the only blob-trigger source on Flex Consumption, and seconds instead of
    # minutes of polling lag elsewhere (docs/batch.md has the subscription it needs).
    trigger = app.blob_trigger(
        arg_name="blob",
        path=f"{container}/{{name}}",
        connection=STORAGE_SETTING,
        source=func.BlobSource.EVENT_GRID,
    )
    app.function_name(name)(trigger(handler))

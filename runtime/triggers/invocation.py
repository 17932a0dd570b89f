"""What every invocation of mlfn's HTTP functions gets, whatever the route: its invocation id
on the response (``x-mlfn-invocation-id``, docs/decisions.md) and on the threads that run
predict, and, with telemetry on, its span (continuing the caller's ``traceparent``) and metrics.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import cast

import azure.functions as func

from runtime import telemetry
from runtime.host_json import route_prefix
from runtime.telemetry import HTTP, Function, Invocation
from runtime.telemetry.trace_context import Carrier
from runtime.triggers.responses import AsyncHttpFunction, HttpFunction

INVOCATION_ID_HEADER = "x-mlfn-invocation-id"

ContextHttpFunction = Callable[[func.HttpRequest, func.Context], func.HttpResponse]
AsyncContextHttpFunction = Callable[[func.HttpRequest, func.Context], Awaitable[func.HttpResponse]]


class Detached(func.Context):
    """The context of a call with no Functions host behind it (a test or a benchmark calling the
    function itself): no invocation id, no thread-local storage, no trace."""

    invocation_id = ""
    function_name = ""
    function_directory = ""
    thread_local_storage = None  # type: ignore[assignment]
    trace_context = None  # type: ignore[assignment]
    retry_context = None  # type: ignore[assignment]


DETACHED = Detached()


def host_carrier(context: func.Context) -> Carrier:
    """The Functions host's own trace parent for this invocation (on Azure, its span; locally a
    made-up one), as the worker hands it in ``context.trace_context``."""
    found = context.trace_context
    if found is None:
        return None, None
    return getattr(found, "trace_parent", None), getattr(found, "trace_state", None)


def http_function(
    name: str,
    method: str,
    route: str,
    handler: HttpFunction | AsyncHttpFunction,
    app_root: Path,
    endpoints: Collection[str],
) -> ContextHttpFunction | AsyncContextHttpFunction:
    """``handler`` as function NAME (``method`` on ``route``), taking the worker's ``context``."""

    @functools.cache
    def described() -> Function:  # on the first invocation with telemetry on: reads host.json
        path = f"/{route_prefix(app_root)}/{route}".replace("//", "/")
        attributes = {"http.request.method": method, "http.route": path}
        if name.endswith("_predict"):
            attributes["mlfn.endpoint"] = name.removesuffix("_predict")
        return Function(name, HTTP, f"{method} {path}", attributes)

    def endpoint_of(req: func.HttpRequest) -> str | None:
        named = req.route_params.get("model_name")  # a client's text: only known names count
        return named if named in endpoints else None

    def begin(invocation: Invocation, req: func.HttpRequest, context: func.Context) -> None:
        caller = req.headers.get("traceparent"), req.headers.get("tracestate")
        telemetry.current().begin(invocation, described(), caller, host_carrier(context))

    def end(invocation: Invocation, req: func.HttpRequest, status: int) -> None:
        telemetry.current().end(invocation, described(), status, endpoint_of(req))

    def named(response: func.HttpResponse, invocation_id: str | None) -> func.HttpResponse:
        if invocation_id:
            response.headers[INVOCATION_ID_HEADER] = invocation_id
        return response

    if inspect.iscoroutinefunction(handler):
        run = cast(AsyncHttpFunction, handler)

        async def traced(invocation: Invocation, req: func.HttpRequest) -> func.HttpResponse:
            status = 500  # unless the handler answers: a bug past its own error answers
            try:
                response = await run(req)
                status = response.status_code
                return response
            finally:
                end(invocation, req, status)

        async def invoked(
            req: func.HttpRequest, context: func.Context = DETACHED
        ) -> func.HttpResponse:
            invocation = Invocation(context.invocation_id or None, context.thread_local_storage)
            token = telemetry.enter(invocation)  # for the threads that run predict
            try:
                if telemetry.current().on:
                    begin(invocation, req, context)
                    response = await traced(invocation, req)
                else:
                    response = await run(req)
            finally:
                telemetry.leave(token)
            return named(response, invocation.id)

        return invoked

    call = cast(HttpFunction, handler)

    def invoked_sync(req: func.HttpRequest, context: func.Context = DETACHED) -> func.HttpResponse:
        if not telemetry.current().on:
            return named(call(req), context.invocation_id)
        invocation = Invocation(context.invocation_id or None, context.thread_local_storage)
        begin(invocation, req, context)
        status = 500
        try:
            response = call(req)
            status = response.status_code
        finally:
            end(invocation, req, status)
        return named(response, invocation.id)

    return invoked_sync

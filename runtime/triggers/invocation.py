"""What every invocation of mlfn's functions gets, whatever the trigger (``Scope``): its
invocation id on the threads that run predict (their log lines are attributed to it on Azure)
and, with telemetry on, its span (continuing the caller's ``traceparent``) and metrics. An HTTP
invocation's response also carries the id (``x-mlfn-invocation-id``, docs/decisions.md).
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
from runtime.telemetry import HTTP, Function, Invocation, trace_context
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


class Scope(Invocation):
    """One invocation as its trigger holds it, from the call to the answer, set up in one place
    for every trigger: current (for the work it starts) from its making until ``close``; with
    telemetry on, ``begin`` starts its span, which ``close`` ends, counting the invocation with
    ``status`` (an HTTP status or a queue message's outcome: 500 unless the trigger sets it,
    for an exception that ends the invocation). The invocation itself, not a holder of one: this
    is on every request's path."""

    __slots__ = ("_context", "_function", "_outer", "endpoint", "status")

    def __init__(self, context: func.Context) -> None:
        Invocation.__init__(self, context.invocation_id or None, context.thread_local_storage)
        self.status: int | str = 500
        self.endpoint: str | None = None  # the span's, when the function serves several
        self._context = context
        self._function: Function | None = None
        self._outer = telemetry.enter(self)  # for the threads that run predict

    def begin(self, function: Function, caller: Carrier) -> None:
        """Start the invocation's span as ``function``'s, continuing ``caller``'s trace or the
        host's (``host_carrier``)."""
        self._function = function
        telemetry.current().begin(self, function, caller, host_carrier(self._context))

    def trace_id(self) -> str | None:
        """The trace this invocation is in: its span's, else the Functions host's own parent's
        (on Azure, the caller's trace, which the host continues)."""
        mine = Invocation.trace_id(self)
        if mine is not None:
            return mine
        found = trace_context.parse(host_carrier(self._context)[0])
        return found.trace_id if found is not None else None

    def close(self) -> None:
        """End the span, if begun, and the invocation's time as the current one."""
        try:
            if self._function is not None:
                telemetry.current().end(self, self._function, self.status, self.endpoint)
        finally:
            telemetry.leave(self._outer)


def http_function(
    name: str,
    method: str,
    route: str,
    handler: HttpFunction | AsyncHttpFunction,
    app_root: Path,
    endpoints: Collection[str],
) -> ContextHttpFunction | AsyncContextHttpFunction:
    """``handler`` as function NAME (``method`` on ``route``), taking the worker's ``context``.
    A sync handler stays sync (the worker runs it in a thread), an async one async: the shells
    differ by ``await`` alone, what they do is ``opened`` and ``answered``."""

    @functools.cache
    def described() -> Function:  # on the first invocation with telemetry on: reads host.json
        path = f"/{route_prefix(app_root)}/{route}".replace("//", "/")
        attributes = {"http.request.method": method, "http.route": path}
        if name.endswith("_predict"):
            attributes["mlfn.endpoint"] = name.removesuffix("_predict")
        return Function(name, HTTP, f"{method} {path}", attributes)

    def opened(req: func.HttpRequest, context: func.Context) -> Scope:
        scope = Scope(context)
        if telemetry.current().on:
            try:
                named = req.route_params.get("model_name")  # a client's text: only known names
                scope.endpoint = named if named in endpoints else None
                caller = req.headers.get("traceparent"), req.headers.get("tracestate")
                scope.begin(described(), caller)
            except BaseException:
                scope.close()
                raise
        return scope

    def answered(scope: Scope, response: func.HttpResponse) -> func.HttpResponse:
        scope.status = response.status_code
        if scope.id:
            response.headers[INVOCATION_ID_HEADER] = scope.id
        return response

    if inspect.iscoroutinefunction(handler):
        run = cast(AsyncHttpFunction, handler)

        async def invoked(
            req: func.HttpRequest, context: func.Context = DETACHED
        ) -> func.HttpResponse:
            scope = opened(req, context)
            try:
                return answered(scope, await run(req))
            finally:
                scope.close()

        return invoked

    call = cast(HttpFunction, handler)

    def invoked_sync(req: func.HttpRequest, context: func.Context = DETACHED) -> func.HttpResponse:
        scope = opened(req, context)
        try:
            return answered(scope, call(req))
        finally:
            scope.close()

    return invoked_sync

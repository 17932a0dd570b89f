"""The HTTP side of the local host: an ASGI app that routes requests to HTTP-triggered
functions, as real ``func.HttpRequest``s, and sends their ``func.HttpResponse``s back."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import azure.functions as func

from runtime.host.invocation_log import InvocationLog
from runtime.host.invoke import Invoker
from runtime.host.metadata import FunctionInfo
from runtime.host.routing import Router, RouteTemplate
from runtime.scheduling import deadlines

log = logging.getLogger("mlfn.host")
HTTP_REASON = "This function was programmatically called via the host APIs."

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Azure Functions refuses HTTP requests over 100 MB before any function runs.
MAX_REQUEST_BYTES = 100 * 1024 * 1024
# A connection that has not sent a whole request head this long after it opened, or after its
# last answer, is closed: idle and half-sent requests (slowloris) cannot hold the host's
# connections. uvicorn times out only the wait between requests, not a head sent slowly.
HEAD_TIMEOUT_S = 5.0
# The scope's key for when a request's first bytes were read (``time.monotonic()``): its
# deadline starts then, not when its function is called after the loop's other work. Of
# requests pipelined in one read, the first one's (the others: when their function is called).
ARRIVED = "mlfn.arrived"
# A request body must then keep arriving at this rate, averaged from its start, after a grace
# period: Kestrel's defaults (MinRequestBodyDataRate), the server of the Functions host. A
# timeout between reads would not do: a byte just before each one holds the connection for
# ever. Slower is a 408 and the connection closed.
MIN_BODY_RATE = 240  # bytes a second
BODY_GRACE_S = 5.0


def http_route(info: FunctionInfo, route_prefix: str) -> str:
    return "/".join(p for p in (route_prefix, info.route.strip("/")) if p)


class HttpHost:
    """ASGI app serving the HTTP-triggered functions of an indexed app."""

    def __init__(
        self,
        functions: list[FunctionInfo],
        route_prefix: str,
        invoker: Invoker,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        function_key: str | None = None,
    ) -> None:
        self.functions = [f for f in functions if f.trigger.type == "httpTrigger"]
        self._router: Router[FunctionInfo] = Router(
            (RouteTemplate(http_route(f, route_prefix)), f) for f in self.functions
        )
        self._invoker = invoker
        self._max = max_request_bytes
        self.function_key = function_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        query = scope.get("query_string", b"").decode("latin-1")
        request = f"{scope['method']} {scope['path']}" + (f"?{query}" if query else "")
        ran: list[InvocationLog] = []  # the invocation, once a function is called

        async def sending(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                # Logged before the answer leaves: whoever reads the log after the response
                # finds the line. One line a request, as uvicorn's access log was (it is off):
                # a line per request is a measurable share of the host's time (bench/NOTES.md).
                _log_request(request, message["status"], ran[0] if ran else None)
            await send(message)

        await self._serve(scope, receive, sending, ran)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, ran: list[InvocationLog]
    ) -> None:
        """Answer one request; a function's invocation goes into ``ran`` before it is called."""
        method = scope["method"].upper()
        # Match on the raw path: route values are decoded after matching, so an encoded '/'
        # inside a value cannot create a segment.
        path = scope.get("raw_path", scope["path"].encode()).decode("latin-1").split("?", 1)[0]
        headers = _headers(scope)
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self._max:
            return await _send(
                send, 413, _error("PayloadTooLarge", f"request body over {self._max} bytes")
            )
        chosen = next(
            (
                (f, values)
                for f, values in self._router.matches(path)
                if f.methods is None or method in f.methods
            ),
            None,
        )
        if chosen is None:
            candidates = self._router.match(path)
            if candidates:
                allowed = sorted({m for f, _ in candidates for m in (f.methods or ())})
                message = f"no function accepts {method} {path} (allowed: {', '.join(allowed)})"
            else:
                message = f"no function is registered for {path}"
            return await _send(send, 404, _error("NotFound", message))
        info, route_values = chosen
        query = scope.get("query_string", b"").decode("latin-1")
        params = _params(query)
        if not self._authorized(info, headers, params):
            return await _send(send, 401, b"", {})
        try:
            body = await _read_body(receive, self._max)
        except _BodyRefused as refused:
            # The rest of the body is not read: the connection cannot carry another request.
            closing = {"content-type": "application/json", "connection": "close"}
            return await _send(send, refused.status, _error(refused.kind, str(refused)), closing)
        request = func.HttpRequest(
            method=method,
            url=_url(scope, headers, query),
            headers=headers,
            params=params,
            route_params=route_values,
            body=body,
        )
        run = InvocationLog(info.name, HTTP_REASON)
        ran.append(run)
        try:
            with deadlines.arrived(scope.get(ARRIVED) or time.monotonic()):
                invocation = await self._invoker.call(info, request, run.id)
        except Exception as exc:
            run.error, run.why = exc, str(exc) or type(exc).__name__
            return await _send(send, 500, b"", {})
        http_out = next(b.name for b in info.outputs if b.type == "http")
        if http_out == "$return" and invocation.returned is None:
            # The worker cannot encode None as a response: the invocation fails.
            run.why = "it returned None"
            return await _send(send, 500, b"", {})
        result = invocation.returned if http_out == "$return" else invocation.outputs.get(http_out)
        await _send_result(send, info, result, run)

    def _authorized(
        self, info: FunctionInfo, headers: dict[str, str], params: dict[str, str]
    ) -> bool:
        """Azure's key check: FUNCTION and ADMIN routes need the key as ``x-functions-key`` or
        ``?code=``; a wrong or missing key is a 401 with no body. Without a configured key the
        local host, like ``func start``, enforces nothing."""
        if self.function_key is None or info.auth_level == "ANONYMOUS":
            return True
        code = next((v for k, v in params.items() if k.lower() == "code"), "")
        given = headers.get("x-functions-key") or code
        return hmac.compare_digest(given.encode(), self.function_key.encode())


def _log_request(request: str, status: int, run: InvocationLog | None) -> None:
    if run is None:
        log.info('"%s" %d', request, status)
    elif run.error is None and not run.why:  # it answered, a 503 or 504 too: as the host says
        run.succeeded(f'"{request}" {status}')
    else:
        run.failed(f'"{request}" {status}: {run.why}', traceback=run.error is not None)


async def _send_result(send: Send, info: FunctionInfo, result: Any, run: InvocationLog) -> None:
    """Send what the function returned; a 500 when the worker could not have converted it
    (``run`` says why)."""
    if isinstance(result, func.HttpResponse):
        headers = dict(result.headers.items())
        if not any(k.lower() == "content-type" for k in headers):
            ct = result.mimetype
            headers["content-type"] = (
                f"{ct}; charset={result.charset}" if ct.startswith("text/") else ct
            )
        await _send(send, result.status_code, result.get_body() or b"", headers)
        return
    if isinstance(result, str):
        text_plain = {"content-type": "text/plain; charset=utf-8"}
        await _send(send, 200, result.encode(), text_plain)
        return
    if result is None:  # a named http output left unset
        await _send(send, 204, b"", {})
        return
    # bytes included: the worker's HTTP converter takes str and HttpResponse only.
    run.why = f"it returned {type(result).__name__}, not an HttpResponse or str"
    await _send(send, 500, b"", {})


def _headers(scope: Scope) -> dict[str, str]:
    merged: dict[str, str] = {}
    for raw_key, raw_value in scope.get("headers", []):
        key, value = raw_key.decode("latin-1").lower(), raw_value.decode("latin-1")
        merged[key] = f"{merged[key]},{value}" if key in merged else value
    return merged


def _params(query: str) -> dict[str, str]:
    """The query as the host hands it to the Python worker: keys compared without case (the
    first spelling kept), a repeated key's values joined with ",", empty values left out."""
    values: dict[str, list[str]] = {}
    spelling: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        values.setdefault(spelling.setdefault(key.lower(), key), []).append(value)
    joined = {key: ",".join(parts) for key, parts in values.items()}
    return {key: value for key, value in joined.items() if value}


def _url(scope: Scope, headers: dict[str, str], query: str) -> str:
    server = scope.get("server") or ("127.0.0.1", 80)
    host = headers.get("host") or f"{server[0]}:{server[1]}"
    url = f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}{scope['path']}"
    return f"{url}?{query}" if query else url


class _BodyRefused(Exception):
    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind = status, kind


async def _read_body(receive: Receive, limit: int) -> bytes:
    """The request body, refused (``_BodyRefused``) over ``limit`` bytes or when it arrives
    slower than ``MIN_BODY_RATE`` after ``BODY_GRACE_S``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    chunks, size = [], 0
    while True:
        # Each byte received buys 1/MIN_BODY_RATE s more: the average rate is what counts.
        left = start + BODY_GRACE_S + size / MIN_BODY_RATE - loop.time()
        try:
            # Never zero: bytes that arrived while the loop was busy elsewhere still count.
            # A deadline on this task, not wait_for's task per message: this is every request.
            async with asyncio.timeout(max(left, 0.05)):
                message = await receive()
        except TimeoutError:
            raise _BodyRefused(
                408,
                "RequestTimeout",
                f"request body arrived slower than {MIN_BODY_RATE} bytes/s ({size} bytes in "
                f"{loop.time() - start:.0f} s); send it in one go",
            ) from None
        if message["type"] == "http.disconnect":  # gone before the end: never run on a part
            raise _BodyRefused(400, "ClientDisconnected", f"client left after {size} bytes")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyRefused(413, "PayloadTooLarge", f"request body over {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _error(kind: str, message: str) -> bytes:
    return json.dumps({"error": {"type": kind, "message": message}}).encode()


async def _send(
    send: Send, status: int, body: bytes, headers: dict[str, str] | None = None
) -> None:
    if headers is None:
        headers = {"content-type": "application/json"}
    # Names as the function wrote them, as the host sends them on.
    raw = [
        (k.encode("latin-1"), str(v).encode("latin-1"))
        for k, v in headers.items()
        if k.lower() != "content-length"
    ]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def http_protocol(head_timeout_s: float = HEAD_TIMEOUT_S) -> type[Any]:
    """uvicorn's HTTP protocol, closing a connection whose request head is not complete
    ``head_timeout_s`` after the connection opened or its last response (or after the
    first byte of a request sent on a kept-alive connection)."""
    import h11
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class HeadTimeoutProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
        _head_timer: asyncio.TimerHandle | None = None
        _head_marker: object = None
        _first_bytes: float | None = None  # when the next request's first bytes came

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self._arm_head_timer()

        def data_received(self, data: bytes) -> None:
            if self._first_bytes is None and self._between_requests() and self._peer_idle():
                self._first_bytes = time.monotonic()  # its head may take several reads
            super().data_received(data)
            cycle = self.cycle
            if cycle is not None and ARRIVED not in cycle.scope:  # a request began
                cycle.scope[ARRIVED] = self._first_bytes or time.monotonic()
                self._first_bytes = None
            # Bytes of a new request (uvicorn has just cancelled its keep-alive timer): the
            # head must now complete in time.
            if self._head_timer is None and self._between_requests():
                self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            super().connection_lost(exc)

        def _between_requests(self) -> bool:
            return self.cycle is None or bool(self.cycle.response_complete)

        def _peer_idle(self) -> bool:
            """The client has sent the whole of its last request: what it sends now begins
            the next. Not while the rest of a body comes that the answer did not wait for (a
            401, 404 or 413 answered from the head): those bytes are the old request's."""
            conn = getattr(self, "conn", None)  # h11's connection, under uvicorn's h11 parser
            return conn is None or conn.their_state is h11.IDLE

        def _arm_head_timer(self) -> None:
            # A new request replaces ``cycle``: unchanged when the timer fires, none began.
            self._head_marker = self.cycle
            self._head_timer = self.loop.call_later(head_timeout_s, self._head_timed_out)

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self.transport.is_closing():
                return
            if self.cycle is self._head_marker:
                log.debug("closing a connection that sent no whole request in %.0f s",
                          head_timeout_s)  # fmt: skip
                self.transport.close()
            elif self._between_requests():
                self._arm_head_timer()  # a request came and went: time the next one

    return HeadTimeoutProtocol

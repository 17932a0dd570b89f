"""Telemetry that records: spans through the global tracer provider, metrics through the global
meter provider (set up by ``setup.py``, or by whoever set up OpenTelemetry first). Imported only
when telemetry is on."""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry import context, metrics, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from runtime import redact
from runtime.telemetry import (
    HTTP,
    Function,
    Invocation,
    Span,
    Telemetry,
    Waiting,
    trace_context,
)
from runtime.telemetry.instruments import Instruments
from runtime.telemetry.trace_context import Carrier
from runtime.version import package_version

QUEUE_FAILED = ("retried", "poisoned")  # outcomes where the function failed (the host retries)


class _Scope(Span):
    """A started span, current while its block runs."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Any) -> None:
        self._span = span
        self._token: Any = None

    def __enter__(self) -> _Scope:
        self._token = context.attach(trace.set_span_in_context(self._span))
        return self

    def __exit__(self, *exc: object) -> None:
        if isinstance(exc[1], BaseException):
            record(self._span, exc[1])
        self._span.end()
        context.detach(self._token)

    def set(self, key: str, value: str | int | float | bool) -> None:
        self._span.set_attribute(key, value)


def record(span: Any, exc: BaseException) -> None:
    """``exc`` on ``span``: an exception event and ``error.type`` (its class). The status is
    ERROR for a server's fault, not for a client's (a 4xx ``MlfnError``)."""
    span.set_attribute("error.type", type(exc).__name__)
    if not isinstance(exc, Exception):  # cancelled: no fault of anyone's
        return
    # An exception mlfn did not make (the storage SDK's, predict's) may quote a SAS URL: what
    # leaves for the exporter is redacted as log lines are.
    message = redact.text(str(exc))
    stack = redact.text("".join(traceback.format_exception(exc)))
    span.record_exception(
        exc, attributes={"exception.message": message, "exception.stacktrace": stack}
    )
    status = getattr(exc, "status", 500)
    if not isinstance(status, int) or status >= 500:
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {message}"[:300]))


class OtelTelemetry(Telemetry):
    on = True

    def __init__(self) -> None:
        version = package_version()
        self._tracer = trace.get_tracer("mlfn", version)
        self._instruments = Instruments(metrics.get_meter("mlfn", version))
        self._propagator = TraceContextTextMapPropagator()
        self._cold = True
        self._lock = threading.Lock()

    def span(self, name: str, attributes: Mapping[str, Any] | None = None) -> Span:
        return _Scope(self._tracer.start_span(name, attributes=attributes))

    def begin(
        self, invocation: Invocation, function: Function, caller: Carrier, host: Carrier
    ) -> None:
        parent = trace_context.choose(caller, host)
        carrier = {"traceparent": parent[0], "tracestate": parent[1]} if parent else {}
        # Extracted into an empty context, so a parent is only ever one of those two.
        parent_context = self._propagator.extract(carrier, context=context.Context())
        attributes: dict[str, Any] = {**function.attributes, "faas.trigger": function.trigger}
        if invocation.id:
            attributes["faas.invocation_id"] = invocation.id
        with self._lock:
            cold, self._cold = self._cold, False
        if cold:
            attributes["faas.coldstart"] = True
            self._instruments.cold_starts.add(1, {"faas.name": function.name})
        kind = SpanKind.SERVER if function.trigger == HTTP else SpanKind.CONSUMER
        span = self._tracer.start_span(
            function.span_name, context=parent_context, kind=kind, attributes=attributes
        )
        invocation.span = span
        invocation.token = context.attach(trace.set_span_in_context(span))
        invocation.started = time.perf_counter()

    def end(
        self,
        invocation: Invocation,
        function: Function,
        status: int | str,
        endpoint: str | None = None,
    ) -> None:
        span = invocation.span
        if span is None:
            return
        seconds = time.perf_counter() - invocation.started
        attributes: dict[str, Any] = {"faas.name": function.name, "faas.trigger": function.trigger}
        endpoint = endpoint or function.attributes.get("mlfn.endpoint")
        if endpoint:
            attributes["mlfn.endpoint"] = endpoint
        if invocation.version:  # per version: a release's versions side by side
            attributes["mlfn.model.version"] = invocation.version
        if isinstance(status, int):
            attributes["http.response.status_code"] = status
            failed = status >= 500
        else:
            attributes["mlfn.queue.outcome"] = status
            failed = status in QUEUE_FAILED
            self._instruments.queue_messages.add(
                1, {"mlfn.endpoint": endpoint or "", "mlfn.queue.outcome": status}
            )
        self._instruments.duration.record(seconds, attributes)
        span.set_attributes(attributes)  # one call: each takes the span's lock
        if failed:
            span.set_status(Status(StatusCode.ERROR))
        span.end()
        context.detach(invocation.token)
        invocation.span = invocation.token = None

    def batch(self, endpoint: str, waiting: Sequence[Waiting], size: int) -> Span:
        now = time.perf_counter()
        spans = [w.invocation.span for w in waiting if w.invocation and w.invocation.span]
        parent = trace.set_span_in_context(spans[0]) if spans else context.Context()
        links = [Link(s.get_span_context()) for s in spans[1:]]
        waits = [now - w.queued_at for w in waiting if w.queued_at]
        instruments = self._instruments
        attributes = {"mlfn.endpoint": endpoint}
        instruments.batch_size.record(size, attributes)
        for wait in waits:
            instruments.batch_wait.record(wait, attributes)
        span = self._tracer.start_span(
            "mlfn.batch",
            context=parent,
            links=links,
            attributes={
                "mlfn.endpoint": endpoint,
                "mlfn.batch.size": size,
                "mlfn.batch.requests": len(waiting),
                "mlfn.batch.wait_ms": round(max(waits, default=0.0) * 1000, 3),
            },
        )
        return _Scope(span)

    def shadow_compared(
        self, endpoint: str, live: str, shadow: str, rows: int, agreeing: int, difference: float
    ) -> None:
        base = {
            "mlfn.endpoint": endpoint,
            "mlfn.model.version": live,
            "mlfn.shadow.version": shadow,
        }
        shadow_rows = self._instruments.shadow_rows
        if agreeing:
            shadow_rows.add(agreeing, {**base, "mlfn.shadow.agreed": True})
        if rows > agreeing:
            shadow_rows.add(rows - agreeing, {**base, "mlfn.shadow.agreed": False})
        self._instruments.shadow_difference.record(difference, base)

    def rolled_back(self, endpoint: str, version: str) -> None:
        self._instruments.rollbacks.add(
            1, {"mlfn.endpoint": endpoint, "mlfn.model.version": version}
        )

    def payload_logged(self, endpoint: str, written: int, dropped: int) -> None:
        where = {"mlfn.endpoint": endpoint}
        if written:
            self._instruments.log_records.add(written, where)
        if dropped:
            self._instruments.log_dropped.add(dropped, where)

    def model_loaded(self, endpoint: str, version: str, report: Any) -> None:
        trace.get_current_span().set_attributes(
            {
                "mlfn.model.version": version,
                "mlfn.model.cache": report.cache,
                "mlfn.model.bytes": report.bytes,
                "mlfn.model.downloaded_bytes": report.downloaded_bytes,
                "mlfn.model.memory_bytes": report.memory_bytes,
                "mlfn.model.provider": report.provider,
            }
        )
        attributes = {"mlfn.endpoint": endpoint, "mlfn.model.cache": report.cache}
        self._instruments.load_duration.record(report.total_s, attributes)
        self._instruments.load_bytes.record(report.bytes, attributes)
        if report.downloaded_bytes:
            self._instruments.downloaded.add(report.downloaded_bytes, attributes)

    def watch_models(self, resident: Callable[[], Mapping[str, int]], budget: int | None) -> None:
        self._instruments.watch(resident, budget)

    def record_error(self, exc: BaseException) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            record(span, exc)

    def set(self, key: str, value: str | int | float | bool) -> None:
        trace.get_current_span().set_attribute(key, value)

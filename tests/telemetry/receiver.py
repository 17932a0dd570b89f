"""A real OTLP/HTTP receiver: an HTTP server on 127.0.0.1 that decodes what exporters POST to
``/v1/traces`` and ``/v1/metrics`` with the protocol's own protobuf messages
(``opentelemetry-proto``), and keeps the spans and metric points for tests to read."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return None if kind is None else getattr(value, kind)


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs if isinstance(kv, KeyValue)}


@dataclass(frozen=True)
class Span:
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    links: list[tuple[str, str]]
    events: list[tuple[str, dict[str, Any]]]
    status: int  # 0 unset, 1 ok, 2 error
    service: str


@dataclass(frozen=True)
class Point:
    """One data point of one metric, as received (cumulative: the last one is the total)."""

    metric: str
    kind: str  # histogram, sum, gauge
    attributes: dict[str, Any]
    value: float  # a histogram's count, a sum's or gauge's value
    total: float = 0.0  # a histogram's sum


@dataclass
class Receiver:
    spans: list[Span] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    posts: list[str] = field(default_factory=list)  # paths, in order
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                answer = receiver.receive(self.path, body)
                self.send_response(200 if answer is not None else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer or b"")))
                self.end_headers()
                self.wfile.write(answer or b"")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def receive(self, path: str, body: bytes) -> bytes | None:
        with self._lock:
            self.posts.append(path)
        if path == "/v1/traces":
            traces = ExportTraceServiceRequest.FromString(body)
            with self._lock:
                self.spans.extend(_spans(traces))
            return ExportTraceServiceResponse().SerializeToString()
        if path == "/v1/metrics":
            metrics = ExportMetricsServiceRequest.FromString(body)
            with self._lock:
                self.points.extend(_points(metrics))
            return ExportMetricsServiceResponse().SerializeToString()
        return None

    def trace(self, trace_id: str) -> list[Span]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def latest(self, metric: str, **attributes: Any) -> list[Point]:
        """The last point received of ``metric`` for each set of attributes matching those."""
        found: dict[tuple[tuple[str, Any], ...], Point] = {}
        with self._lock:
            for point in self.points:
                if point.metric == metric and attributes.items() <= point.attributes.items():
                    found[tuple(sorted(point.attributes.items()))] = point
        return list(found.values())


def _spans(request: ExportTraceServiceRequest) -> Iterator[Span]:
    for resource_spans in request.resource_spans:
        service = _attributes(resource_spans.resource.attributes).get("service.name", "")
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield Span(
                    name=span.name,
                    kind=KINDS.get(span.kind, str(span.kind)),
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(),
                    attributes=_attributes(span.attributes),
                    links=[(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
                    events=[(e.name, _attributes(e.attributes)) for e in span.events],
                    status=span.status.code,
                    service=service,
                )


def _points(request: ExportMetricsServiceRequest) -> Iterator[Point]:
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind == "histogram":
                    for p in metric.histogram.data_points:
                        yield Point(metric.name, kind, _attributes(p.attributes), p.count, p.sum)
                elif kind in ("sum", "gauge"):
                    for q in getattr(metric, kind).data_points:
                        number = q.as_int if q.WhichOneof("value") == "as_int" else q.as_double
                        yield Point(metric.name, kind, _attributes(q.attributes), number)

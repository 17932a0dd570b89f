"""A request a release routed is told apart by version in the request metric and its span."""

from __future__ import annotations

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from runtime.telemetry import HTTP, Function, Invocation
from runtime.telemetry.instruments import Instruments
from runtime.telemetry.otel import OtelTelemetry


def test_the_request_metric_and_span_carry_the_version_a_release_chose() -> None:
    reader, spans = InMemoryMetricReader(), InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    tel = OtelTelemetry()
    tel._tracer = tracer_provider.get_tracer("test")
    tel._instruments = Instruments(MeterProvider(metric_readers=[reader]).get_meter("test"))
    function = Function("iris_predict", HTTP, "POST /api/iris/predict", {"mlfn.endpoint": "iris"})
    for version, status in (("v2", 500), (None, 200)):
        invocation = Invocation("id")
        tel.begin(invocation, function, (None, None), (None, None))
        invocation.version = version
        tel.end(invocation, function, status)

    data = reader.get_metrics_data()
    assert data is not None
    points = [
        dict(point.attributes or {})
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "mlfn.request.duration"
        for point in metric.data.data_points
    ]
    by_status = {p["http.response.status_code"]: p for p in points}
    assert by_status[500]["mlfn.model.version"] == "v2"
    assert "mlfn.model.version" not in by_status[200]  # no release: no version attribute
    routed = next(
        s
        for s in spans.get_finished_spans()
        if s.attributes and s.attributes.get("mlfn.model.version")
    )
    assert routed.attributes is not None and routed.attributes["http.response.status_code"] == 500

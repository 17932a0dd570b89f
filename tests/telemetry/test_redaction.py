"""What a span says of an exception leaves the process redacted, as log lines do."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from runtime.telemetry.otel import record


def test_an_exception_recorded_on_a_span_carries_no_secret() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    span = provider.get_tracer("test").start_span("load")
    try:
        raise OSError("GET https://a.blob.core.windows.net/c/m.onnx?sv=1&sig=SECRETSIG: 503")
    except OSError as exc:
        record(span, exc)
    span.end()

    [finished] = exporter.get_finished_spans()
    [event] = finished.events
    exported = repr(dict(event.attributes or {})) + repr(finished.status.description)
    assert "SECRETSIG" not in exported
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "OSError"
    assert "sig=REDACTED" in str(event.attributes["exception.message"])
    assert "Traceback" in str(event.attributes["exception.stacktrace"])

"""Turning telemetry on: OTLP exporters, or Azure Monitor's distro, as the environment asks.
Anything missing or wrong is said once in the log and telemetry stays off: the app serves."""

from __future__ import annotations

import logging
from typing import Any

from runtime.config.telemetry import TelemetrySettings, read
from runtime.errors import ConfigError, PackageMissing
from runtime.telemetry import OFF, Telemetry

log = logging.getLogger("mlfn.telemetry")

GRPC_PACKAGE = "opentelemetry-exporter-otlp-proto-grpc"


def configure(settings: TelemetrySettings | None = None) -> Telemetry:
    """The process's telemetry: ``OFF`` unless the settings name an exporter that can start."""
    try:
        settings = settings or read()
        exporters = settings.exporters()
        if not exporters:
            return OFF
        return _configure(settings, exporters)
    except ConfigError as exc:
        log.warning("telemetry is off: %s", exc.message)
    except Exception:  # an SDK bug or an exporter's refusal must not fail the app's requests
        log.exception("telemetry is off: configuring OpenTelemetry failed")
    return OFF


def _configure(settings: TelemetrySettings, exporters: tuple[str, ...]) -> Telemetry:
    try:
        from opentelemetry import trace
    except ImportError:
        key = (
            "APPLICATIONINSIGHTS_CONNECTION_STRING"
            if exporters == ("azure-monitor",)
            else ("OTEL_EXPORTER_OTLP_ENDPOINT")
        )
        extra = "azure-monitor" if exporters == ("azure-monitor",) else "otel"
        raise PackageMissing(key, "opentelemetry-sdk", extra) from None
    from runtime.telemetry.otel import OtelTelemetry

    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        # The Functions worker (PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY) or the app set up
        # OpenTelemetry already: a second set of exporters would send everything twice.
        log.info("telemetry: OpenTelemetry is set up already; mlfn's spans and metrics use it")
        return OtelTelemetry()
    if "azure-monitor" in exporters:
        _azure_monitor(settings, with_otlp="otlp" in exporters)
    else:
        _otlp(settings)
    log.info("telemetry on: %s", " and ".join(exporters))
    return OtelTelemetry()


def _otlp(settings: TelemetrySettings) -> None:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

    resource = _resource(settings)
    processors, readers = _otlp_pipelines(settings)
    if processors:
        provider = TracerProvider(resource=resource)
        for processor in processors:
            provider.add_span_processor(processor)
        trace.set_tracer_provider(provider)
    if readers:
        metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))


def _otlp_pipelines(settings: TelemetrySettings) -> tuple[list[Any], list[Any]]:
    """Batch span processors and periodic metric readers with OTLP exporters. The SDK reads the
    endpoints, headers, timeouts, ``OTEL_BSP_*`` and ``OTEL_METRIC_EXPORT_INTERVAL`` itself."""
    try:
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise PackageMissing("OTEL_EXPORTER_OTLP_ENDPOINT", "opentelemetry-sdk", "otel") from None
    span_exporter, metric_exporter = _exporters(settings.otlp_protocol)
    processors = [BatchSpanProcessor(span_exporter())] if settings.otlp_traces else []
    readers = [PeriodicExportingMetricReader(metric_exporter())] if settings.otlp_metrics else []
    return processors, readers


def _exporters(protocol: str) -> tuple[Any, Any]:
    if protocol == "grpc":
        try:
            # Not one of mlfn's extras (grpcio is large): installed by those who want it.
            from opentelemetry.exporter.otlp.proto.grpc import (  # type: ignore[import-not-found,unused-ignore]
                metric_exporter,
                trace_exporter,
            )
        except ImportError:
            raise ConfigError(
                "OTEL_EXPORTER_OTLP_PROTOCOL", protocol, f"http/protobuf, or install {GRPC_PACKAGE}"
            ) from None
        return trace_exporter.OTLPSpanExporter, metric_exporter.OTLPMetricExporter
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter as HttpMetricExporter,
        )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpSpanExporter,
        )
    except ImportError:
        raise PackageMissing(
            "OTEL_EXPORTER_OTLP_ENDPOINT", "opentelemetry-exporter-otlp-proto-http", "otel"
        ) from None
    return HttpSpanExporter, HttpMetricExporter


def _azure_monitor(settings: TelemetrySettings, with_otlp: bool) -> None:
    try:
        from azure.monitor.opentelemetry import configure_azure_monitor
    except ImportError:
        raise PackageMissing(
            "APPLICATIONINSIGHTS_CONNECTION_STRING", "azure-monitor-opentelemetry", "azure-monitor"
        ) from None
    options: dict[str, Any] = {
        "connection_string": settings.app_insights,
        # The Functions host sends the worker's log lines to Application Insights already.
        "disable_logging": True,
    }
    if with_otlp:
        options["span_processors"], options["metric_readers"] = _otlp_pipelines(settings)
    configure_azure_monitor(**options)


def _resource(settings: TelemetrySettings) -> Any:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    resource = Resource.create()  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: settings.default_service_name}))
    return resource

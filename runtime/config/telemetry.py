"""The settings that switch telemetry on: OpenTelemetry's own standard variables and Application
Insights' connection string. They are not mlfn settings (no ``MLFN_`` prefix, not in
``describe()``); mlfn reads only what decides whether, and where, to export. The SDK reads the
rest itself (``OTEL_SERVICE_NAME``, ``OTEL_BSP_*``, ``OTEL_METRIC_EXPORT_INTERVAL``, headers,
timeouts, the per-signal endpoints' paths)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from runtime.config import _FromEnvironment, boolean, setting, text
from runtime.errors import ConfigError

PROTOCOLS = ("http/protobuf", "grpc")


def protocol(name: str, raw: str) -> str:
    value = raw.lower()
    if value not in PROTOCOLS:  # http/json: no Python exporter speaks it
        raise ConfigError(name, raw, "http/protobuf or grpc")
    return value


@dataclass(frozen=True)
class TelemetrySettings(_FromEnvironment):
    """Where traces and metrics go, if anywhere. ``exporters()`` is empty when telemetry is off."""

    otlp_endpoint: str | None = setting(
        "OTEL_EXPORTER_OTLP_ENDPOINT", None, text, "OTLP receiver for traces and metrics."
    )
    otlp_traces_endpoint: str | None = setting(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None, text, "OTLP receiver for traces only."
    )
    otlp_metrics_endpoint: str | None = setting(
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", None, text, "OTLP receiver for metrics only."
    )
    otlp_protocol: str = setting(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf", protocol, "http/protobuf or grpc."
    )
    traces_exporter: str = setting(
        "OTEL_TRACES_EXPORTER", "otlp", text, "none: no traces (metrics may still go)."
    )
    metrics_exporter: str = setting(
        "OTEL_METRICS_EXPORTER", "otlp", text, "none: no metrics (traces may still go)."
    )
    sdk_disabled: bool = setting(
        "OTEL_SDK_DISABLED", False, boolean, "true: no telemetry, whatever else is set."
    )
    service_name: str | None = setting(
        "OTEL_SERVICE_NAME", None, text, "The service's name; default the app's site name."
    )
    site_name: str | None = setting(
        "WEBSITE_SITE_NAME", None, text, "The Function app's name (set by Azure)."
    )
    app_insights: str | None = setting(
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        None,
        text,
        "Application Insights resource: export through azure-monitor-opentelemetry.",
    )

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> TelemetrySettings:
        return cls(**cls._read(env))

    @property
    def otlp_traces(self) -> bool:
        return self.traces_exporter != "none" and bool(
            self.otlp_traces_endpoint or self.otlp_endpoint
        )

    @property
    def otlp_metrics(self) -> bool:
        return self.metrics_exporter != "none" and bool(
            self.otlp_metrics_endpoint or self.otlp_endpoint
        )

    def exporters(self) -> tuple[str, ...]:
        """``otlp`` and/or ``azure-monitor``; empty: telemetry is off."""
        if self.sdk_disabled:
            return ()
        found = ("otlp",) if self.otlp_traces or self.otlp_metrics else ()
        return found + (("azure-monitor",) if self.app_insights else ())

    @property
    def default_service_name(self) -> str:
        return self.site_name or "mlfn"


def read() -> TelemetrySettings:
    """The process environment's telemetry settings (read when telemetry is configured, not at
    import: the local host and the worker set the environment first)."""
    return TelemetrySettings.from_mapping(os.environ)


def wanted() -> bool:
    """Whether the environment asks for telemetry (an invalid value says so later, once)."""
    try:
        return bool(read().exporters())
    except ConfigError:
        return True

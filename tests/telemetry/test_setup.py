"""Turning telemetry on, or not: the standard variables decide; a missing package or a bad
value is one warning that names what to do, and the app serves without telemetry."""

from __future__ import annotations

import logging
import sys

import pytest

from runtime import telemetry
from runtime.config.telemetry import TelemetrySettings
from runtime.telemetry.setup import configure

OTLP = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
INSIGHTS = {"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000"}


@pytest.mark.parametrize(
    ("env", "exporters"),
    [
        ({}, ()),
        ({"OTEL_SERVICE_NAME": "x", "OTEL_BSP_SCHEDULE_DELAY": "5"}, ()),
        (OTLP, ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ("otlp",)),
        ({**OTLP, "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"}, ()),
        ({**OTLP, "OTEL_SDK_DISABLED": "true"}, ()),
        (INSIGHTS, ("azure-monitor",)),
        ({**OTLP, **INSIGHTS}, ("otlp", "azure-monitor")),
    ],
)
def test_the_standard_variables_decide_what_is_exported(
    env: dict[str, str], exporters: tuple[str, ...]
) -> None:
    assert TelemetrySettings.from_mapping(env).exporters() == exporters


def test_off_is_the_no_op_and_costs_no_import() -> None:
    assert configure(TelemetrySettings()) is telemetry.OFF
    assert telemetry.OFF.on is False
    with telemetry.OFF.span("x") as span:
        span.set("k", 1)
    assert span is telemetry.NOOP_SPAN


def test_a_missing_sdk_is_one_warning_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # as if not installed
    with caplog.at_level(logging.WARNING, "mlfn.telemetry"):
        assert configure(TelemetrySettings.from_mapping(OTLP)) is telemetry.OFF
    (record,) = caplog.records
    assert "telemetry is off" in record.message and "pip install 'mlfn[otel]'" in record.message


def test_a_missing_azure_monitor_distro_is_one_warning_naming_its_extra(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "azure.monitor.opentelemetry", None)
    with caplog.at_level(logging.WARNING, "mlfn.telemetry"):
        assert configure(TelemetrySettings.from_mapping(INSIGHTS)) is telemetry.OFF
    (record,) = caplog.records
    assert "azure-monitor-opentelemetry" in record.message
    assert "pip install 'mlfn[azure-monitor]'" in record.message


def test_an_unknown_protocol_is_a_warning_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    env = {**OTLP, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}  # no Python exporter speaks it
    monkeypatch.setattr("runtime.telemetry.setup.read", lambda: TelemetrySettings.from_mapping(env))
    with caplog.at_level(logging.WARNING, "mlfn.telemetry"):
        assert configure() is telemetry.OFF
    (record,) = caplog.records
    assert "OTEL_EXPORTER_OTLP_PROTOCOL='http/json' is invalid" in record.message

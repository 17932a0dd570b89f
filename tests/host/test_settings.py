"""host.json and local.settings.json, read as the Functions tools read them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime.errors import HostConfigError, LocalSettingsError
from runtime.host.local_settings import apply_local_settings
from runtime.host_json import HostConfig


def _host_json(tmp_path: Path, doc: object) -> Path:
    (tmp_path / "host.json").write_text(json.dumps(doc))
    return tmp_path


def test_route_prefix_defaults_to_api_and_can_be_emptied(tmp_path: Path) -> None:
    assert HostConfig.load(_host_json(tmp_path, {"version": "2.0"}), {}).route_prefix == "api"
    empty = {"version": "2.0", "extensions": {"http": {"routePrefix": ""}}}
    assert HostConfig.load(_host_json(tmp_path, empty), {}).route_prefix == ""


def test_app_settings_override_host_json_case_insensitively(tmp_path: Path) -> None:
    doc = {"version": "2.0", "extensions": {"queues": {"maxDequeueCount": 5}}}
    env = {
        "AzureFunctionsJobHost__extensions__queues__maxDequeueCount": "2",
        "AzureFunctionsJobHost__Extensions__Http__RoutePrefix": "v1",
    }
    config = HostConfig.load(_host_json(tmp_path, doc), env)
    assert config.get("extensions", "queues", "maxdequeuecount") == "2"
    assert config.route_prefix == "v1"


@pytest.mark.parametrize("doc", [{"version": "1.0"}, [], "2.0"])
def test_host_json_needs_version_2(tmp_path: Path, doc: object) -> None:
    with pytest.raises(HostConfigError, match=r"2\.0"):
        HostConfig.load(_host_json(tmp_path, doc), {})


def test_local_settings_values_apply_but_existing_variables_win(tmp_path: Path) -> None:
    values = {"A": "from-file", "B": "from-file"}
    (tmp_path / "local.settings.json").write_text(
        json.dumps({"IsEncrypted": False, "Values": values})
    )
    env = {"A": "from-environment"}
    applied = apply_local_settings(tmp_path, env)
    assert env == {"A": "from-environment", "B": "from-file"}
    assert applied == {"B": "from-file"}


def test_local_settings_values_must_be_strings(tmp_path: Path) -> None:
    (tmp_path / "local.settings.json").write_text(json.dumps({"Values": {"PORT": 7071}}))
    with pytest.raises(LocalSettingsError, match=r"Values\.PORT must be a string"):
        apply_local_settings(tmp_path, {})


def test_missing_local_settings_apply_nothing(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    assert apply_local_settings(tmp_path, env) == {} and env == {}


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, 1800.0), ("00:00:05", 5.0), ("01:00:00", 3600.0), ("-1", None), (-1, None)],
)
def test_function_timeout_as_the_host_reads_it(
    tmp_path: Path, value: object, seconds: float | None
) -> None:
    doc: dict[str, object] = {"version": "2.0"}
    if value is not None:
        doc["functionTimeout"] = value
    (tmp_path / "host.json").write_text(json.dumps(doc))
    assert HostConfig.load(tmp_path, {}).function_timeout_s == seconds


@pytest.mark.parametrize("value", ["five minutes", "00:00:00"])
def test_a_function_timeout_the_host_would_refuse_is_named(tmp_path: Path, value: str) -> None:
    (tmp_path / "host.json").write_text(json.dumps({"version": "2.0", "functionTimeout": value}))
    with pytest.raises(HostConfigError, match="functionTimeout"):
        _ = HostConfig.load(tmp_path, {}).function_timeout_s


@pytest.mark.parametrize(("value", "seconds"), [("7.00:00:00", 604800.0), ("00:00:30", 30.0)])
def test_a_visibility_timeout_within_the_services_limit_is_taken(
    tmp_path: Path, value: str, seconds: float
) -> None:
    from runtime.host.queue_options import QueueOptions

    doc = {"version": "2.0", "extensions": {"queues": {"visibilityTimeout": value}}}
    config = HostConfig.load(_host_json(tmp_path, doc), {})
    assert QueueOptions.from_host(config).visibility_timeout_s == seconds


def test_a_visibility_timeout_over_the_services_limit_is_named(tmp_path: Path) -> None:
    """The queue service refuses a release hiding a message over 7 days: the failed message
    would come back when its lease lapsed, not when host.json says."""
    from runtime.host.queue_options import QueueOptions

    doc = {"version": "2.0", "extensions": {"queues": {"visibilityTimeout": "7.00:00:01"}}}
    config = HostConfig.load(_host_json(tmp_path, doc), {})
    with pytest.raises(HostConfigError, match=r"visibilityTimeout='7\.00:00:01' is over"):
        QueueOptions.from_host(config)

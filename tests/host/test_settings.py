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

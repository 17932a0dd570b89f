"""Settings: every setting has a default, reads a valid value, refuses an invalid one with an
error that names it; an unknown MLFN_* variable is reported with the closest known name."""

from __future__ import annotations

import json
import logging
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from runtime import config
from runtime.config import HostSettings, Settings
from runtime.errors import ConfigError

# Per parser: a valid raw value with what it reads as, and raw values it must refuse.
SAMPLES: dict[Any, tuple[str, Any, tuple[str, ...]]] = {
    config.text: ("some text", "some text", ()),
    config.number: ("2.5", 2.5, ("fast", "-1", "nan", "inf")),
    config.optional_number: ("7", 7.0, ("soon", "-3")),
    config.share: ("0.25", 0.25, ("1.5", "-0.1", "half")),
    config.whole_number: ("4.0", 4, ("2.5", "-1", "many", "inf")),
    config.positive_whole_number: ("8", 8, ("0", "-2", "1.5")),
    config.optional_positive_whole_number: ("3", 3, ("-1", "1.5", "x")),
    config.boolean: ("Yes", True, ("maybe", "2")),
    config.optimization_level: ("Extended", "extended", ("fast", "none")),
    config.log_format: ("JSON", "json", ("yaml", "xml")),
    config.warm_start: ("Models", "models", ("always", "on")),
    config.path: ("/srv/cache", Path("/srv/cache"), ()),
    config.names: (" iris, ,diabetes ", ("iris", "diabetes"), ()),
    # A connection is read with the name of its setting: ``expected`` takes the variable.
    config.storage_account: (
        "UseDevelopmentStorage=true",
        lambda variable: config.storage_account(variable, "UseDevelopmentStorage=true"),
        ("http://acct.blob.core.windows.net", "https://"),
    ),
}
Kind = type[Settings] | type[HostSettings]
FIELDS = [(kind, f) for kind in (Settings, HostSettings) for f in fields(kind)]
SETTINGS = [
    pytest.param(kind, f.name, f.metadata["variable"], f.metadata["parse"], id=f.name)
    for kind, f in FIELDS
]
INVALID = [
    pytest.param(kind, f.metadata["variable"], raw, id=f"{f.metadata['variable']}={raw}")
    for kind, f in FIELDS
    for raw in SAMPLES[f.metadata["parse"]][2]
]


def test_every_setting_is_described_and_its_parser_has_samples() -> None:
    described = config.describe()
    assert [v for v, _, _ in described] == [f.metadata["variable"] for _, f in FIELDS]
    assert all(help_text.strip() for _, _, help_text in described)
    assert {f.metadata["parse"] for _, f in FIELDS} <= set(SAMPLES)
    assert Settings.variable("cache_dir") == "MLFN_CACHE_DIR"
    assert HostSettings.variable("function_key") == "MLFN_FUNCTION_KEY"


@pytest.mark.parametrize(("kind", "field", "variable", "parse"), SETTINGS)
def test_a_setting_left_unset_or_blank_has_its_default(
    kind: Kind, field: str, variable: str, parse: Any
) -> None:
    default = getattr(kind(), field)
    if field == "store_connection":
        default = None  # falls back to AzureWebJobsStorage, unset here too
    assert getattr(kind.from_mapping({}), field) == default
    assert getattr(kind.from_mapping({variable: "   "}), field) == default


@pytest.mark.parametrize(("kind", "field", "variable", "parse"), SETTINGS)
def test_a_setting_reads_a_valid_value(kind: Kind, field: str, variable: str, parse: Any) -> None:
    raw, expected, _ = SAMPLES[parse]
    if callable(expected):
        expected = expected(variable)
    assert getattr(kind.from_mapping({variable: raw}), field) == expected


@pytest.mark.parametrize(("kind", "variable", "raw"), INVALID)
def test_an_invalid_value_is_an_error_naming_the_setting(
    kind: Kind, variable: str, raw: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        kind.from_mapping({variable: raw})
    assert caught.value.key == variable
    assert variable in caught.value.message and repr(raw) in caught.value.message


def test_the_deployed_app_never_reads_the_local_hosts_settings() -> None:
    env = {"MLFN_HOST_QUEUE_LEASE_S": "soon", "PYTHON_THREADPOOL_THREAD_COUNT": "0"}
    assert Settings.from_mapping(env) == Settings()
    with pytest.raises(ConfigError):
        HostSettings.from_mapping(env)


def test_zero_switches_an_optional_feature_off() -> None:
    settings = Settings.from_mapping({"MLFN_MEMORY_BUDGET_MB": "0", "MLFN_IDLE_UNLOAD_S": "0"})
    assert settings.memory_budget_mb is None and settings.idle_unload_s is None


def test_the_model_store_account_defaults_to_the_apps_own() -> None:
    own = Settings.from_mapping({"AzureWebJobsStorage": "A"}).store_connection
    assert own == config.storage_account("AzureWebJobsStorage", "A")
    both = {"AzureWebJobsStorage": "A", "MLFN_MODEL_STORE_CONNECTION": "B"}
    store = Settings.from_mapping(both).store_connection
    assert store == config.storage_account("MLFN_MODEL_STORE_CONNECTION", "B")
    identity = {"AzureWebJobsStorage": "A", "MLFN_MODEL_STORE_CONNECTION__accountName": "models"}
    store = Settings.from_mapping(identity).store_connection
    assert store is not None and store.blob_url == "https://models.blob.core.windows.net"


def test_unknown_mlfn_variables_are_named_with_the_closest_setting() -> None:
    env = {"MLFN_CACHE_DRI": "/x", "MLFN_MEMORY_BUDGET": "9", "MLFN_CACHE_DIR": "/y", "PATH": "/"}
    found = config.unknown_settings(env)
    assert found == [
        "MLFN_CACHE_DRI is not an mlfn setting and is ignored; did you mean MLFN_CACHE_DIR?",
        "MLFN_MEMORY_BUDGET is not an mlfn setting and is ignored; "
        "did you mean MLFN_MEMORY_BUDGET_MB?",
    ]
    assert config.unknown_settings({"MLFN_ZZZZZZZZ": "1"}) == [
        "MLFN_ZZZZZZZZ is not an mlfn setting and is ignored"
    ]


def test_unknown_variables_are_warned_about_once_per_process(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(config, "_warned", False)
    with caplog.at_level(logging.WARNING, logger="mlfn.config"):
        config.warn_unknown({"MLFN_PRELAOD": "iris"})
        config.warn_unknown({"MLFN_PRELAOD": "iris"})
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        "MLFN_PRELAOD is not an mlfn setting and is ignored; did you mean MLFN_PRELOAD?"
    ]


def test_the_model_cache_is_in_the_temporary_folder_the_environment_names() -> None:
    # TMPDIR set (a shared machine, a sandbox): the cache goes there, not to /tmp.
    assert Settings.from_mapping({"TMPDIR": "/scratch/me"}).cache_dir == Path(
        "/scratch/me/mlfn-cache"
    )
    assert Settings.from_mapping({}).cache_dir == Path("/tmp/mlfn-cache")  # Azure's /tmp
    given = {"TMPDIR": "/scratch/me", "MLFN_CACHE_DIR": "/models"}
    assert Settings.from_mapping(given).cache_dir == Path("/models")


def test_the_example_local_settings_leave_the_cache_to_its_default() -> None:
    """make serve copies the example: a cache pinned to /tmp ignored TMPDIR, which the README
    says the default follows."""
    from tests.support import ROOT

    values = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    assert "MLFN_CACHE_DIR" not in values

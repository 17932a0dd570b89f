"""The client commands' settings: where mlfn invoke finds the app."""

from __future__ import annotations

import pytest

from runtime import config
from runtime.config.client import DEFAULT_URL, ClientSettings
from runtime.errors import ConfigError


def test_mlfn_url_is_the_apps_base_url_with_a_local_default() -> None:
    assert ClientSettings.from_mapping({}).url == DEFAULT_URL == "http://127.0.0.1:7071"
    given = ClientSettings.from_mapping({"MLFN_URL": "http://127.0.0.1:7072/ "})
    assert given.url == "http://127.0.0.1:7072"


@pytest.mark.parametrize("raw", ["127.0.0.1:7071", "ftp://host", "http://", "http://h/?code=1"])
def test_a_url_that_is_not_an_apps_base_url_is_refused_naming_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match="MLFN_URL"):
        ClientSettings.from_mapping({"MLFN_URL": raw})


def test_mlfn_url_is_not_taken_for_a_typo_by_the_host() -> None:
    # make serve prints `export MLFN_URL=...`; a shell that has it may well run mlfn serve too.
    assert config.unknown_settings({"MLFN_URL": "http://127.0.0.1:7072"}) == []
    assert config.unknown_settings({"MLFN_URLS": "x"}) != []

"""The client commands' settings (``mlfn invoke``, ``enqueue``, ``results``, ``batch``,
``upload``): where the app and its storage are. Read from the shell's environment, which
``make serve`` tells other terminals how to set; never an app setting, so never deployed."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from runtime.config import _FromEnvironment, setting
from runtime.errors import ConfigError

DEFAULT_URL = "http://127.0.0.1:7071"


def app_url(name: str, raw: str) -> str:
    """An app's base URL: http(s)://HOST[:PORT][/PATH], without a query."""
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise ConfigError(name, raw, "the app's base URL, like http://127.0.0.1:7071")
    return raw.rstrip("/")


@dataclass(frozen=True)
class ClientSettings(_FromEnvironment):
    """Where the client commands find the app. Storage is found as ``mlfn serve`` finds it:
    the trigger's connection setting (``AzureWebJobsStorage``), from the environment first,
    then local.settings.json Values."""

    url: str = setting(
        "MLFN_URL",
        DEFAULT_URL,
        app_url,
        "Base URL of the app that mlfn invoke calls (make serve prints it when it serves "
        "elsewhere).",
    )

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> ClientSettings:
        return cls(**cls._read(env))


def read() -> ClientSettings:
    """The shell's client settings (a command reads them once, when it needs them)."""
    return ClientSettings.from_mapping(os.environ)

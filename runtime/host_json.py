"""``host.json``, with the app-setting overrides Azure applies (``AzureFunctionsJobHost__a__b``).

Read by the app itself (its HTTP route prefix) and by the local host, so it lives outside
``runtime.host``: a deployed app never imports the local host.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.errors import HostConfigError

OVERRIDE_PREFIX = "azurefunctionsjobhost__"
DEFAULT_ROUTE_PREFIX = "api"


@dataclass(frozen=True)
class HostConfig:
    """The app's host configuration. Keys are matched case-insensitively, as the host does."""

    doc: dict[str, Any]

    @classmethod
    def load(cls, app_dir: Path, env: Mapping[str, str]) -> HostConfig:
        path = app_dir / "host.json"
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise HostConfigError(f"{path} is missing; a Functions app needs one") from None
        except json.JSONDecodeError as exc:
            raise HostConfigError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("version") != "2.0":
            raise HostConfigError(f'{path} must be an object with "version": "2.0"')
        for key, value in env.items():
            if key.lower().startswith(OVERRIDE_PREFIX):
                _set(doc, key[len(OVERRIDE_PREFIX) :].split("__"), value)
        return cls(doc)

    def get(self, *path: str, default: Any = None) -> Any:
        node: Any = self.doc
        for key in path:
            if not isinstance(node, dict):
                return default
            match = next((k for k in node if k.lower() == key.lower()), None)
            if match is None:
                return default
            node = node[match]
        return node

    @property
    def route_prefix(self) -> str:
        prefix = self.get("extensions", "http", "routePrefix", default=DEFAULT_ROUTE_PREFIX)
        return str(prefix).strip("/")


def route_prefix(app_dir: Path, env: Mapping[str, str] | None = None) -> str:
    """The app's HTTP route prefix (``api`` unless host.json or an override says otherwise)."""
    try:
        return HostConfig.load(app_dir, os.environ if env is None else env).route_prefix
    except HostConfigError:
        return DEFAULT_ROUTE_PREFIX


def _set(doc: dict[str, Any], path: list[str], value: str) -> None:
    node = doc
    for key in path[:-1]:
        match = next((k for k in node if k.lower() == key.lower()), None)
        if match is None or not isinstance(node[match], dict):
            match = match or key
            node[match] = {}
        node = node[match]
    last = next((k for k in node if k.lower() == path[-1].lower()), path[-1])
    node[last] = value

"""``host.json``, with the app-setting overrides Azure applies (``AzureFunctionsJobHost__a__b``).

Read by the app itself (its HTTP route prefix) and by the local host, so it lives outside
``runtime.host``: a deployed app never imports the local host.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.errors import HostConfigError

OVERRIDE_PREFIX = "azurefunctionsjobhost__"
DEFAULT_ROUTE_PREFIX = "api"
DEFAULT_FUNCTION_TIMEOUT_S = 30 * 60.0
DEFAULT_MAX_DEQUEUE_COUNT = 5


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
    def function_timeout_s(self) -> float | None:
        """``functionTimeout`` in seconds; None for unbounded (``-1``). Unset: 30 minutes,
        the default of the Flex Consumption, Premium and Dedicated plans."""
        value = self.get("functionTimeout")
        if value is None:
            return DEFAULT_FUNCTION_TIMEOUT_S
        if str(value).strip() == "-1":
            return None
        seconds = parse_timespan(value, "functionTimeout")
        if seconds <= 0:
            raise HostConfigError(f"host.json functionTimeout={value!r} must be positive or -1")
        return seconds

    @property
    def route_prefix(self) -> str:
        prefix = self.get("extensions", "http", "routePrefix", default=DEFAULT_ROUTE_PREFIX)
        return str(prefix).strip("/")


_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d+))?$")


def parse_timespan(value: Any, key: str) -> float:
    """Seconds in a .NET TimeSpan (``[d.]hh:mm:ss[.fff]``); a bare number is milliseconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) / 1000
    m = _TIMESPAN.match(str(value).strip())
    if not m:
        raise HostConfigError(f"host.json {key}={value!r} is not a time span like 00:00:05")
    days, hours, minutes, seconds, fraction = m.groups()
    total = int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(seconds)
    return total + (float(f"0.{fraction}") if fraction else 0.0)


def route_prefix(app_dir: Path, env: Mapping[str, str] | None = None) -> str:
    """The app's HTTP route prefix (``api`` unless host.json or an override says otherwise)."""
    try:
        return HostConfig.load(app_dir, os.environ if env is None else env).route_prefix
    except HostConfigError:
        return DEFAULT_ROUTE_PREFIX


def max_dequeue_count(app_dir: Path, env: Mapping[str, str] | None = None) -> int:
    """The deliveries a queue message gets before the host moves it to the poison queue
    (``extensions.queues.maxDequeueCount``); the default where host.json cannot say."""
    try:
        config = HostConfig.load(app_dir, os.environ if env is None else env)
        value = config.get("extensions", "queues", "maxDequeueCount")
        return int(value) if value else DEFAULT_MAX_DEQUEUE_COUNT
    except (HostConfigError, TypeError, ValueError):
        return DEFAULT_MAX_DEQUEUE_COUNT


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

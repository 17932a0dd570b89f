"""``local.settings.json``: ``Values`` become environment variables, as under ``func start``."""

from __future__ import annotations

import json
import os
from collections.abc import MutableMapping
from pathlib import Path

from runtime.errors import LocalSettingsError


def apply_local_settings(
    app_dir: Path, env: MutableMapping[str, str] | None = None
) -> dict[str, str]:
    """Copy ``Values`` into ``env`` (the process environment by default) where not already
    set: variables set outside win, so tests and deployments can override the file. Returns
    the values that were applied. A missing file applies nothing."""
    env = os.environ if env is None else env
    path = app_dir / "local.settings.json"
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise LocalSettingsError(f"{path} is not valid JSON: {exc}") from None
    values = doc.get("Values", {}) if isinstance(doc, dict) else None
    if not isinstance(values, dict):
        raise LocalSettingsError(f'{path}: "Values" must be an object of strings')
    applied = {}
    for key, value in values.items():
        if not isinstance(value, str):
            raise LocalSettingsError(
                f"{path}: Values.{key} must be a string, like every app setting"
            )
        if key not in env:
            env[key] = value
            applied[key] = value
    return applied

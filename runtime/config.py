"""Settings, read once from a mapping (the process environment unless a test passes a dict)."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import ConfigError

PREFIX = "MLFN_"
STORAGE_SETTING = "AzureWebJobsStorage"


@dataclass(frozen=True)
class Settings:
    """Everything the runtime reads from its environment.

    ``store_connection`` is the storage connection string for ``az://`` models: the value of
    ``MLFN_MODEL_STORE_CONNECTION``, else of ``AzureWebJobsStorage``. ``storage_connection``
    is the app's own storage account (``AzureWebJobsStorage``): queues, claim-check payloads
    and large results live there.
    """

    model_store: str | None = None
    store_connection: str | None = None
    storage_connection: str | None = None
    s3_endpoint_url: str | None = None
    cache_dir: Path = Path("/tmp/mlfn-cache")
    store_connect_timeout_s: float = 3.0
    store_read_timeout_s: float = 30.0
    store_retries: int = 2
    load_timeout_s: float = 120.0
    memory_budget_mb: float | None = None
    idle_unload_s: float | None = None
    revalidate_s: float | None = None
    preload: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> Settings:
        reader = _Reader(env)
        return cls(
            model_store=reader.text("MODEL_STORE"),
            store_connection=reader.text("MODEL_STORE_CONNECTION")
            or env.get(STORAGE_SETTING)
            or None,
            storage_connection=env.get(STORAGE_SETTING) or None,
            s3_endpoint_url=reader.text("S3_ENDPOINT_URL"),
            cache_dir=Path(reader.text("CACHE_DIR") or cls.cache_dir),
            store_connect_timeout_s=reader.number("STORE_CONNECT_TIMEOUT_S", 3.0),
            store_read_timeout_s=reader.number("STORE_READ_TIMEOUT_S", 30.0),
            store_retries=int(reader.number("STORE_RETRIES", 2)),
            load_timeout_s=reader.number("LOAD_TIMEOUT_S", 120.0),
            memory_budget_mb=reader.optional_number("MEMORY_BUDGET_MB"),
            idle_unload_s=reader.optional_number("IDLE_UNLOAD_S"),
            revalidate_s=reader.optional_number("REVALIDATE_S"),
            preload=tuple(
                n.strip() for n in (reader.text("PRELOAD") or "").split(",") if n.strip()
            ),
        )


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def text(self, name: str) -> str | None:
        value = self._env.get(PREFIX + name, "").strip()
        return value or None

    def optional_number(self, name: str) -> float | None:
        """A positive number, or None when unset or 0 (the feature is off)."""
        value = self.number(name, 0.0)
        return value or None

    def number(self, name: str, default: float) -> float:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(PREFIX + name, raw, "a number") from None
        if value < 0:
            raise ConfigError(PREFIX + name, raw, "a number >= 0")
        return value


_current: Settings | None = None
_lock = threading.Lock()


def current() -> Settings:
    """The process's settings, read from ``os.environ`` on first use (not at import: the local
    host and the Functions worker set the environment before the first invocation)."""
    global _current
    with _lock:
        if _current is None:
            _current = Settings.from_mapping(os.environ)
        return _current

"""The app's process-wide state, built on first invocation rather than at import (cold start)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from runtime import config
from runtime.endpoint import BoundEndpoint
from runtime.models.registry import ModelRegistry
from runtime.serving import Scorer


@dataclass(frozen=True)
class Services:
    settings: config.Settings
    registry: ModelRegistry
    scorer: Scorer


class AppState:
    """Builds the settings, model registry and scorer once, on the first ``get``."""

    def __init__(
        self,
        endpoints: list[BoundEndpoint],
        app_root: Path,
        settings: config.Settings | None = None,
    ) -> None:
        self.endpoints = {b.name: b for b in endpoints}
        self.app_root = app_root
        self._settings = settings
        self._services: Services | None = None
        self._lock = threading.Lock()

    def get(self) -> Services:
        with self._lock:
            if self._services is None:
                settings = self._settings or config.current()
                registry = ModelRegistry(settings, self.app_root)
                self._services = Services(settings, registry, Scorer(self.endpoints, registry))
            return self._services

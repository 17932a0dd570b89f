"""The app's process-wide state, built on first invocation rather than at import (cold start)."""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime import config
from runtime.batching import Batcher
from runtime.endpoint import BoundEndpoint
from runtime.jobs import JobRunner
from runtime.models.registry import ModelRegistry
from runtime.payloads import Payloads
from runtime.serving import Scored, Scorer


@dataclass(frozen=True)
class Services:
    settings: config.Settings
    registry: ModelRegistry
    scorer: Scorer
    batchers: dict[str, Batcher[Any, Scored]]
    jobs: JobRunner


class AppState:
    """Builds the settings, model registry, scorer and batchers once, on the first ``get``."""

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
                self._services = self._build(self._settings or config.current())
            return self._services

    def _build(self, settings: config.Settings) -> Services:
        registry = ModelRegistry(settings, self.app_root)
        scorer = Scorer(self.endpoints, registry)
        batchers: dict[str, Batcher[Any, Scored]] = {
            name: Batcher(
                functools.partial(scorer.predict, name),
                _split,
                max_batch_size=bound.endpoint.limits.max_batch_size,
                max_wait_s=bound.endpoint.limits.max_batch_wait_ms / 1000,
            )
            for name, bound in self.endpoints.items()
        }
        jobs = JobRunner(scorer, batchers, Payloads(settings))
        return Services(settings, registry, scorer, batchers, jobs)


def _split(scored: Scored, start: int, count: int) -> Scored:
    return Scored(scored.predictions[start : start + count], scored.model)

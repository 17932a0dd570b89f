"""The app's process-wide state, built on first invocation rather than at import (cold start)."""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime import config
from runtime.batching import Batcher
from runtime.endpoint import BoundEndpoint
from runtime.errors import MlfnError
from runtime.jobs import JobRunner
from runtime.models.registry import ModelRegistry
from runtime.payloads import Payloads
from runtime.serving import Scored, Scorer
from runtime.tensor_serving import TensorService

log = logging.getLogger("mlfn.models")


@dataclass(frozen=True)
class Services:
    settings: config.Settings
    registry: ModelRegistry
    scorer: Scorer
    batchers: dict[str, Batcher[Any, Scored]]
    jobs: JobRunner
    tensors: TensorService


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

    def route_prefix(self) -> str:
        """The app's HTTP route prefix, from host.json beside function_app.py (default api)."""
        import os

        from runtime.host.host_json import HostConfig, HostConfigError

        try:
            return HostConfig.load(self.app_root, os.environ).route_prefix
        except HostConfigError:
            return "api"

    def start_preload(self) -> None:
        """Load the endpoints named in ``MLFN_PRELOAD`` in a background thread, so an
        always-ready instance has them in memory before traffic, without delaying indexing."""
        try:
            settings = self._settings or config.current()
        except MlfnError as exc:  # reported again on every request; indexing must not fail
            log.error("settings are invalid: %s", exc.message)
            return
        unknown = [n for n in settings.preload if n not in self.endpoints]
        if unknown:
            log.error(
                "MLFN_PRELOAD names unknown endpoints %s; known: %s",
                unknown,
                sorted(self.endpoints),
            )
        names = [n for n in settings.preload if n in self.endpoints]
        if names:
            threading.Thread(
                target=self._preload, args=(names,), name="mlfn-preload", daemon=True
            ).start()

    def _preload(self, names: list[str]) -> None:
        registry = self.get().registry
        for name in names:
            try:
                registry.get(name, self.endpoints[name].endpoint.model)
            except Exception as exc:
                log.error("preloading %s failed: %s", name, exc)

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
            if bound.endpoint.predict_fn is not None  # tensor-only endpoints are never batched
        }
        jobs = JobRunner(scorer, batchers, Payloads(settings))
        tensors = TensorService(self.endpoints, registry)
        return Services(settings, registry, scorer, batchers, jobs, tensors)


def _split(scored: Scored, start: int, count: int) -> Scored:
    return Scored(scored.predictions[start : start + count], scored.model)

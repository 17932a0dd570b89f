"""Model lifecycle: each model is absent, loading, ready or failed, and loads once, lazily."""

from __future__ import annotations

import enum
import logging
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path

from runtime.config import Settings
from runtime.endpoint import Model
from runtime.errors import ModelLoadTimeout
from runtime.models.cache import DiskCache
from runtime.models.onnx_model import LoadReport, OnnxModel
from runtime.store import locate, resolve_uri

log = logging.getLogger("mlfn.models")


class ModelState(enum.Enum):
    ABSENT = "absent"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass
class _Slot:
    state: ModelState = ModelState.ABSENT
    model: OnnxModel | None = None
    error: BaseException | None = None
    flight: Future[OnnxModel] | None = None


class ModelRegistry:
    """Loaded models by name.

    The first caller of ``get`` for a model loads it; callers that arrive meanwhile wait for
    that same load (single flight), bounded by ``MLFN_LOAD_TIMEOUT_S``. A failed load keeps its
    error for ``error()`` and is tried again by the next caller, so a model uploaded late or a
    store that comes back is picked up without a restart.
    """

    def __init__(self, settings: Settings, app_root: Path, cache: DiskCache | None = None) -> None:
        self._settings = settings
        self._app_root = app_root
        self._cache = cache or DiskCache(settings.cache_dir)
        self._slots: dict[str, _Slot] = {}
        self._lock = threading.Lock()

    def get(self, name: str, ref: Model) -> OnnxModel:
        with self._lock:
            slot = self._slots.setdefault(name, _Slot())
            if slot.model is not None:
                return slot.model
            flight = slot.flight
            leader = flight is None
            if flight is None:
                flight = slot.flight = Future()
                slot.state = ModelState.LOADING
        if not leader:
            try:
                return flight.result(timeout=self._settings.load_timeout_s)
            except FutureTimeout:
                raise ModelLoadTimeout(name, self._settings.load_timeout_s) from None
        try:
            model = self._load(name, ref)
        except BaseException as exc:
            with self._lock:
                slot.state, slot.error, slot.flight = ModelState.FAILED, exc, None
            flight.set_exception(exc)
            raise
        with self._lock:
            slot.state, slot.model, slot.error, slot.flight = ModelState.READY, model, None, None
        flight.set_result(model)
        return model

    def state(self, name: str) -> ModelState:
        with self._lock:
            slot = self._slots.get(name)
            return slot.state if slot else ModelState.ABSENT

    def error(self, name: str) -> BaseException | None:
        with self._lock:
            slot = self._slots.get(name)
            return slot.error if slot else None

    def _load(self, name: str, ref: Model) -> OnnxModel:
        uri = resolve_uri(ref.uri, self._settings, self._app_root)
        cached = self._cache.fetch(locate(uri, self._settings), ref.sha256)
        started = time.perf_counter()
        model = OnnxModel.load(
            name, cached.path, sha256=cached.sha256, version=ref.version or cached.sha256[:12]
        )
        model.report = LoadReport(
            source_uri=uri,
            bytes=cached.size,
            downloaded=cached.downloaded,
            fetch_s=round(cached.seconds, 4),
            session_s=round(time.perf_counter() - started, 4),
        )
        log.info(
            "model loaded name=%s uri=%s bytes=%d downloaded=%s fetch_s=%.4f session_s=%.4f",
            name,
            uri,
            cached.size,
            cached.downloaded,
            model.report.fetch_s,
            model.report.session_s,
        )
        return model

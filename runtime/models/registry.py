"""Model lifecycle: each model is absent, loading, ready or failed; it loads once, lazily, and
lives in memory under a budget and an idle timeout."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import logging
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path

from runtime import telemetry
from runtime.config import Settings
from runtime.errors import MlfnError, ModelLoadTimeout, StoreUnavailable
from runtime.model_store import ModelSource, locate, resolve_uri
from runtime.models.cache import DiskCache
from runtime.models.memory import MB, release_to_os, rss_bytes
from runtime.models.onnx_model import LoadReport, OnnxModel
from runtime.models.reference import Model
from runtime.models.session import SessionConfig
from runtime.models.warm import import_in_background

log = logging.getLogger("mlfn.models")

# How long a failed load's error is given to new requests before a load is tried again: the
# Retry-After a 503 asks clients to wait (StoreUnavailable.retry_after_s).
FAILED_LOAD_MEMORY_S = float(StoreUnavailable.retry_after_s)


def version_key(endpoint: str, label: str, ref: Model) -> str:
    """The name one version of an endpoint's model is held by, beside the endpoint's own: its
    label and which model (a label pointed at other bytes is another model, never the old one
    found under the same name)."""
    which = hashlib.blake2b(f"{ref.uri}\n{ref.sha256}\n{ref.threads}".encode(), digest_size=4)
    return f"{endpoint}@{label}#{which.hexdigest()}"


def endpoint_of(name: str) -> str:
    """The endpoint a held model serves (``version_key``'s inverse)."""
    return name.partition("@")[0]


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
    # One entry per holder of the model. A list, never replaced, so the warm path takes and
    # gives back a hold with no lock: append and pop are atomic, and eviction (``_evict``)
    # reads it after hiding the model, so a hold is seen or the model is not taken.
    holders: list[None] = dataclasses.field(default_factory=list)
    last_used: float = 0.0
    size: int = 0
    etag: str | None = None
    checked: float = 0.0
    refreshing: bool = False
    retry_at: float = 0.0  # a failed load is told again, not tried again, until then
    retired: str | None = None  # its name, when it is to be unloaded as its last hold ends


class ModelRegistry:
    """Loaded models by name.

    The first caller that needs a model loads it; callers arriving meanwhile wait for that same
    load (single flight), bounded by ``MLFN_LOAD_TIMEOUT_S``. A failed load keeps its error for
    ``error()`` and is tried again by the next caller, so a model uploaded late or a store that
    comes back is picked up without a restart.

    With ``MLFN_MEMORY_BUDGET_MB``, loading a model first unloads the least recently used idle
    ones until it fits; a model serving a request (inside ``use``) is never unloaded. With
    ``MLFN_IDLE_UNLOAD_S``, models idle that long are unloaded. With ``MLFN_REVALIDATE_S``, a
    loaded model is checked against its store at most that often, in the background; a changed
    model is loaded beside the old one and swapped in, and the old session is released once the
    requests using it finish.
    """

    def __init__(self, settings: Settings, app_root: Path, cache: DiskCache | None = None) -> None:
        self.settings = settings
        self.app_root = app_root
        self._cache = cache or DiskCache(settings.cache_dir, settings.load_timeout_s)
        self._budget = int(settings.memory_budget_mb * MB) if settings.memory_budget_mb else None
        self._session_config = SessionConfig.from_settings(settings)
        self._slots: dict[str, _Slot] = {}
        self._lock = threading.Lock()
        self._reaper: threading.Thread | None = None
        telemetry.current().watch_models(self.resident, self._budget)

    def use(self, name: str, ref: Model) -> _Held:
        """``with registry.use(name, ref) as model``: the model, loaded if needed, held in
        memory until the block ends."""
        return _Held(self, name, ref)

    def use_loaded(self, name: str, ref: Model) -> _Held | None:
        """Like ``use``, but only for a model in memory now: None rather than a load (for
        callers that must not block, e.g. on an event loop). Takes no lock: the warm path."""
        slot = self._slots.get(name)
        if slot is None:
            return None
        slot.holders.append(None)  # held first, then looked at: see _evict
        model = slot.model
        if model is None:
            slot.holders.pop()
            return None
        if self._due(slot):
            with self._lock:
                self._revalidate_soon(name, ref, slot)
        return _Held(self, name, ref, (model, slot))

    def unload(self, name: str) -> bool:
        """Unload ``name`` (a release dropped or replaced its version): now if it is idle,
        else when the last request holding it ends. True if it was unloaded now."""
        with self._lock:
            slot = self._slots.get(name)
            if slot is None or slot.model is None:
                return False
            if slot.holders:
                slot.retired = name  # _release unloads it
                return False
            evicted = self._evict(name, slot, "release")
        if evicted:
            release_to_os()
        return evicted

    def _release(self, slot: _Slot) -> None:
        slot.last_used = time.monotonic()  # before the hold goes: the reaper reads both
        slot.holders.pop()
        if slot.retired is not None and not slot.holders:
            self.unload(slot.retired)

    def get(self, name: str, ref: Model) -> OnnxModel:
        """Load (if needed) and return the model, without holding it."""
        with self.use(name, ref) as model:
            return model

    def state(self, name: str) -> ModelState:
        with self._lock:
            slot = self._slots.get(name)
            return slot.state if slot else ModelState.ABSENT

    def retry_in(self, name: str) -> float:
        """Seconds until a failed load of ``name`` is tried again (0: the next use tries)."""
        with self._lock:
            slot = self._slots.get(name)
            if slot is None or slot.error is None or slot.flight is not None:
                return 0.0
            return max(0.0, slot.retry_at - time.monotonic())

    def error(self, name: str) -> BaseException | None:
        with self._lock:
            slot = self._slots.get(name)
            return slot.error if slot else None

    def resident(self) -> dict[str, int]:
        """Models in memory and their estimated sizes in bytes."""
        with self._lock:
            return {n: s.size for n, s in self._slots.items() if s.model is not None}

    def source(self, ref: Model) -> ModelSource:
        """Where the model's bytes are: its reference resolved against the store settings."""
        return locate(resolve_uri(ref.uri, self.settings, self.app_root), self.settings)

    def _resident_names(self) -> str:
        """Comma-separated names of the models in memory. Call with the lock held."""
        return ",".join(sorted(n for n, s in self._slots.items() if s.model is not None))

    def _acquire(self, name: str, ref: Model) -> tuple[OnnxModel, _Slot]:
        deadline = time.monotonic() + self.settings.load_timeout_s
        while True:
            with self._lock:
                slot = self._slots.get(name)
                if slot is None:
                    slot = self._slots[name] = _Slot()
                if slot.model is not None:
                    slot.holders.append(None)
                    slot.retired = None  # wanted again
                    self._revalidate_soon(name, ref, slot)
                    return slot.model, slot
                if slot.flight is None and slot.error and time.monotonic() < slot.retry_at:
                    # Within Retry-After of a failed load: the same answer at once, rather
                    # than every request waiting out the store's timeout again.
                    raise slot.error.with_traceback(None)
                flight = slot.flight
                leader = flight is None
                if flight is None:
                    flight = slot.flight = Future()
                    slot.state = ModelState.LOADING
            if leader:
                return self._lead(name, ref, slot, flight), slot
            try:
                flight.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                raise ModelLoadTimeout(name, self.settings.load_timeout_s) from None
            # Loaded: take it through the lock again (it may have been evicted meanwhile).

    def _lead(self, name: str, ref: Model, slot: _Slot, flight: Future[OnnxModel]) -> OnnxModel:
        try:
            model, size, etag = self._load(name, ref)
        except BaseException as exc:
            with self._lock:
                slot.state, slot.error, slot.flight = ModelState.FAILED, exc, None
                if isinstance(exc, MlfnError):
                    slot.retry_at = time.monotonic() + FAILED_LOAD_MEMORY_S
            flight.set_exception(exc)
            raise
        with self._lock:
            slot.state, slot.model, slot.error, slot.flight = ModelState.READY, model, None, None
            slot.size, slot.last_used = size, time.monotonic()
            slot.holders.append(None)  # the leader's own hold
            slot.etag, slot.checked = etag, time.monotonic()
            evicted = self._make_room(0, keep=name)
            resident = self._resident_names()
        flight.set_result(model)
        if evicted:
            release_to_os()
        self._start_reaper()
        report = model.report
        assert report is not None
        log.info(
            "model loaded name=%s uri=%s cache=%s bytes=%d downloaded_bytes=%d fetch_s=%.4f "
            "verify_s=%.4f session_s=%.4f warmup_s=%.4f total_s=%.4f memory_mb=%.1f "
            "provider=%s optimized=%s resident=%s",
            name, report.source_uri, report.cache, report.bytes, report.downloaded_bytes,
            report.fetch_s, report.verify_s, report.session_s, report.warmup_s, report.total_s,
            report.memory_bytes / MB, report.provider, report.optimized, resident,
        )  # fmt: skip
        return model

    def _due(self, slot: _Slot) -> bool:
        """A background check of the loaded model is due (read without the lock: a stale
        answer only moves the check by one request)."""
        every = self.settings.revalidate_s
        return (
            every is not None and not slot.refreshing and time.monotonic() - slot.checked >= every
        )

    def _revalidate_soon(self, name: str, ref: Model, slot: _Slot) -> None:
        """Start a background check of a loaded model, if one is still due (one may have run
        since a caller looked without the lock). Call with the lock held."""
        if not self._due(slot):
            return
        slot.refreshing = True
        try:
            threading.Thread(target=self._revalidate, args=(name, ref, slot), daemon=True).start()
        except BaseException:  # no thread to be had: the next request tries again
            slot.refreshing = False
            log.warning("cannot start a check of model %s", name, exc_info=True)

    def _revalidate(self, name: str, ref: Model, slot: _Slot) -> None:
        try:
            current = self.source(ref).stat().etag
            if current == slot.etag:
                return
            model, size, etag = self._load(name, ref)
            with self._lock:
                old = slot.model
                if old is None:
                    return  # unloaded meanwhile: the next request loads the new version anyway
                slot.model, slot.size, slot.etag = model, size, etag
            log.info(
                "model refreshed name=%s old_sha256=%s new_sha256=%s",
                name,
                old.sha256,
                model.sha256,
            )
            del old
            release_to_os()
        except Exception as exc:  # keep serving what is loaded; the next check tries again
            log.warning("revalidating model %s failed: %s", name, exc)
        finally:
            with self._lock:
                slot.refreshing, slot.checked = False, time.monotonic()

    def _load(self, name: str, ref: Model) -> tuple[OnnxModel, int, str | None]:
        tel = telemetry.current()
        with tel.span("mlfn.model.load", {"mlfn.endpoint": endpoint_of(name)}):
            model, size, etag = self._load_phases(name, ref, tel)
            # On the load's span too.
            tel.model_loaded(endpoint_of(name), model.version, model.report)
        return model, size, etag

    def _load_phases(
        self, name: str, ref: Model, tel: telemetry.Telemetry
    ) -> tuple[OnnxModel, int, str | None]:
        started = time.perf_counter()
        import_in_background("onnxruntime")  # while the bytes are fetched, not after
        source = self.source(ref)
        with tel.span("mlfn.model.fetch", {"mlfn.model.uri": source.uri}) as span:
            cached = self._cache.fetch(source, ref.sha256)
            span.set("mlfn.model.cache", cached.outcome)
            span.set("mlfn.model.bytes", cached.size)
        with self._lock:
            # Estimated from the file until the session exists and its growth is measured.
            evicted = self._make_room(cached.size, keep=name)
        # Trimmed first, so the growth measured below is this session's, not freed heap
        # that the allocator happens to hand out again; an evicted session may sit in a
        # reference cycle, which only a collection frees before the new one is built.
        release_to_os(collect=evicted)
        rss_before = rss_bytes()
        session_started = time.perf_counter()
        config = self._session_config
        if ref.providers is not None:
            config = dataclasses.replace(config, providers=ref.providers)
        if ref.threads is not None:
            config = dataclasses.replace(config, intra_op_threads=ref.threads)
        with tel.span("mlfn.model.session") as span:
            model = OnnxModel.load(
                endpoint_of(name),
                cached.path,
                sha256=cached.sha256,
                version=ref.version or cached.sha256[:12],
                config=config,
            )
            if model.session_info is not None:
                span.set("mlfn.model.optimized", model.session_info.optimized)
        session_s = time.perf_counter() - session_started
        warmup_started = time.perf_counter()
        with tel.span("mlfn.model.warm_up") as span:
            span.set("mlfn.model.warmed", model.warm_up())
        warmup_s = time.perf_counter() - warmup_started
        release_to_os(collect=False)  # what building the session freed
        rss_after = rss_bytes()
        grown = (rss_after - rss_before) if rss_before is not None and rss_after is not None else 0
        size = max(cached.size, grown)
        model.report = LoadReport(
            source_uri=source.uri,  # as the store names it: a SAS query is left out
            bytes=cached.size,
            cache=cached.outcome,
            downloaded_bytes=cached.downloaded_bytes,
            fetch_s=round(cached.fetch_s, 4),
            verify_s=round(cached.verify_s, 4),
            session_s=round(session_s, 4),
            warmup_s=round(warmup_s, 4),
            total_s=round(time.perf_counter() - started, 4),
            memory_bytes=size,
            provider=model.session_info.provider if model.session_info else "",
            optimized=model.session_info.optimized if model.session_info else "off",
        )
        return model, size, cached.etag

    def _make_room(self, needed: int, keep: str) -> bool:
        """Unload least recently used idle models until ``needed`` more bytes fit the budget;
        True if any was unloaded. Call with the lock held."""
        evicted = False
        if self._budget is None:
            return evicted
        while sum(s.size for s in self._slots.values() if s.model) + needed > self._budget:
            idle = [
                (s.last_used, n)
                for n, s in self._slots.items()
                if s.model is not None and not s.holders and n != keep
            ]
            if not idle:
                log.warning(
                    "memory budget of %d MB exceeded: every resident model is in use",
                    self._budget // MB,
                )
                return evicted
            _, victim = min(idle)
            evicted = self._evict(victim, self._slots[victim], "memory budget") or evicted
        return evicted

    def _evict(self, name: str, slot: _Slot, reason: str) -> bool:
        """Unload an idle model; False if a request took it meanwhile (it stays). Call with the
        lock held. The model is hidden before its holders are counted, and ``use_loaded``
        holds before it looks: so either the hold is counted here or the holder sees no model."""
        model, slot.model = slot.model, None
        if slot.holders:
            slot.model = model
            return False
        slot.state, slot.size, slot.retired = ModelState.ABSENT, 0, None
        resident = self._resident_names()
        log.info("model unloaded name=%s reason=%s resident=%s", name, reason, resident)
        return True

    def _start_reaper(self) -> None:
        idle_s = self.settings.idle_unload_s
        if idle_s is None or self._reaper is not None:
            return
        with self._lock:
            if self._reaper is not None:
                return
            self._reaper = threading.Thread(
                target=self._reap, args=(idle_s,), name="mlfn-idle-unload", daemon=True
            )
        self._reaper.start()

    def _reap(self, idle_s: float) -> None:
        while True:
            time.sleep(min(max(idle_s / 4, 0.05), 5.0))
            now = time.monotonic()
            evicted = False
            with self._lock:
                for name, slot in self._slots.items():
                    if (
                        slot.model is not None
                        and not slot.holders
                        and now - slot.last_used >= idle_s
                    ):
                        evicted = self._evict(name, slot, "idle") or evicted
            if evicted:
                release_to_os()


class _Held:
    """A model held in memory for the length of a ``with`` block (a class, not a generator:
    this is on every request's path)."""

    __slots__ = ("_name", "_ref", "_registry", "_slot", "_taken")

    def __init__(
        self,
        registry: ModelRegistry,
        name: str,
        ref: Model,
        taken: tuple[OnnxModel, _Slot] | None = None,
    ) -> None:
        self._registry, self._name, self._ref = registry, name, ref
        self._taken = taken
        self._slot: _Slot | None = None

    def __enter__(self) -> OnnxModel:
        model, self._slot = self._taken or self._registry._acquire(self._name, self._ref)
        self._taken = None
        return model

    def __exit__(self, *exc: object) -> None:
        if self._slot is not None:
            self._registry._release(self._slot)
            self._slot = None

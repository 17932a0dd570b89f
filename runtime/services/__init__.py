"""The app's services, each built once, on its first use rather than at import (cold start): the
model registry and the predict service (with the releases followed and the payload logs), then,
apart, the Open Inference Protocol service, the jobs service, the rows service (files and Spark
partitions), the batch-file service and the column service. A first HTTP predict builds only
what it runs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from runtime import config
from runtime.endpoint import BoundEndpoint
from runtime.errors import MlfnError

if TYPE_CHECKING:
    from runtime.models.onnx_model import OnnxModel
    from runtime.models.registry import ModelRegistry
    from runtime.payload_log.buffer import PayloadLog
    from runtime.payload_log.records import EndpointLog
    from runtime.releases.follow import Follower
    from runtime.scheduling import Busy, Holder
    from runtime.services.batch import BatchService
    from runtime.services.columns import ColumnService
    from runtime.services.infer import InferService
    from runtime.services.jobs import JobService
    from runtime.services.predict import PredictService
    from runtime.services.rows import RowService

log = logging.getLogger("mlfn.services")

T = TypeVar("T")

_STORE_SDKS = {
    "az": ["azure.storage.blob"],
    "https": ["azure.storage.blob"],
    "http": ["azure.storage.blob"],
    "s3": ["boto3"],
}


@dataclass(frozen=True)
class _Core:
    """What every service shares, built by the first request of any kind."""

    registry: ModelRegistry
    predict: PredictService
    followers: Mapping[str, Follower]
    logs: Mapping[str, EndpointLog]


class Services:
    """The services of one app. Triggers hold this and call one service per request."""

    def __init__(
        self,
        endpoints: Iterable[BoundEndpoint],
        app_root: Path,
        settings: config.Settings | None = None,
    ) -> None:
        self.endpoints = {b.name: b for b in endpoints}
        self.app_root = app_root
        self._settings = settings
        self._core: _Core | None = None
        # Each built on its own first use (a first HTTP predict imports none of them). Read
        # without the lock once built: every warm request does.
        self._infer: InferService | None = None
        self._jobs: JobService | None = None
        self._rows: RowService | None = None
        self._batch: BatchService | None = None
        self._columns: ColumnService | None = None
        self._lock = threading.RLock()
        self.payload_log: PayloadLog | None = None  # the endpoints' payload log, once built

    @property
    def registry(self) -> ModelRegistry:
        return self._get().registry

    @property
    def predict(self) -> PredictService:
        return self._get().predict

    @property
    def infer(self) -> InferService:
        return self._infer or self._once("_infer", self._make_infer)

    @property
    def jobs(self) -> JobService:
        return self._jobs or self._once("_jobs", self._make_jobs)

    @property
    def rows(self) -> RowService:
        return self._rows or self._once("_rows", self._make_rows)

    @property
    def batch(self) -> BatchService:
        return self._batch or self._once("_batch", self._make_batch)

    @property
    def columns(self) -> ColumnService:
        """Only the bulk paths score columns."""
        return self._columns or self._once("_columns", self._make_columns)

    def _once(self, attribute: str, make: Callable[[], T]) -> T:
        """The service kept in ``attribute``, made by ``make`` if it is not yet: once, under
        the lock (re-entrant: a service made of others makes them under it too)."""
        with self._lock:
            found: T | None = getattr(self, attribute)
            if found is None:
                found = make()
                setattr(self, attribute, found)
            return found

    def _make_infer(self) -> InferService:
        from runtime.services.infer import InferService

        core = self._get()
        predict, endpoints = core.predict, self.endpoints

        def request_runs(name: str) -> tuple[Holder[OnnxModel], Busy] | None:
            """V2's runs take the endpoint's run slots, ahead of bulk work, and bulk work rests
            while they come, the longer the busier they keep it (its ``Busy``); a V2-only
            model has neither (nor an async predict's slots)."""
            if endpoints[name].endpoint.predict_fn is None:
                return None
            scorer = predict.scorer(name)
            scorer.came()
            runs = scorer.request_runs
            return None if runs is None else (runs, scorer.busy)

        return InferService(endpoints, core.registry, core.followers, core.logs, request_runs)

    def _make_jobs(self) -> JobService:
        from runtime.services.jobs import JobService
        from runtime.storage.payloads import Payloads

        core = self._get()
        return JobService(core.predict, Payloads(self.settings), lambda: self.columns, core.logs)

    def _make_rows(self) -> RowService:
        from runtime.services.rows import RowService

        return RowService(self.predict)

    def _make_batch(self) -> BatchService:
        from runtime.services.batch import BatchService

        return BatchService(self.rows, self.settings, lambda: self.columns, self._get().logs)

    def _make_columns(self) -> ColumnService:
        from runtime.services.columns import ColumnService

        return ColumnService(self.predict)

    @property
    def settings(self) -> config.Settings:
        return self._settings or config.current()

    def _get(self) -> _Core:
        # Every request after the first: no lock on the warm path.
        return self._core or self._once("_core", lambda: self._build(self.settings))

    def _build(self, settings: config.Settings) -> _Core:
        # Imported here: the function app's indexing needs none of this.
        from runtime import payload_log
        from runtime.models.registry import ModelRegistry
        from runtime.releases.follow import follow_all
        from runtime.services.predict import PredictService

        registry = ModelRegistry(settings, self.app_root)
        followers = follow_all(
            ((b.name, b.endpoint.model, b.endpoint.release) for b in self.endpoints.values()),
            settings,
            self.app_root,
        )
        declared = {
            name: (b.endpoint.log, b.endpoint._input, b.endpoint._output)
            for name, b in self.endpoints.items()
        }
        logs, self.payload_log = payload_log.logs(declared, settings)
        predict = PredictService(self.endpoints, registry, followers, logs)
        return _Core(registry, predict, followers, logs)

    def close(self) -> None:
        """At the host's shutdown: write what the payload log holds. (A worker that ends
        the process without telling the app has the log's exit and SIGTERM hooks.)"""
        if self.payload_log is not None:
            self.payload_log.close()

    def import_ahead(self) -> None:
        """Start importing, in the background, what the first request will need: onnxruntime
        and the SDK of each model's store. For a host that is up and waiting for traffic."""
        from runtime.models.warm import import_in_background

        import_in_background(*self._ahead())

    def _ahead(self) -> list[str]:
        """What the first request will import: onnxruntime, the services, each store's SDK."""
        try:
            store = self.settings.model_store or ""
        except MlfnError:
            store = ""  # said again, with the setting's name, by the first request
        modules = ["onnxruntime", "runtime.services.predict", "runtime.services.infer"]
        for bound in self.endpoints.values():
            uri = bound.endpoint.model.uri
            uri = uri if "://" in uri else store  # a relative path lives under the store
            modules += _STORE_SDKS.get(uri.partition("://")[0] if "://" in uri else "", [])
        return list(dict.fromkeys(modules))

    def start_preload(self) -> None:
        """Start, in one background thread, what a first request would otherwise wait for
        (``MLFN_WARM_START``): ``imports`` imports onnxruntime, the services and each model
        store's SDK and builds the services; ``models`` also loads every
        endpoint's model, unless ``MLFN_MEMORY_BUDGET_MB`` bounds what is resident;
        ``off`` neither. The endpoints named in ``MLFN_PRELOAD`` are loaded whatever it says
        (and only they, when it names any). Nothing here delays indexing or fails it: an error
        is logged once, and a request that needs what failed is answered with the error."""
        try:
            settings = self.settings
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
        warm = settings.warm_start
        if not names and warm == "models" and settings.memory_budget_mb is None:
            names = list(self.endpoints)
        if names or warm != "off":
            from runtime.models.warm import start_warming

            start_warming(lambda stop: self._warm(names, warm != "off", stop))

    def _warm(self, names: list[str], imports: bool, stop: threading.Event) -> None:
        if imports:
            from runtime.models.warm import import_now

            import_now(*self._ahead())
            try:
                self._get()
            except Exception as exc:  # the first request builds them again, and says why
                log.error("warm start: the services could not be built: %s", exc)
                return
        self._preload(names, stop)

    def _preload(self, names: list[str], stop: threading.Event) -> None:
        registry, predict = self.registry, self.predict
        for name in names:
            if stop.is_set():  # the process is exiting: start no load it would cut short
                return
            try:
                if self.endpoints[name].endpoint.predict_fn is None:  # a V2-only model
                    registry.get(name, self.endpoints[name].endpoint.model)
                else:  # the model its release serves (its stable version), or its code's
                    predict.scorer(name).stable().load()
            except Exception as exc:
                log.error("preloading %s failed: %s", name, exc)

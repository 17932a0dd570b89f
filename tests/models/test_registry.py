"""The model lifecycle: lazy, single-flight, atomic on disk, and recovering after failures."""

from __future__ import annotations

import io
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from runtime.config import Settings, storage_account
from runtime.endpoint import Model
from runtime.errors import IntegrityError, ModelNotInStore, StoreUnavailable
from runtime.model_store.base import StoredObject
from runtime.models.cache import DiskCache
from runtime.models.registry import ModelRegistry, ModelState
from tests.conftest import AzuriteInfo
from tests.support import count_blob_gets, settled_log


def _cached_content(cache: Path) -> list[Path]:
    """Model bytes and index entries in a cache (lock files do not count)."""
    return [p for folder in ("blobs", "index") for p in (cache / folder).glob("*") if p.is_file()]


def _registry(azurite: AzuriteInfo, tmp_path: Path, container: str) -> ModelRegistry:
    settings = Settings(
        model_store=f"az://{container}",
        store_connection=storage_account("AzureWebJobsStorage", azurite.connection_string),
        cache_dir=tmp_path / "cache",
    )
    return ModelRegistry(settings, app_root=tmp_path)


def test_concurrent_first_requests_download_the_model_once(
    azurite: AzuriteInfo, models_in_blob: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = _registry(azurite, tmp_path, models_in_blob)
    callers = 48
    barrier = threading.Barrier(callers)

    def first_request(_: int) -> object:
        barrier.wait()
        return registry.get("iris", Model("iris.onnx"))

    with caplog.at_level(logging.INFO, logger="mlfn.models"), ThreadPoolExecutor(callers) as pool:
        models = list(pool.map(first_request, range(callers)))

    assert len({id(m) for m in models}) == 1  # one session, shared
    assert count_blob_gets(azurite, models_in_blob, "iris.onnx") == 1
    assert sum("model loaded name=iris" in r.getMessage() for r in caplog.records) == 1
    assert registry.state("iris") is ModelState.READY


def test_nothing_loads_before_the_first_request(
    azurite: AzuriteInfo, models_in_blob: str, tmp_path: Path
) -> None:
    registry = _registry(azurite, tmp_path, models_in_blob)
    assert registry.state("iris") is ModelState.ABSENT
    assert count_blob_gets(azurite, models_in_blob, "iris.onnx") == 0


def test_a_failed_load_keeps_its_error_and_the_next_request_retries(
    azurite: AzuriteInfo,
    container: str,
    tmp_path: Path,
    example_models: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from azure.storage.blob import ContainerClient

    from runtime.models import registry as registry_module

    monkeypatch.setattr(registry_module, "FAILED_LOAD_MEMORY_S", 0.5)  # stands for Retry-After
    registry = _registry(azurite, tmp_path, container)
    with pytest.raises(ModelNotInStore):
        registry.get("iris", Model("iris.onnx"))
    assert registry.state("iris") is ModelState.FAILED
    assert isinstance(registry.error("iris"), ModelNotInStore)

    client = ContainerClient.from_connection_string(azurite.connection_string, container)
    client.upload_blob("iris.onnx", example_models["iris"].read_bytes())
    asked = _store_requests(azurite, container)
    with pytest.raises(ModelNotInStore):  # within Retry-After: told again, the store not asked
        registry.get("iris", Model("iris.onnx"))
    assert _store_requests(azurite, container) == asked
    time.sleep(0.5)
    model = registry.get("iris", Model("iris.onnx"))  # uploaded late: served without a restart
    assert registry.state("iris") is ModelState.READY and [o.name for o in model.outputs] == [
        "label",
        "probabilities",
    ]


def test_a_pinned_digest_that_does_not_match_is_refused_and_not_cached(
    azurite: AzuriteInfo, models_in_blob: str, tmp_path: Path
) -> None:
    registry = _registry(azurite, tmp_path, models_in_blob)
    with pytest.raises(IntegrityError) as info:
        registry.get("iris", Model("iris.onnx", sha256="0" * 64))
    assert "0" * 64 in info.value.message and info.value.detail["actual"] in info.value.message
    assert _cached_content(tmp_path / "cache") == []


def test_a_pinned_digest_that_matches_loads(
    azurite: AzuriteInfo, models_in_blob: str, tmp_path: Path, example_models: dict[str, Path]
) -> None:
    from runtime.digest import sha256_file

    digest = sha256_file(example_models["iris"])
    model = _registry(azurite, tmp_path, models_in_blob).get(
        "iris", Model("iris.onnx", sha256=digest, version="7")
    )
    assert (model.sha256, model.version) == (digest, "7")
    assert model.report is not None and model.report.downloaded and model.report.bytes > 0


def test_a_cached_copy_is_served_under_a_pin_only_when_it_matches_it(
    azurite: AzuriteInfo, models_in_blob: str, tmp_path: Path, example_models: dict[str, Path]
) -> None:
    """Found by mutation testing (docs/mutation.md): a cached copy must not stand in for a
    pinned digest it does not have."""
    from runtime.digest import sha256_file

    _registry(azurite, tmp_path, models_in_blob).get("iris", Model("iris.onnx"))  # cached
    with pytest.raises(IntegrityError):  # a new pin the store's bytes do not match
        _registry(azurite, tmp_path, models_in_blob).get(
            "iris", Model("iris.onnx", sha256="0" * 64)
        )
    digest = sha256_file(example_models["iris"])
    again = _registry(azurite, tmp_path, models_in_blob).get(
        "iris", Model("iris.onnx", sha256=digest)
    )
    assert again.report is not None and again.report.cache == "revalidated"


class _CutShort:
    """A source whose download stops half way, as a dropped connection would."""

    uri = "az://flaky/model.onnx"

    def local_path(self) -> None:
        return None

    def stat(self) -> StoredObject:
        return StoredObject(self.uri, 1000, "etag")

    def download(
        self, into: io.BufferedWriter, if_none_match: str | None = None, progress: object = None
    ) -> StoredObject:  # type: ignore[override]
        into.write(b"x" * 500)
        return self.stat()


def test_a_truncated_download_leaves_no_file_in_the_cache(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "cache")
    with pytest.raises(StoreUnavailable, match="cut short: 500 of 1000"):
        cache.fetch(_CutShort())  # type: ignore[arg-type]
    assert _cached_content(tmp_path / "cache") == []


def test_local_models_are_used_in_place(tmp_path: Path, example_models: dict[str, Path]) -> None:
    settings = Settings(
        model_store=str(example_models["iris"].parent), cache_dir=tmp_path / "cache"
    )
    model = ModelRegistry(settings, tmp_path).get("iris", Model("iris.onnx"))
    assert model.report is not None and not model.report.downloaded
    assert not (tmp_path / "cache").exists()


def _store_requests(azurite: AzuriteInfo, container: str) -> int:
    """Requests for the container's iris.onnx that reached Azurite, from its access log."""
    return settled_log(azurite).count(f"/devstoreaccount1/{container}/iris.onnx")


def _loaded(tmp_path: Path, example_models: dict[str, Path]) -> tuple[ModelRegistry, Model]:
    registry = ModelRegistry(Settings(cache_dir=tmp_path / "cache"), app_root=tmp_path)
    ref = Model(str(example_models["iris"]))
    registry.get("iris", ref)
    return registry, ref


def test_holding_a_loaded_model_takes_no_lock(
    tmp_path: Path, example_models: dict[str, Path]
) -> None:
    """The warm path (``use_loaded`` and its release) never waits for the registry's lock,
    whoever holds it (a load, an eviction, the idle reaper)."""
    registry, ref = _loaded(tmp_path, example_models)

    def warm_request() -> bool:
        held = registry.use_loaded("iris", ref)
        assert held is not None
        with held as model:
            return model.name == "iris"

    with ThreadPoolExecutor(1) as pool:
        registry._lock.acquire()  # held here, the whole time
        try:
            assert pool.submit(warm_request).result(timeout=10)
        finally:
            registry._lock.release()  # else a request that waits for it would never end
    assert registry._slots["iris"].holders == []  # given back


def test_a_model_held_while_it_is_being_evicted_stays_loaded(
    tmp_path: Path, example_models: dict[str, Path]
) -> None:
    """Eviction hides the model, then counts its holders: a hold taken in between is seen,
    and the model is put back, never unloaded under a request that has it."""
    registry, ref = _loaded(tmp_path, example_models)
    slot = registry._slots["iris"]
    outcomes: list[bool] = []

    class EvictedOnceHeld(list[None]):
        def append(self, item: None) -> None:  # the hold is taken; then an eviction runs
            super().append(item)
            with registry._lock:
                outcomes.append(registry._evict("iris", slot, "test"))

    slot.holders = EvictedOnceHeld()
    held = registry.use_loaded("iris", ref)
    assert outcomes == [False] and held is not None
    with held as model:
        assert model.run({"input": [[5.1, 3.5, 1.4, 0.2]]})["label"].tolist() == [0]
    assert registry.state("iris") is ModelState.READY
    with registry._lock:
        assert registry._evict("iris", slot, "test")  # idle now: it goes
    assert registry.use_loaded("iris", ref) is None and slot.holders == []


def test_a_hold_begun_as_an_eviction_runs_either_keeps_the_model_or_gets_none(
    tmp_path: Path, example_models: dict[str, Path]
) -> None:
    """The two interleavings the order of a hold (append, then look) and of an eviction (hide,
    then count) must survive: the eviction done between the hold's start and its append, and
    the hold made between the eviction's hide and its count. Either the hold gets no model or
    the model stays loaded; never a model held and unloaded."""
    registry, ref = _loaded(tmp_path, example_models)
    slot = registry._slots["iris"]
    evicted: list[bool] = []

    class EvictedFirst(list[None]):
        def append(self, item: None) -> None:  # the eviction wins the race to the slot
            with registry._lock:
                evicted.append(registry._evict("iris", slot, "test"))
            super().append(item)

    slot.holders = EvictedFirst()
    held = registry.use_loaded("iris", ref)
    assert evicted == [True]
    assert held is None and list(slot.holders) == []

    slot.holders = []  # a plain list again: the load below appends under the lock
    registry.get("iris", ref)  # loaded again
    holds: list[object] = []

    class HeldWhileCounted(list[None]):
        def __len__(self) -> int:  # counted by the eviction; then a request takes a hold
            n = super().__len__()
            if not holds:
                holds.append(registry.use_loaded("iris", ref))
            return n

    slot.holders = HeldWhileCounted()
    with registry._lock:
        gone = registry._evict("iris", slot, "test")
    assert gone and holds == [None]  # hidden before it was counted: the request got none
    assert registry.state("iris") is ModelState.ABSENT and list(slot.holders) == []


def test_a_check_of_the_model_starts_only_when_still_due_under_the_lock(
    tmp_path: Path, example_models: dict[str, Path]
) -> None:
    """The warm path looks at whether a check is due without the lock; a check that ran
    meanwhile makes the next one wait its interval again, not start at once."""
    registry = ModelRegistry(
        Settings(cache_dir=tmp_path / "cache", revalidate_s=60), app_root=tmp_path
    )
    ref = Model(str(example_models["iris"]))
    registry.get("iris", ref)
    slot = registry._slots["iris"]
    slot.checked = time.monotonic() - 61
    assert registry._due(slot)  # what a request saw, before a check ran and ended:
    slot.checked = time.monotonic()
    with registry._lock:
        registry._revalidate_soon("iris", ref, slot)
    assert not slot.refreshing  # no check started
    slot.checked = time.monotonic() - 61
    with registry._lock:
        registry._revalidate_soon("iris", ref, slot)
    assert slot.refreshing or slot.checked > time.monotonic() - 61  # started (maybe done)

"""An instance following an endpoint's release document in a store folder: what it serves when
the document appears, changes, breaks, names a missing model, or goes; and how it splits."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import pytest

from runtime.config import Settings
from runtime.errors import StoreUnavailable
from runtime.model_store import locate
from runtime.model_store.base import ModelSource
from runtime.releases.document import parse
from runtime.releases.follow import Follower, Routes, document_uri, sibling


def _store(tmp_path: Path) -> Path:
    store = tmp_path / "models"
    store.mkdir()
    for name in ("iris.onnx", "iris-v2.onnx", "iris-v3.onnx"):
        (store / name).write_bytes(b"not read by the follower")
    return store


def _write(store: Path, **doc: object) -> None:
    base: dict[str, object] = {
        "versions": {"v1": {"uri": "iris.onnx"}, "v2": {"uri": "iris-v2.onnx"}},
        "stable": "v1",
        "weights": {"v1": 90, "v2": 10},
    }
    base.update(doc)
    (store / "iris.release.json").write_text(json.dumps(base))


def _follower(store: Path, locate_with: object = None) -> Follower:
    settings = Settings(model_store=str(store))
    find = locate_with or (lambda uri: locate(uri, settings))
    return Follower("iris", document_uri("iris", str(store / "iris.onnx")), find, 60)  # type: ignore[arg-type]


def _split(follower: Follower) -> dict[str, float]:
    assert follower.routes is not None
    return dict(follower.routes.release.live)


def test_the_document_lives_beside_the_model_and_versions_resolve_against_it() -> None:
    assert (
        document_uri("iris", "az://models/prod/iris.onnx") == "az://models/prod/iris.release.json"
    )
    assert document_uri("iris", "/srv/models/iris.onnx") == "/srv/models/iris.release.json"
    url = "https://acct.blob.core.windows.net/models/iris.onnx?sv=1&sig=abc"
    assert document_uri("iris", url) == (
        "https://acct.blob.core.windows.net/models/iris.release.json?sv=1&sig=abc"
    )
    assert (
        sibling("s3://bucket/a/iris.release.json", "v2/iris.onnx") == "s3://bucket/a/v2/iris.onnx"
    )
    assert sibling("s3://bucket/a/iris.release.json", "az://c/x.onnx") == "az://c/x.onnx"
    assert sibling("file:///srv/m/iris.release.json", "x.onnx") == "file:///srv/m/x.onnx"


def test_no_document_serves_the_code_model_then_one_written_later_is_followed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = _store(tmp_path)
    follower = _follower(store)
    follower.refresh()
    assert follower.read and follower.routes is None
    _write(store)
    with caplog.at_level(logging.INFO, "mlfn.releases"):
        follower.refresh()
    assert _split(follower) == {"v1": 0.9, "v2": 0.1}
    assert follower.routes is not None
    assert follower.routes.versions["v2"].uri == str(store / "iris-v2.onnx")
    assert "release of iris followed: v1=90%, v2=10% (stable v1)" in caplog.text


def test_a_broken_document_keeps_the_last_good_release_and_is_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = _store(tmp_path)
    _write(store)
    follower = _follower(store)
    follower.refresh()
    (store / "iris.release.json").write_text('{"versions": {}, "stable": "v1"}')
    with caplog.at_level(logging.ERROR, "mlfn.releases"):
        for _ in range(3):
            follower.refresh()
    assert _split(follower) == {"v1": 0.9, "v2": 0.1}
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert "not followed: versions: must be an object of at least one version" in lines[0]
    assert "the last good release keeps serving" in lines[0]
    _write(store, weights={"v1": 1})  # mended: followed, and a new problem would be said again
    follower.refresh()
    assert _split(follower) == {"v1": 1.0}


def test_a_version_whose_model_is_not_in_the_store_is_not_followed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = _store(tmp_path)
    _write(store)
    follower = _follower(store)
    follower.refresh()
    _write(
        store,
        versions={"v1": {"uri": "iris.onnx"}, "v4": {"uri": "iris-v4.onnx"}},
        weights={"v1": 50, "v4": 50},
    )
    with caplog.at_level(logging.ERROR, "mlfn.releases"):
        follower.refresh()
    assert _split(follower) == {"v1": 0.9, "v2": 0.1}
    assert "versions.v4.uri: model" in caplog.text and "iris-v4.onnx does not exist" in caplog.text


def test_an_unreachable_store_keeps_the_last_good_release(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = _store(tmp_path)
    _write(store)
    settings = Settings(model_store=str(store))
    down = [False]

    def find(uri: str) -> ModelSource:
        if down[0]:
            raise StoreUnavailable("store for the test cannot be reached")
        return locate(uri, settings)

    follower = _follower(store, find)
    follower.refresh()
    down[0] = True
    with caplog.at_level(logging.ERROR, "mlfn.releases"):
        follower.refresh()
        follower.refresh()
    assert _split(follower) == {"v1": 0.9, "v2": 0.1}
    assert caplog.text.count("cannot be reached") == 1


def test_a_removed_document_returns_the_endpoint_to_its_code_model(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _write(store)
    follower = _follower(store)
    follower.refresh()
    (store / "iris.release.json").unlink()
    follower.refresh()
    assert follower.routes is None


def test_an_unchanged_document_is_not_parsed_again(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _write(store)
    follower = _follower(store)
    follower.refresh()
    routes = follower.routes
    follower.refresh()
    assert follower.routes is routes  # the same object: a 304, nothing rebuilt


def test_a_ten_percent_split_measures_ten_percent_and_a_key_always_gets_one_version(
    tmp_path: Path,
) -> None:
    routes = Routes.of(parse(json.dumps({
        "versions": {"v1": {"uri": "a.onnx"}, "v2": {"uri": "b.onnx"}},
        "stable": "v1", "weights": {"v1": 90, "v2": 10},
    }).encode()), str(tmp_path / "iris.release.json"))  # fmt: skip
    by_key = Counter(routes.pick(f"customer-{i}").label for i in range(5000))
    assert 400 <= by_key["v2"] <= 600, by_key  # 10 % +- 2 %
    at_random = Counter(routes.pick(None).label for _ in range(5000))
    assert 400 <= at_random["v2"] <= 600, at_random
    for key in ("alice", "bob", "customer-17", "ü"):
        assert len({routes.pick(key).label for _ in range(50)}) == 1


def test_concurrent_first_requests_share_one_read_and_a_stuck_store_is_waited_for_a_bound(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio
    import threading

    from runtime.services.releasing import first_read

    store = _store(tmp_path)
    _write(store)
    settings = Settings(model_store=str(store))
    reads: list[str] = []
    release = threading.Event()

    def slow(uri: str) -> ModelSource:
        reads.append(uri)
        release.wait(10)
        return locate(uri, settings)

    follower = Follower("iris", str(store / "iris.release.json"), slow, 60, first_wait_s=0.3)

    async def many() -> None:
        await asyncio.gather(*(first_read(follower) for _ in range(50)))

    with caplog.at_level(logging.ERROR, "mlfn.releases"):
        asyncio.run(many())  # the store has not answered: given up after first_wait_s
    assert follower.routes is None and follower.is_late and not follower.read
    assert "not read in 0.3 s" in caplog.text
    follower.wait_first_read()  # late: returns at once, never a second wait
    release.set()
    follower.first_read().result(10)
    assert _split(follower) == {"v1": 0.9, "v2": 0.1}  # followed once the read ended
    assert len([u for u in reads if u.endswith("iris.release.json")]) == 1

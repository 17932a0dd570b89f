"""The disk cache across restarts: revalidate instead of re-download, notice replaced blobs,
refetch damaged files, keep serving a verified copy while the store is down."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from azure.storage.blob import ContainerClient

from runtime.config import Settings, storage_account
from runtime.digest import sha256_file
from runtime.endpoint import Model
from runtime.models.registry import ModelRegistry
from tests.conftest import AzuriteInfo
from tests.support import ROOT, settled_log

DEAD_STORE = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=eA==;BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;"


def _full_downloads(azurite: AzuriteInfo, container: str, blob: str, expect: int = 0) -> int:
    """GETs of the blob that returned content (200/206), not 304 Not Modified."""
    pattern = re.compile(rf'"GET /devstoreaccount1/{container}/{re.escape(blob)}[^"]*" (\d+)')

    def count() -> int:
        statuses = [m.group(1) for m in pattern.finditer(azurite.log_path.read_text())]
        return sum(s in ("200", "206") for s in statuses)

    return _logged(count, expect)


def _not_modified(azurite: AzuriteInfo, container: str, blob: str, expect: int = 0) -> int:
    pattern = re.compile(rf'"GET /devstoreaccount1/{container}/{re.escape(blob)}[^"]*" 304')
    return _logged(lambda: len(pattern.findall(azurite.log_path.read_text())), expect)


def _logged(count: Callable[[], int], expect: int) -> int:
    """Azurite writes its access log a moment after it answers: wait (up to 10 s) until the
    ``expect`` lines a test knows were caused are there, then count them all."""
    deadline = time.monotonic() + 10
    while count() < expect and time.monotonic() < deadline:
        time.sleep(0.05)
    return count()


def _registry(
    tmp_path: Path, container: str, connection: str, revalidate_s: float | None = None
) -> ModelRegistry:
    """A new registry over the same cache folder: what a restarted process sees."""
    settings = Settings(
        model_store=f"az://{container}",
        store_connection=storage_account("AzureWebJobsStorage", connection),
        cache_dir=tmp_path / "cache",
        store_retries=0,
        revalidate_s=revalidate_s,
    )
    return ModelRegistry(settings, tmp_path)


def _predict(model_path_or_registry: ModelRegistry) -> np.ndarray:
    x = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
    return model_path_or_registry.get("iris", Model("iris.onnx")).run({"input": x})["probabilities"]


def test_a_restart_with_a_warm_cache_downloads_nothing(
    azurite: AzuriteInfo, models_in_blob: str, tmp_path: Path
) -> None:
    first = _registry(tmp_path, models_in_blob, azurite.connection_string).get(
        "iris", Model("iris.onnx")
    )
    second = _registry(tmp_path, models_in_blob, azurite.connection_string).get(
        "iris", Model("iris.onnx")
    )
    assert first.report is not None and first.report.cache == "miss"
    assert second.report is not None and second.report.cache == "revalidated"
    assert second.report.downloaded_bytes == 0
    assert _full_downloads(azurite, models_in_blob, "iris.onnx", expect=1) == 1
    assert _not_modified(azurite, models_in_blob, "iris.onnx", expect=1) == 1
    assert second.sha256 == first.sha256


def test_a_replaced_blob_is_fetched_and_the_new_version_served(
    azurite: AzuriteInfo, models_in_blob: str, tmp_path: Path, example_models: dict[str, Path]
) -> None:
    old = _registry(tmp_path, models_in_blob, azurite.connection_string).get(
        "iris", Model("iris.onnx")
    )
    ContainerClient.from_connection_string(azurite.connection_string, models_in_blob).upload_blob(
        "iris.onnx", example_models["diabetes"].read_bytes(), overwrite=True
    )
    new = _registry(tmp_path, models_in_blob, azurite.connection_string).get(
        "iris", Model("iris.onnx")
    )
    assert new.report is not None and new.report.cache == "miss"
    assert new.sha256 == sha256_file(example_models["diabetes"]) != old.sha256
    assert [o.name for o in new.outputs] == ["variable"]
    assert not (tmp_path / "cache" / "blobs" / old.sha256).exists()  # the old version is collected


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_cache_file_is_detected_and_fetched_again(
    azurite: AzuriteInfo,
    models_in_blob: str,
    tmp_path: Path,
    example_models: dict[str, Path],
    damage: str,
) -> None:
    first = _registry(tmp_path, models_in_blob, azurite.connection_string)
    expected = _predict(first)
    content = tmp_path / "cache" / "blobs" / sha256_file(example_models["iris"])
    data = bytearray(content.read_bytes())
    if damage == "truncate":
        content.write_bytes(data[: len(data) // 2])
    else:
        data[len(data) // 2] ^= 0xFF  # same size, other bytes
        content.write_bytes(bytes(data))
    again = _registry(tmp_path, models_in_blob, azurite.connection_string)
    np.testing.assert_array_equal(_predict(again), expected)
    report = again.get("iris", Model("iris.onnx")).report
    assert report is not None and report.cache == "miss"
    assert _full_downloads(azurite, models_in_blob, "iris.onnx", expect=2) == 2
    assert sha256_file(content) == sha256_file(example_models["iris"])


def test_a_verified_cached_copy_is_served_while_the_store_is_down(
    azurite: AzuriteInfo, models_in_blob: str, tmp_path: Path, example_models: dict[str, Path]
) -> None:
    expected = _predict(_registry(tmp_path, models_in_blob, azurite.connection_string))
    down = _registry(tmp_path, models_in_blob, DEAD_STORE)
    np.testing.assert_array_equal(_predict(down), expected)
    report = down.get("iris", Model("iris.onnx")).report
    assert report is not None and report.cache == "stale"
    (_labels, probs) = ort.InferenceSession(str(example_models["iris"])).run(
        None, {"input": np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)}
    )
    np.testing.assert_array_equal(expected, probs)


def test_worker_processes_on_one_machine_share_one_download(
    azurite: AzuriteInfo, models_in_blob: str, tmp_path: Path
) -> None:
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from runtime.config import Settings, storage_account
        from runtime.models.cache import DiskCache
        from runtime.model_store import locate
        settings = Settings(store_connection=storage_account("S", {azurite.connection_string!r}))
        while time.time() < float(sys.argv[1]):  # start together
            time.sleep(0.001)
        cached = DiskCache(Path({str(tmp_path / "cache")!r})).fetch(locate("az://{models_in_blob}/iris.onnx", settings))
        print(cached.outcome)
    """)
    import time

    start_at = str(time.time() + 2.0)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script, start_at], stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    outcomes = sorted(w.communicate(timeout=60)[0].strip() for w in workers)
    assert outcomes == ["miss", "revalidated", "revalidated", "revalidated"]
    assert _full_downloads(azurite, models_in_blob, "iris.onnx", expect=1) == 1


def test_a_download_cut_short_on_the_wire_is_unavailable_and_never_cached(
    azurite: AzuriteInfo, models_in_blob: str, tmp_path: Path, example_models: dict[str, Path]
) -> None:
    from runtime.errors import StoreUnavailable
    from tests.model_store.truncating_proxy import truncating_proxy

    with truncating_proxy(azurite.blob_port) as port:
        through_proxy = azurite.connection_string.replace(
            f"127.0.0.1:{azurite.blob_port}", f"127.0.0.1:{port}"
        )
        with pytest.raises(StoreUnavailable, match="IncompleteRead"):
            _registry(tmp_path, models_in_blob, through_proxy).get("iris", Model("iris.onnx"))
    cached = [p for folder in ("blobs", "index") for p in (tmp_path / "cache" / folder).glob("*")]
    assert cached == []
    np.testing.assert_array_equal(  # the store itself is fine: straight to it, the model loads
        _predict(_registry(tmp_path, models_in_blob, azurite.connection_string)),
        ort.InferenceSession(str(example_models["iris"])).run(
            None,
            {"input": np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)},
        )[1],
    )


def test_a_loaded_model_whose_blob_changes_is_refreshed_in_the_background(
    azurite: AzuriteInfo,
    models_in_blob: str,
    tmp_path: Path,
    example_models: dict[str, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging
    import time

    registry = _registry(tmp_path, models_in_blob, azurite.connection_string, revalidate_s=0.2)
    old = registry.get("iris", Model("iris.onnx"))
    ContainerClient.from_connection_string(azurite.connection_string, models_in_blob).upload_blob(
        "iris.onnx", example_models["diabetes"].read_bytes(), overwrite=True
    )
    new_digest = sha256_file(example_models["diabetes"])
    deadline = time.monotonic() + 15
    with caplog.at_level(logging.INFO, logger="mlfn.models"):
        while registry.get("iris", Model("iris.onnx")).sha256 != new_digest:
            assert time.monotonic() < deadline, "the new version was never served"
            time.sleep(0.1)
    assert [o.name for o in registry.get("iris", Model("iris.onnx")).outputs] == ["variable"]
    assert any("model refreshed name=iris" in r.getMessage() for r in caplog.records)
    # A request that still holds the old session finishes on it.
    x = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
    assert old.run({"input": x})["probabilities"].shape == (1, 3)


def test_an_unchanged_model_is_only_revalidated(
    azurite: AzuriteInfo, models_in_blob: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    import time

    registry = _registry(tmp_path, models_in_blob, azurite.connection_string, revalidate_s=0.1)
    # A revalidation asks for the blob's properties (a HEAD) and finds its ETag unchanged.
    checks = re.compile(rf'"HEAD /devstoreaccount1/{models_in_blob}/iris\.onnx[^"]*" 200')
    with caplog.at_level(logging.INFO, logger="mlfn.models"):
        first = registry.get("iris", Model("iris.onnx"))
        before = len(checks.findall(settled_log(azurite)))
        deadline = time.monotonic() + 15
        # Requests go on while revalidations are due; each is served the loaded model.
        while len(checks.findall(azurite.log_path.read_text())) < before + 2:
            assert time.monotonic() < deadline, "the model was never revalidated"
            assert registry.get("iris", Model("iris.onnx")) is first
            time.sleep(0.05)
        assert registry.get("iris", Model("iris.onnx")) is first
    assert sum("model loaded" in r.getMessage() for r in caplog.records) == 1
    assert _full_downloads(azurite, models_in_blob, "iris.onnx", expect=1) == 1


def test_a_crafted_index_entry_cannot_reach_outside_the_cache(
    azurite: AzuriteInfo, models_in_blob: str, tmp_path: Path
) -> None:
    import hashlib
    import json

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    uri = f"az://{models_in_blob}/iris.onnx"
    index = tmp_path / "cache" / "index" / f"{hashlib.sha256(uri.encode()).hexdigest()[:32]}.json"
    index.parent.mkdir(parents=True)
    (tmp_path / "cache" / "blobs").mkdir()  # as any cache that has downloaded before has
    index.write_text(json.dumps({"uri": uri, "etag": "x", "sha256": "../../victim.txt", "size": 8}))
    model = _registry(tmp_path, models_in_blob, azurite.connection_string).get(
        "iris", Model("iris.onnx")
    )
    assert model.report is not None and model.report.cache == "miss"  # fetched afresh
    assert victim.read_text() == "precious"


def test_the_cache_is_private_and_a_stranger_s_is_refused(
    azurite: AzuriteInfo, models_in_blob: str, tmp_path: Path
) -> None:
    from runtime.errors import ConfigError

    _registry(tmp_path, models_in_blob, azurite.connection_string).get("iris", Model("iris.onnx"))
    assert (tmp_path / "cache").stat().st_mode & 0o777 == 0o700
    if os.getuid() != 0:
        pytest.skip("handing the cache to another user needs root")
    os.chown(tmp_path / "cache", 4242, 4242)
    with pytest.raises(ConfigError, match=r"MLFN_CACHE_DIR.*belongs to uid 4242"):
        _registry(tmp_path, models_in_blob, azurite.connection_string).get(
            "iris", Model("iris.onnx")
        )


def test_what_killed_processes_left_half_written_is_swept(
    azurite: AzuriteInfo, models_in_blob: str, tmp_path: Path
) -> None:
    leftovers = [
        tmp_path / "cache" / "tmp" / "download-dead",
        tmp_path / "cache" / "index" / "k.9.tmp",
    ]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
        os.utime(path, (time.time() - 7200, time.time() - 7200))
    fresh = tmp_path / "cache" / "tmp" / "download-alive"
    fresh.write_bytes(b"being written")
    _registry(tmp_path, models_in_blob, azurite.connection_string).get("iris", Model("iris.onnx"))
    assert [p.exists() for p in leftovers] == [False, False]
    assert fresh.exists()  # a live download's file is left alone


def test_a_full_cache_disk_is_a_503_not_a_500(
    azurite: AzuriteInfo, models_in_blob: str, tmp_path: Path
) -> None:
    # A real write failure: this process may write files of at most 64 bytes.
    script = textwrap.dedent(f"""
        import resource, signal, sys
        from pathlib import Path
        from runtime.config import Settings, storage_account
        from runtime.endpoint import Model
        from runtime.errors import MlfnError
        from runtime.models.registry import ModelRegistry
        settings = Settings(model_store="az://{models_in_blob}", store_connection=storage_account("S", sys.argv[1]),
                            cache_dir=Path(sys.argv[2]), store_retries=0)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))
        try:
            ModelRegistry(settings, Path(sys.argv[2])).get("iris", Model("iris.onnx"))
        except MlfnError as exc:
            print(exc.status, exc.type, exc.message)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script, azurite.connection_string, str(tmp_path / "cache")],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert done.stdout.startswith("503 CacheUnavailable the model cache at"), done.stderr[-2000:]

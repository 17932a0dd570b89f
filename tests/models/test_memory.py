"""Memory: an LRU under MLFN_MEMORY_BUDGET_MB that never unloads a model serving a request,
and idle models unloaded after MLFN_IDLE_UNLOAD_S."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import time
from pathlib import Path

import pytest

from runtime.config import Settings
from runtime.endpoint import Model
from runtime.models.memory import MB, release_to_os
from runtime.models.registry import ModelRegistry, ModelState
from tests.models.onnx_builders import heavy

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


@pytest.fixture(scope="module", autouse=True)
def steady_memory(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Make the size the registry measures for a model its own, and the same at every load.

    The registry measures RSS growth around a session's creation. glibc serves allocations
    under its dynamic mmap threshold (up to 32 MB) from the heap, where a buffer freed while
    a session is built is sometimes reused within the same load and sometimes kept: a 16 MB
    model then measures anywhere from 36 to 56 MB. Served straight from mmap, freed buffers go
    back to the OS at once and it measures 20.3 MB every time. (glibc cannot switch the
    dynamic threshold back on: large allocations stay on mmap for the rest of the process.)

    The first session in a process also pays ~30 MB of one-time onnxruntime set-up; a
    throwaway model pays it here, so no test's first model measures it.
    """
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to tune
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, MB)
    folder = tmp_path_factory.mktemp("warm")
    registry = ModelRegistry(Settings(cache_dir=folder / "cache"), folder)
    registry.get("warm", Model(str(heavy(folder / "warm.onnx", 99, 1))))
    del registry
    release_to_os()


@pytest.fixture(scope="module")
def heavy_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("heavy")
    # 16 MB of weights each: a session measures 20.3 MB (onnxruntime pre-packs the MatMul
    # weights, and the warm-up's x @ W of one row takes another 4 MB).
    return {
        name: heavy(folder / f"{name}.onnx", seed, 16) for seed, name in enumerate(("a", "b", "c"))
    }


def _registry(tmp_path: Path, **settings: float) -> ModelRegistry:
    return ModelRegistry(Settings(cache_dir=tmp_path / "cache", **settings), tmp_path)  # type: ignore[arg-type]


def test_three_models_round_robin_under_a_budget_for_two(
    heavy_models: dict[str, Path], tmp_path: Path
) -> None:
    # Two models take 40.6 MB: 7.4 MB to spare. A third needs room for its file first:
    # 40.6 + 16 MB is 8.6 MB over the budget, so the least recently used one goes before it loads.
    registry = _registry(tmp_path, memory_budget_mb=48)
    seen: list[list[str]] = []
    for _ in range(3):
        for name, path in heavy_models.items():
            with registry.use(name, Model(str(path))) as model:
                assert model.run({"x": [[1.0, 0.0, 0.0, 0.0]]})["y"].shape == (1,)
            seen.append(sorted(registry.resident()))
    assert max(len(r) for r in seen) == 2
    assert seen[2] == ["b", "c"]  # a, the least recently used, made room for c
    ab, ac, bc = ["a", "b"], ["a", "c"], ["b", "c"]
    assert seen == [["a"], ab, bc, ac, ab, bc, ac, ab, bc]  # round robin: each evicts the next
    assert sum(registry.resident().values()) <= 48 * MB


def test_a_model_serving_a_request_is_never_unloaded(
    heavy_models: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # One model (20.3 MB) fits, with 7.7 MB to spare; a second's file is 8.3 MB too many.
    registry = _registry(tmp_path, memory_budget_mb=28)  # room for one: the rest must wait or go
    with (
        caplog.at_level(logging.WARNING, logger="mlfn.models"),
        registry.use("a", Model(str(heavy_models["a"]))) as a,
    ):
        registry.get("b", Model(str(heavy_models["b"])))
        assert registry.state("a") is ModelState.READY  # held: b could not push it out
        assert a.run({"x": [[0.0, 1.0, 0.0, 0.0]]})["y"].shape == (1,)
    assert any("every resident model is in use" in r.getMessage() for r in caplog.records)
    registry.get("c", Model(str(heavy_models["c"])))
    assert sorted(registry.resident()) == ["c"]  # once released, both were fair game


def test_idle_models_are_unloaded(heavy_models: dict[str, Path], tmp_path: Path) -> None:
    registry = _registry(tmp_path, idle_unload_s=2.0)  # longer than loading b takes on a busy CI
    registry.get("a", Model(str(heavy_models["a"])))
    registry.get("b", Model(str(heavy_models["b"])))
    assert sorted(registry.resident()) == ["a", "b"]
    deadline = time.monotonic() + 10
    while registry.resident() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert registry.resident() == {}
    assert registry.state("a") is ModelState.ABSENT
    model = registry.get("a", Model(str(heavy_models["a"])))  # and loads again when needed
    assert model.report is not None and model.report.cache == "local"


def test_the_load_report_breaks_the_cold_start_down(
    heavy_models: dict[str, Path], tmp_path: Path
) -> None:
    report = _registry(tmp_path).get("a", Model(str(heavy_models["a"]))).report
    assert report is not None
    assert report.bytes == heavy_models["a"].stat().st_size
    assert report.memory_bytes >= report.bytes
    assert report.session_s > 0 and report.warmup_s > 0 and report.total_s >= report.session_s
    assert set(report.as_dict()) >= {
        "cache",
        "downloaded_bytes",
        "fetch_s",
        "verify_s",
        "session_s",
        "warmup_s",
    }

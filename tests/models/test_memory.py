"""Memory: an LRU under MLFN_MEMORY_BUDGET_MB that never unloads a model serving a request,
and idle models unloaded after MLFN_IDLE_UNLOAD_S."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from runtime.config import Settings
from runtime.endpoint import Model
from runtime.models.registry import ModelRegistry, ModelState
from tests.models.onnx_builders import heavy


@pytest.fixture(scope="module")
def heavy_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("heavy")
    # 64 MB of weights each: a session measures more (onnxruntime pre-packs MatMul
    # weights: ~81-85 MB, plus ~25 MB of one-time onnxruntime set-up for the first session
    # in a process); 220 MB always holds two of them and never three.
    return {
        name: heavy(folder / f"{name}.onnx", seed, 64) for seed, name in enumerate(("a", "b", "c"))
    }


def _registry(tmp_path: Path, **settings: float) -> ModelRegistry:
    return ModelRegistry(Settings(cache_dir=tmp_path / "cache", **settings), tmp_path)  # type: ignore[arg-type]


def test_three_models_round_robin_under_a_budget_for_two(
    heavy_models: dict[str, Path], tmp_path: Path
) -> None:
    registry = _registry(tmp_path, memory_budget_mb=220)
    seen: list[list[str]] = []
    for _ in range(3):
        for name, path in heavy_models.items():
            with registry.use(name, Model(str(path))) as model:
                assert model.run({"x": [[1.0, 0.0, 0.0, 0.0]]})["y"].shape == (1,)
            seen.append(sorted(registry.resident()))
    assert max(len(r) for r in seen) == 2
    assert seen[2] == ["b", "c"]  # a, the least recently used, made room for c
    assert sum(registry.resident().values()) <= 220 * 1024 * 1024


def test_a_model_serving_a_request_is_never_unloaded(
    heavy_models: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = _registry(tmp_path, memory_budget_mb=100)  # room for none: all must be held or go
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

"""Sessions: threads sized to the instance, the optimised graph kept and reused, the provider
that actually runs the model reported."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from runtime.config import Settings
from runtime.endpoint import Model
from runtime.errors import ModelLoadFailed
from runtime.models.registry import ModelRegistry
from runtime.models.session import SessionConfig, create
from tests.models.onnx_builders import mlp


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mlp(tmp_path_factory.mktemp("models") / "mlp.onnx", sizes=(8, 16, 4))


X = {"x": np.arange(16, dtype=np.float32).reshape(2, 8) / 10}


def test_the_optimised_graph_is_kept_then_loaded_and_answers_the_same(
    model_file: Path, tmp_path: Path
) -> None:
    config = SessionConfig(optimized_dir=tmp_path / "optimized")
    first, saved = create("m", model_file, "a" * 64, config)
    again, hit = create("m", model_file, "a" * 64, config)
    assert (saved.optimized, hit.optimized) == ("saved", "hit")
    (kept,) = (tmp_path / "optimized").iterdir()
    assert kept.name.startswith("a" * 64 + "-ort") and "-all-cpu-" in kept.name
    assert not [p for p in kept.parent.iterdir() if p.name.startswith(".saving-")]
    np.testing.assert_array_equal(first.run(None, X)[0], again.run(None, X)[0])


def test_a_damaged_kept_graph_is_rebuilt(
    model_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = SessionConfig(optimized_dir=tmp_path / "optimized")
    create("m", model_file, "b" * 64, config)
    (kept,) = (tmp_path / "optimized").iterdir()
    kept.write_bytes(b"not a model")
    with caplog.at_level(logging.WARNING, logger="mlfn.models"):
        _, info = create("m", model_file, "b" * 64, config)
    assert info.optimized == "saved" and kept.stat().st_size > 100
    assert any("unusable" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "config",
    [SessionConfig(), SessionConfig(optimization="disabled", optimized_dir=Path("/nonexistent"))],
)
def test_nothing_is_kept_when_keeping_is_off_or_nothing_is_optimised(
    model_file: Path, config: SessionConfig
) -> None:
    _, info = create("m", model_file, "c" * 64, config)
    assert info.optimized == "off"


def test_threads_default_to_the_cpus_this_process_may_use(model_file: Path) -> None:
    session, info = create("m", model_file, "d" * 64, SessionConfig())
    assert info.intra_op_threads == len(os.sched_getaffinity(0))
    assert session.get_session_options().intra_op_num_threads == info.intra_op_threads
    session, info = create("m", model_file, "d" * 64, SessionConfig(intra_op_threads=1))
    assert session.get_session_options().intra_op_num_threads == 1 == info.intra_op_threads


def test_the_provider_actually_used_is_reported_and_an_unknown_one_refused(
    model_file: Path,
) -> None:
    _, info = create("m", model_file, "e" * 64, SessionConfig())
    assert info.provider == "CPUExecutionProvider"  # no GPU on this machine
    with pytest.raises(ModelLoadFailed, match="onnxruntime cannot load model 'm'"):
        create("m", model_file, "e" * 64, SessionConfig(providers=("NoSuchExecutionProvider",)))


def test_settings_reach_the_registry_and_the_load_report(model_file: Path, tmp_path: Path) -> None:
    env = {
        "MLFN_CACHE_DIR": str(tmp_path / "cache"),
        "MLFN_ORT_INTRA_OP_THREADS": "1",
        "MLFN_ORT_KEEP_OPTIMIZED": "true",
    }
    registry = ModelRegistry(Settings.from_mapping(env), tmp_path)
    report = registry.get("m", Model(str(model_file))).report
    assert report is not None and (report.provider, report.optimized) == (
        "CPUExecutionProvider",
        "saved",
    )
    restarted = ModelRegistry(Settings.from_mapping(env), tmp_path)
    report = restarted.get("m", Model(str(model_file))).report
    assert report is not None and report.optimized == "hit"


def test_a_graph_that_cannot_be_kept_is_served_all_the_same(
    model_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "optimized"
    blocked.write_text("a file where the folder would go")
    with caplog.at_level(logging.WARNING, logger="mlfn.models"):
        session, info = create("m", model_file, "f" * 64, SessionConfig(optimized_dir=blocked))
    assert info.optimized == "off" and session.run(None, X)[0].shape == (2, 4)
    assert any("cannot keep the optimised graph" in r.getMessage() for r in caplog.records)

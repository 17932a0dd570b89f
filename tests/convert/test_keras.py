"""Keras to an endpoint: a trained model saved as .keras and as a SavedModel, converted, proven,
scaffolded and served. Reported skipped where TensorFlow and tf2onnx are not installed."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from runtime.convert import to_onnx
from tests.convert.steps import mlfn, served
from tests.support import make_app

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up banner
REASON = (
    "TensorFlow and tf2onnx are not installed: `make test-frameworks` installs them (Python 3.11)"
)
keras = pytest.importorskip("keras", reason=REASON)
pytest.importorskip("tensorflow", reason=REASON)
pytest.importorskip("tf2onnx", reason=REASON)


@pytest.fixture(scope="module")
def classifier() -> Any:
    """A small network trained for a few epochs to score 5 features into 2 classes."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(12, activation="relu"),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    x = np.random.default_rng(0).standard_normal((200, 5)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=5, verbose=0)
    return model


def test_a_keras_model_and_a_saved_model_converted_and_served_answer_what_keras_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, classifier: Any
) -> None:
    app = make_app(tmp_path / "app", {})
    with warnings.catch_warnings():  # Keras's own numpy-2 deprecations while it saves
        warnings.simplefilter("ignore", DeprecationWarning)
        classifier.save(tmp_path / "net.keras")
        classifier.export(tmp_path / "saved", verbose=False)
    rows = np.random.default_rng(1).standard_normal((16, 5)).astype(np.float32)
    np.save(tmp_path / "rows.npy", rows)

    for name, source, extra in (
        ("keras", tmp_path / "net.keras", ()),  # rows synthesised from the model's input shape
        ("saved", tmp_path / "saved", ("--sample", str(tmp_path / "rows.npy"))),
    ):
        done = mlfn(monkeypatch, app, "convert", str(source), "--to", f"models/{name}.onnx", *extra)
        assert done.exit_code == 0, (done.output, done.exc_info)
        assert "largest difference" in done.stdout
        made = mlfn(monkeypatch, app, "new", name, "--model", f"models/{name}.onnx")
        assert made.exit_code == 0, (made.output, made.exc_info)

    body = {"instances": [{"input": r} for r in rows.tolist()]}
    answers = served(app, tmp_path, [("keras", body), ("saved", body)])
    expected = np.asarray(classifier(rows, training=False))
    assert len(set(expected.argmax(axis=1).tolist())) == 2  # a model that learned something
    for answer in answers:
        got = np.array([p["output"] for p in answer.json()["predictions"]])
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_the_api_names_the_output_and_proves_on_synthesised_rows(
    tmp_path: Path, classifier: Any
) -> None:
    done = to_onnx(classifier, tmp_path / "net.onnx", rows=10)
    assert done.framework == "keras" and done.rows == 10
    assert [d.output for d in done.differences] == ["output"] and done.largest_difference < 1e-5


def test_class_names_make_a_classifier_with_a_label_output(tmp_path: Path, classifier: Any) -> None:
    done = to_onnx(classifier, tmp_path / "net.onnx", rows=10, classes=["no", "yes"])
    assert [d.output for d in done.differences] == ["label", "probabilities"]
    assert done.differences[0].detail == "0 of 10 values differ"

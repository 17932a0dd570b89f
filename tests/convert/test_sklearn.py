"""scikit-learn to an endpoint: a pickled pipeline converted, proven, scaffolded and served."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import joblib
import numpy as np
import onnx
import pytest
from sklearn.datasets import load_diabetes, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from runtime.convert import to_onnx
from runtime.errors import ConversionError, ConversionMismatch, ConverterMissing
from tests.convert.steps import mlfn, refused, served
from tests.support import make_app

SPECIES = ["setosa", "versicolor", "virginica"]


@pytest.fixture(scope="module")
def forest() -> object:
    """A scaler and a tree ensemble, fitted on iris (integer classes 0, 1, 2)."""
    data = load_iris()
    return make_pipeline(
        StandardScaler(), RandomForestClassifier(n_estimators=15, max_depth=4, random_state=0)
    ).fit(data.data, data.target)


def test_a_pickled_pipeline_converted_and_served_answers_what_scikit_learn_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forest: object
) -> None:
    app = make_app(tmp_path / "app", {})
    joblib.dump(forest, tmp_path / "forest.joblib")
    np.save(tmp_path / "iris.npy", load_iris().data)  # the proof on every real row

    done = mlfn(
        monkeypatch, app, "convert", str(tmp_path / "forest.joblib"), "--to", "models/iris.onnx",
        "--sample", str(tmp_path / "iris.npy"), "--classes", ",".join(SPECIES),
    )  # fmt: skip
    assert done.exit_code == 0, (done.output, done.exc_info)
    assert "unpickles it, which runs any code the file holds" in done.stderr
    assert "onnx checker: passed; 150 sample rows answered by both models" in done.stdout
    assert "  label: 0 of 150 values differ\n" in done.stdout
    assert "wrote models/iris.onnx" in done.stdout
    assert "next: mlfn new NAME --model models/iris.onnx --template classifier\n" in done.stdout
    model = onnx.load(app / "models" / "iris.onnx")
    assert {p.key: p.value for p in model.metadata_props}["mlfn.classes"] == json.dumps(SPECIES)
    assert [o.name for o in model.graph.output] == ["label", "probabilities"]  # no ZipMap
    # float64 in: scikit-learn scales in float64, and casts to float32 only for the trees
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE

    made = mlfn(
        monkeypatch, app, "new", "flowers", "--model", "models/iris.onnx",
        "--template", "classifier",
    )  # fmt: skip
    assert made.exit_code == 0, (made.output, made.exc_info)
    assert "classes from the model's metadata (mlfn.classes): setosa, versicolor, virginica" in (
        made.stdout
    )

    rows = load_iris().data[::3]
    (answer,) = served(
        app, tmp_path, [("flowers", {"instances": [{"input": r} for r in rows.tolist()]})]
    )
    predictions = answer.json()["predictions"]
    assert [p["label"] for p in predictions] == [SPECIES[i] for i in forest.predict(rows)]  # type: ignore[attr-defined]
    served_probabilities = np.array([[p["probabilities"][s] for s in SPECIES] for p in predictions])
    np.testing.assert_allclose(served_probabilities, forest.predict_proba(rows), atol=1e-5)  # type: ignore[attr-defined]
    assert len({p["label"] for p in predictions}) == 3  # every class was reached


def test_the_api_converts_without_a_sample_and_names_integer_classes_in_the_metadata(
    tmp_path: Path, forest: object
) -> None:
    done = to_onnx(forest, tmp_path / "iris.onnx", rows=20)
    assert done.framework == "sklearn" and done.rows == 20
    assert 0 < done.largest_difference < 1e-5  # float32 arithmetic against float64
    assert [d.output for d in done.differences] == ["label", "probabilities"]
    model = onnx.load(tmp_path / "iris.onnx")
    assert {p.key: p.value for p in model.metadata_props}["mlfn.classes"] == '["0", "1", "2"]'


@pytest.mark.parametrize("scaling", [{"with_std": False}, {"with_mean": False, "with_std": False}])
def test_rows_are_synthesised_for_a_scaler_that_fitted_no_spread_or_centre(
    tmp_path: Path, scaling: dict[str, bool]
) -> None:
    data = load_diabetes()
    model = make_pipeline(StandardScaler(**scaling), LinearRegression()).fit(data.data, data.target)
    done = to_onnx(model, tmp_path / "m.onnx", rows=8)  # var_ (and mean_) None here
    assert done.rows == 8 and done.synthesised and done.largest_difference < 1e-4


def test_a_difference_over_the_tolerance_is_refused_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fitted in float64, served in float32: outputs in the hundreds differ by ~1e-7 relative.
    data = load_diabetes(scaled=False)
    joblib.dump(LinearRegression().fit(data.data, data.target), tmp_path / "ridge.pkl")
    np.save(tmp_path / "rows.npy", data.data[:40])

    kept = mlfn(
        monkeypatch, tmp_path, "convert", "ridge.pkl", "--to", "kept.onnx", "--sample", "rows.npy"
    )
    assert kept.exit_code == 0, (kept.output, kept.exc_info)
    assert "40 sample rows" in kept.stdout and (tmp_path / "kept.onnx").is_file()
    assert "next: mlfn new NAME --model kept.onnx\n" in kept.stdout  # not a classifier

    before = sorted(p.name for p in tmp_path.iterdir())
    done = mlfn(
        monkeypatch, tmp_path, "convert", "ridge.pkl", "--to", "out/strict.onnx",
        "--sample", "rows.npy", "--tolerance", "0",
    )  # fmt: skip
    refused(done, "does not answer as the sklearn model does on 40 sample rows (tolerance 0)")
    assert "variable: largest difference" in done.stderr and "nothing was written" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no out/, no temporary file

    with pytest.raises(ConversionMismatch):
        to_onnx(LinearRegression().fit(data.data, data.target), tmp_path / "x.onnx", tolerance=0)
    assert not (tmp_path / "x.onnx").exists()


def test_a_missing_converter_names_the_extra_that_installs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forest: object
) -> None:
    monkeypatch.setitem(sys.modules, "skl2onnx", None)  # what an absent package does on import
    with pytest.raises(
        ConverterMissing,
        match=r"needs skl2onnx, which is not installed: pip install 'mlfn\[convert-sklearn\]'",
    ):
        to_onnx(forest, tmp_path / "x.onnx")
    joblib.dump(forest, tmp_path / "forest.joblib")
    done = mlfn(monkeypatch, tmp_path, "convert", "forest.joblib", "--to", "x.onnx")
    refused(done, "pip install 'mlfn[convert-sklearn]'")
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("model.bin", b"x", "cannot tell which framework wrote model.bin: pass --framework"),
        ("model.joblib", b"not a pickle", "cannot unpickle"),
        ("folder", None, "neither a TensorFlow SavedModel (saved_model.pb) nor a Spark ML"),
    ],
)
def test_files_that_cannot_be_read_are_refused_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, content: bytes | None, message: str
) -> None:
    path = tmp_path / name
    path.mkdir() if content is None else path.write_bytes(content)
    refused(mlfn(monkeypatch, tmp_path, "convert", name, "--to", "x.onnx"), message)
    assert not (tmp_path / "x.onnx").exists()


def test_class_names_must_match_the_classes(tmp_path: Path, forest: object) -> None:
    with pytest.raises(ConversionError, match="2 class names given; the model has 3 classes"):
        to_onnx(forest, tmp_path / "x.onnx", classes=["a", "b"])
    assert not (tmp_path / "x.onnx").exists()


def test_a_model_of_no_supported_framework_is_refused() -> None:
    with pytest.raises(ConversionError, match=r"not builtins\.dict"):
        to_onnx({"weights": [1, 2]}, "never.onnx")


def test_a_classifier_of_classes_3_5_7_serves_the_class_each_row_gets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Label values are not column numbers: the metadata says which value is which class."""
    from sklearn.linear_model import LogisticRegression

    data = load_iris()
    y = np.array([3, 5, 7])[data.target]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(data.data, y)
    app = make_app(tmp_path / "app", {})
    (app / "models").mkdir()
    to_onnx(model, app / "models" / "odd.onnx", sample=data.data)
    made = mlfn(
        monkeypatch, app, "new", "odd", "--model", "models/odd.onnx", "--template", "classifier"
    )
    assert made.exit_code == 0, (made.output, made.exc_info)
    rows = data.data[::5]
    (answer,) = served(
        app, tmp_path, [("odd", {"instances": [{"input": r} for r in rows.tolist()]})]
    )
    predictions = answer.json()["predictions"]
    assert [p["label"] for p in predictions] == [str(c) for c in model.predict(rows)]
    best = [max(p["probabilities"], key=p["probabilities"].get) for p in predictions]
    assert best == [p["label"] for p in predictions]

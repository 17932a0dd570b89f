"""XGBoost and LightGBM models through mlfn convert: alone (fitted on an array or a numeric
DataFrame) and as the last step of a scikit-learn pipeline over numeric and categorical string
columns, proven on sample rows and answering held-out rows as the original does; a pipeline
served by ``mlfn new --template classifier``. Reported skipped where xgboost, lightgbm or
onnxmltools is not installed (`make test-frameworks` installs them)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from sklearn.base import clone, is_classifier
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from runtime.convert import to_onnx
from runtime.errors import ConversionError, ConversionMismatch, ConverterMissing
from tests.convert.steps import mlfn, served
from tests.support import make_app

REASON = "xgboost, lightgbm and onnxmltools are not installed: `make test-frameworks` installs them"
xgboost = pytest.importorskip("xgboost", reason=REASON)
lightgbm = pytest.importorskip("lightgbm", reason=REASON)
pytest.importorskip("onnxmltools", reason=REASON)

CITIES = ["oslo", "paris", "rome"]
NUMBERS = ["age", "income"]
# Few, shallow trees: each conversion takes well under a second.
MODELS = {
    "XGBClassifier": lambda: xgboost.XGBClassifier(n_estimators=12, max_depth=3, random_state=0),
    "XGBRegressor": lambda: xgboost.XGBRegressor(n_estimators=12, max_depth=3, random_state=0),
    "LGBMClassifier": lambda: lightgbm.LGBMClassifier(
        n_estimators=12, num_leaves=7, random_state=0, verbose=-1
    ),
    "LGBMRegressor": lambda: lightgbm.LGBMRegressor(
        n_estimators=12, num_leaves=7, random_state=0, verbose=-1
    ),
}


def _applicants(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.integers(18, 80, n),
            "income": rng.normal(50.0, 12.0, n).round(3),
            "city": rng.choice(CITIES, n),
        }
    )


def _score(frame: pd.DataFrame) -> pd.Series:
    city = frame["city"].map({"oslo": 1.0, "paris": 0.0, "rome": -1.0})
    return (frame["age"] - 45) / 10 + (frame["income"] - 50) / 8 + city


def _target(model: Any, frame: pd.DataFrame) -> Any:
    """A regressor's score; a classifier's outcome: XGBoost takes classes 0..n-1 alone,
    LightGBM takes strings, which then name the classes."""
    score = _score(frame)
    if not is_classifier(model):
        return score.to_numpy()
    approved = (score > 0).to_numpy()
    if isinstance(model, xgboost.XGBClassifier):
        return approved.astype(int)
    return np.where(approved, "approved", "refused")


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    return _applicants(300, seed=0)


@pytest.fixture(scope="module")
def held_out() -> pd.DataFrame:
    return _applicants(80, seed=1)  # rows the models were not fitted on


def _run(path: Path, rows: Any) -> dict[str, Any]:
    """The written model answering ``rows``: a matrix for one input, else a DataFrame's
    columns, each input fed its column as the input's type asks."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    if len(inputs) == 1 and not isinstance(rows, pd.DataFrame):
        feeds = {inputs[0].name: np.asarray(rows, dtype=np.float32)}
    else:
        kinds = {
            "tensor(string)": object,
            "tensor(double)": np.float64,
            "tensor(float)": np.float32,
        }
        feeds = {
            i.name: rows[i.name].to_numpy().astype(kinds[i.type]).reshape(-1, 1) for i in inputs
        }
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds), strict=True))


def _answers_alike(path: Path, model: Any, rows: Any) -> None:
    """The written model answers ``rows`` as ``model`` does: labels equal, probabilities and
    predictions within float32's precision."""
    got = _run(path, rows)
    if is_classifier(model):
        assert list(got["label"]) == list(model.predict(rows))
        np.testing.assert_allclose(got["probabilities"], model.predict_proba(rows), atol=1e-5)
        metadata = {p.key: p.value for p in onnx.load(path).metadata_props}
        assert json.loads(metadata["mlfn.classes"]) == [str(c) for c in model.classes_]
    else:
        (prediction,) = got.values()
        np.testing.assert_allclose(prediction.ravel(), model.predict(rows), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("kind", ["array", "numeric-dataframe"])
@pytest.mark.parametrize("name", list(MODELS))
def test_a_boosted_model_alone_converts_proven_and_answers_held_out_rows_alike(
    tmp_path: Path, train: pd.DataFrame, held_out: pd.DataFrame, name: str, kind: str
) -> None:
    model = MODELS[name]()
    x, x_new = train[NUMBERS], held_out[NUMBERS]
    if kind == "array":
        x, x_new = x.to_numpy(np.float64), x_new.to_numpy(np.float64)
    model.fit(x, _target(model, train))
    done = to_onnx(model, tmp_path / "m.onnx", x)
    assert (done.rows, done.framework) == (len(train), "sklearn")
    assert done.largest_difference <= done.tolerance
    assert done.constant == ()  # the sample reached more than one answer
    inputs = [i.name for i in onnx.load(tmp_path / "m.onnx").graph.input]
    assert inputs == (["input"] if kind == "array" else NUMBERS)
    _answers_alike(tmp_path / "m.onnx", model, x_new)


@pytest.mark.parametrize("name", ["LGBMClassifier", "LGBMRegressor"])
def test_lightgbm_fitted_on_a_spaced_column_takes_it_by_the_users_name(
    tmp_path: Path, train: pd.DataFrame, held_out: pd.DataFrame, name: str
) -> None:
    # LightGBM keeps "annual income" as "annual_income"; the user's rows carry the space, and
    # the conversion failed: "the sample has no column 'annual_income'".
    spaced = {"income": "annual income"}
    x, x_new = train[NUMBERS].rename(columns=spaced), held_out[NUMBERS].rename(columns=spaced)
    model = MODELS[name]().fit(x, _target(MODELS[name](), train))
    assert list(model.feature_names_in_) == ["age", "annual_income"]
    done = to_onnx(model, tmp_path / "m.onnx", x)
    assert done.largest_difference <= done.tolerance
    written = onnx.load(tmp_path / "m.onnx")
    assert [i.name for i in written.graph.input] == ["age", "annual income"]
    columns = json.loads({p.key: p.value for p in written.metadata_props}["mlfn.columns"])
    assert [c["name"] for c in columns] == ["age", "annual income"]
    _answers_alike(tmp_path / "m.onnx", model, x_new)


def _pipeline(final: Any) -> Pipeline:
    prep = ColumnTransformer(
        [
            ("numbers", StandardScaler(), NUMBERS),
            ("city", OneHotEncoder(handle_unknown="error"), ["city"]),
        ]
    )
    return Pipeline([("prep", prep), ("model", final)])


@pytest.mark.parametrize("name", list(MODELS))
def test_a_boosted_model_ending_a_dataframe_pipeline_takes_the_columns_by_name(
    tmp_path: Path, train: pd.DataFrame, held_out: pd.DataFrame, name: str
) -> None:
    final = MODELS[name]()
    pipeline = _pipeline(final).fit(train, _target(final, train))
    done = to_onnx(pipeline, tmp_path / "m.onnx", train)
    assert done.rows == len(train) and done.constant == ()
    model = onnx.load(tmp_path / "m.onnx")
    types = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    # float64 in, cast to float32 before the trees, as scikit-learn hands the steps' output
    # to the booster.
    assert types == {
        "age": onnx.TensorProto.DOUBLE,
        "income": onnx.TensorProto.DOUBLE,
        "city": onnx.TensorProto.STRING,
    }
    columns = json.loads({p.key: p.value for p in model.metadata_props}["mlfn.columns"])
    assert columns[2] == {
        "name": "city",
        "type": "str",
        "categories": CITIES,
        "closed": True,
        "replaced": [],
    }
    _answers_alike(tmp_path / "m.onnx", pipeline, held_out)


def test_an_xgboost_pipeline_served_by_the_classifier_template_answers_predict_proba(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, train: pd.DataFrame, held_out: pd.DataFrame
) -> None:
    final = MODELS["XGBClassifier"]()
    pipeline = _pipeline(final).fit(train, _target(final, train))
    joblib.dump(pipeline, tmp_path / "loans.joblib")
    train.to_csv(tmp_path / "train.csv", index=False)
    app = make_app(tmp_path / "app", {})
    done = mlfn(
        monkeypatch, app, "convert", str(tmp_path / "loans.joblib"), "--to", "models/loans.onnx",
        "--sample", str(tmp_path / "train.csv"), "--classes", "refused,approved",
    )  # fmt: skip
    assert done.exit_code == 0, (done.output, done.exc_info)
    assert f"{len(train)} sample rows answered by both models" in done.stdout
    made = mlfn(
        monkeypatch, app, "new", "loans", "--model", "models/loans.onnx", "--template", "classifier"
    )
    assert made.exit_code == 0, (made.output, made.exc_info)
    text = (app / "functions" / "loans" / "endpoint.py").read_text()
    assert '    city: Literal["oslo", "paris", "rome"]\n' in text

    rows = held_out.to_dict(orient="records")
    (answer,) = served(app, tmp_path, [("loans", {"instances": rows})])
    predictions = answer.json()["predictions"]
    names = ["refused", "approved"]  # classes 0 and 1
    assert [p["label"] for p in predictions] == [names[c] for c in pipeline.predict(held_out)]
    got = np.array([[p["probabilities"][n] for n in names] for p in predictions])
    np.testing.assert_allclose(got, pipeline.predict_proba(held_out), atol=1e-5)
    assert len({p["label"] for p in predictions}) == 2  # both classes reached


def _sample(train: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    x = train[NUMBERS].to_numpy(np.float64)
    return x, (_score(train) > 0).to_numpy().astype(int)


def test_an_objective_onnxmltools_refuses_is_a_conversion_error_and_nothing_is_written(
    tmp_path: Path, train: pd.DataFrame
) -> None:
    x, y = _sample(train)
    model = xgboost.XGBClassifier(n_estimators=3, objective="binary:logitraw").fit(x, y)
    with pytest.raises(ConversionError, match=r"cannot convert XGBClassifier: .*binary:logitraw"):
        to_onnx(model, tmp_path / "m.onnx", x)
    assert not (tmp_path / "m.onnx").exists()


def test_a_custom_lightgbm_objective_is_refused_by_name(
    tmp_path: Path, train: pd.DataFrame
) -> None:
    """onnxmltools took a regressor with a function for its objective for a classifier and
    failed on its missing classes_."""

    def squared(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return y_pred - y_true, np.ones_like(y_pred)

    x, y = _sample(train)
    model = lightgbm.LGBMRegressor(n_estimators=3, objective=squared, verbose=-1).fit(x, y)
    with pytest.raises(ConversionError, match="LGBMRegressor was trained with a custom objective"):
        to_onnx(model, tmp_path / "m.onnx", x)
    assert not (tmp_path / "m.onnx").exists()


def test_a_lightgbm_random_forest_onnxmltools_gets_wrong_is_caught_by_the_proof(
    tmp_path: Path, train: pd.DataFrame
) -> None:
    # onnxmltools 1.16 converts boosting_type="rf" classifiers, and their probabilities come
    # out far from LightGBM's: the proof is what keeps such a file from being written.
    x, y = _sample(train)
    model = lightgbm.LGBMClassifier(
        n_estimators=5, boosting_type="rf", bagging_freq=1, bagging_fraction=0.5, verbose=-1
    ).fit(x, y)
    with pytest.raises(ConversionMismatch, match="probabilities: largest difference"):
        to_onnx(model, tmp_path / "m.onnx", x)
    assert not (tmp_path / "m.onnx").exists()


def test_without_onnxmltools_the_error_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, train: pd.DataFrame
) -> None:
    x, y = _sample(train)
    model = clone(MODELS["LGBMClassifier"]()).fit(x, y)
    monkeypatch.setitem(sys.modules, "onnxmltools", None)  # import onnxmltools fails
    with pytest.raises(ConverterMissing, match=r"pip install 'mlfn\[convert-lightgbm\]'"):
        to_onnx(model, tmp_path / "m.onnx", x)


@pytest.mark.parametrize("name", list(MODELS))
def test_numbers_the_trees_read_first_may_be_missing_and_answer_as_the_library_does(
    tmp_path: Path, train: pd.DataFrame, held_out: pd.DataFrame, name: str
) -> None:
    """XGBoost and LightGBM send a NaN where they learnt to: a column they read first is
    optional (``mlfn new`` writes ``float | None``), and the converted trees agree on NaN."""
    model = MODELS[name]()
    holes, rows = train[NUMBERS].astype(float), held_out[NUMBERS].astype(float)
    holes.loc[::4, "income"] = np.nan
    rows.loc[::3, "income"] = np.nan
    model.fit(holes, _target(model, train))
    to_onnx(model, tmp_path / "m.onnx", holes)
    metadata = {p.key: p.value for p in onnx.load(tmp_path / "m.onnx").metadata_props}
    assert [c.get("optional") for c in json.loads(metadata["mlfn.columns"])] == [True, True]
    _answers_alike(tmp_path / "m.onnx", model, rows)
    # A scaler before the trees sees the NaN: the columns it reads stay required.
    scaled = _pipeline(MODELS[name]()).fit(train, _target(model, train))
    to_onnx(scaled, tmp_path / "scaled.onnx", train)
    metadata = {p.key: p.value for p in onnx.load(tmp_path / "scaled.onnx").metadata_props}
    assert [c.get("optional") for c in json.loads(metadata["mlfn.columns"])] == [None] * 3


def test_a_lightgbm_model_not_using_missing_values_takes_every_number() -> None:
    from runtime.convert.sklearn_columns import _trees_take_nan

    assert _trees_take_nan(lightgbm.LGBMRegressor())
    assert not _trees_take_nan(lightgbm.LGBMRegressor(use_missing=False))
    assert not _trees_take_nan(lightgbm.LGBMRegressor(zero_as_missing=True))
    assert not _trees_take_nan(xgboost.XGBRegressor(missing=0.0))
    assert not _trees_take_nan(lightgbm.LGBMRegressor(use_missing="false"))  # LightGBM's text
    assert not _trees_take_nan(lightgbm.LGBMRegressor(zero_as_missing="true"))


def test_numbers_passed_through_to_the_trees_may_be_missing(
    tmp_path: Path, train: pd.DataFrame, held_out: pd.DataFrame
) -> None:
    prep = ColumnTransformer(
        [("city", OneHotEncoder(handle_unknown="ignore"), ["city"])], remainder="passthrough"
    )
    model = Pipeline([("prep", prep), ("model", MODELS["XGBRegressor"]())])
    holes, rows = train.copy(), held_out.copy()
    holes["income"] = holes["income"].where(holes.index % 4 > 0)
    rows["income"] = rows["income"].where(rows.index % 3 > 0)
    model.fit(holes, _target(model, train))
    done = to_onnx(model, tmp_path / "m.onnx", holes)
    assert done.missing_rows == 8  # proven on rows with age and income missing too
    metadata = {p.key: p.value for p in onnx.load(tmp_path / "m.onnx").metadata_props}
    optional = {c["name"]: c.get("optional") for c in json.loads(metadata["mlfn.columns"])}
    # The encoder ignores unknown cities and learnt no NaN: a missing one is answered alike.
    assert optional == {"age": True, "income": True, "city": True}
    _answers_alike(tmp_path / "m.onnx", model, rows)


def test_a_city_encoded_missing_as_unknown_may_be_missing(
    tmp_path: Path, train: pd.DataFrame, held_out: pd.DataFrame
) -> None:
    """The usual XGBoost pipeline: categories by an OrdinalEncoder giving a missing value the
    unknown code. A missing city is served as a category never seen, which it answers alike."""
    from sklearn.preprocessing import OrdinalEncoder

    encoder = OrdinalEncoder(
        handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1
    )
    prep = ColumnTransformer([("city", encoder, ["city"])], remainder="passthrough")
    model = Pipeline([("prep", prep), ("model", MODELS["XGBClassifier"]())])
    holes, rows = train.astype({"city": object}), held_out.astype({"city": object})
    holes.loc[::5, "city"] = np.nan
    rows.loc[::3, "city"] = np.nan
    model.fit(holes, _target(model.steps[-1][1], train))
    done = to_onnx(model, tmp_path / "m.onnx", holes)
    assert done.missing_rows == 8
    metadata = {p.key: p.value for p in onnx.load(tmp_path / "m.onnx").metadata_props}
    columns = {c["name"]: c for c in json.loads(metadata["mlfn.columns"])}
    assert columns["city"]["optional"] and columns["city"]["missing"] == "<mlfn:missing>"
    served = rows.assign(city=rows["city"].fillna("<mlfn:missing>"))  # as OnnxModel feeds it
    got = _run(tmp_path / "m.onnx", served)["probabilities"]
    np.testing.assert_allclose(got, model.predict_proba(rows), atol=1e-5)

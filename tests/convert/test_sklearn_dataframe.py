"""A scikit-learn pipeline fitted on a DataFrame of numeric and categorical string columns:
converted with its named, typed columns, scaffolded with a field per column, and served by
name over HTTP, the Open Inference Protocol (V2) and a batch file of the DataFrame's own CSV."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import shlex
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnx
import pandas as pd
import pytest
from azure.storage.blob import ContainerClient
from click.testing import CliRunner
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier, VotingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from runtime import config
from runtime.cli import main
from runtime.convert import to_onnx
from runtime.errors import ConversionError
from tests.conftest import AzuriteInfo
from tests.convert.steps import mlfn, new_endpoint, served
from tests.support import LocalHost, app_env, make_app, wait_for

CITIES = ["oslo", "paris", "rome"]


def _loans(n: int, seed: int = 0) -> pd.DataFrame:
    """Applicants: an integer, a float with a space in its name, two string categories."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.integers(18, 80, n),
            "annual income": rng.normal(50.0, 12.0, n).round(3),
            "city": rng.choice(CITIES, n),
            "size": rng.choice(["S", "M", "L"], n),
        }
    )


def _outcome(frame: pd.DataFrame) -> pd.Series:
    score = (frame["age"] - 45) / 10 + (frame["annual income"] - 50) / 8
    score = score + frame["city"].map({"oslo": 1.0, "paris": 0.0, "rome": -1.0})
    return pd.Series(np.where(score > 0, "approved", "refused"), name="outcome")


@pytest.fixture(scope="module")
def loans() -> pd.DataFrame:
    return _loans(240)


@pytest.fixture(scope="module")
def pipeline(loans: pd.DataFrame) -> Pipeline:
    return _fitted_pipeline(loans)


def _fitted_pipeline(loans: pd.DataFrame) -> Pipeline:
    """Scaled numbers, a one-hot city refusing unknown cities, an ordinal size, boosted trees."""
    prep = ColumnTransformer(
        [
            ("numbers", StandardScaler(), ["age", "annual income"]),
            ("city", OneHotEncoder(handle_unknown="error"), ["city"]),
            (
                "size",
                OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
                ["size"],
            ),
        ]
    )
    model = GradientBoostingClassifier(n_estimators=30, max_depth=3, random_state=0)
    return Pipeline([("prep", prep), ("model", model)]).fit(loans, _outcome(loans))


def _metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(path).metadata_props}


def test_a_dataframe_pipeline_takes_its_columns_by_name_with_their_types_and_categories(
    tmp_path: Path, pipeline: Pipeline, loans: pd.DataFrame
) -> None:
    done = to_onnx(pipeline, tmp_path / "loans.onnx", loans)  # a sample with string columns
    assert done.rows == len(loans)
    model = onnx.load(tmp_path / "loans.onnx")
    inputs = {i.name: i.type.tensor_type for i in model.graph.input}
    assert list(inputs) == ["age", "annual income", "city", "size"]
    assert inputs["city"].elem_type == onnx.TensorProto.STRING
    assert inputs["age"].elem_type == onnx.TensorProto.DOUBLE  # float64 before the trees
    assert [d.dim_value for d in inputs["age"].shape.dim] == [0, 1]  # [None, 1]
    assert json.loads(_metadata(tmp_path / "loans.onnx")["mlfn.columns"]) == [
        {"name": "age", "type": "int"},
        {"name": "annual income", "type": "float"},
        {"name": "city", "type": "str", "categories": CITIES, "closed": True, "replaced": []},
        {
            "name": "size",
            "type": "str",
            "categories": ["L", "M", "S"],
            "closed": False,
            "replaced": [],
        },
    ]


def test_rows_are_synthesised_from_the_scalers_and_the_encoders_categories(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    done = to_onnx(pipeline, tmp_path / "loans.onnx", rows=64)
    assert done.synthesised and done.rows == 64
    assert done.constant == ()  # rows like the training data reach both classes
    columns = json.loads(_metadata(tmp_path / "loans.onnx")["mlfn.columns"])
    # Without a sample, a number's type is unknown: float, which takes integers too.
    assert [c["type"] for c in columns] == ["float", "float", "str", "str"]


def test_a_sample_missing_a_column_is_refused_by_name(
    tmp_path: Path, pipeline: Pipeline, loans: pd.DataFrame
) -> None:
    with pytest.raises(ConversionError, match="the sample has no column 'city'"):
        to_onnx(pipeline, tmp_path / "loans.onnx", loans.drop(columns="city"))
    assert not (tmp_path / "loans.onnx").exists()


@pytest.mark.parametrize(
    "final", [LogisticRegression(), RandomForestClassifier(n_estimators=10, random_state=0)]
)
def test_imputed_numbers_convert_before_linear_models_and_trees(
    tmp_path: Path, loans: pd.DataFrame, final: Any
) -> None:
    """onnxruntime's Imputer takes float32 alone: a tree after an imputer took float64 and the
    converted model could not run."""
    holes = loans.copy()
    holes.loc[::7, "annual income"] = np.nan
    prep = ColumnTransformer(
        [
            ("numbers", make_pipeline(SimpleImputer(), StandardScaler()), ["age", "annual income"]),
            ("city", OneHotEncoder(handle_unknown="ignore"), ["city"]),
        ]
    )
    model = Pipeline([("prep", prep), ("model", final)]).fit(holes, _outcome(loans))
    done = to_onnx(model, tmp_path / "m.onnx", holes)
    assert done.rows == len(loans)
    # Trees after an imputer compute in float32: a rare row may take the other branch, which
    # the proof's rows need not show (a new user's trial: 0.028 of a probability), so it says.
    trees = type(final).__name__ != "LogisticRegression"
    assert bool(done.warnings) is trees and all("float32" in w for w in done.warnings)
    numbers = make_pipeline(SimpleImputer(), RandomForestClassifier(n_estimators=5, random_state=0))
    x = holes[["age", "annual income"]].to_numpy()
    arrays = to_onnx(numbers.fit(x, _outcome(loans)), tmp_path / "arrays.onnx", x)  # arrays too
    assert arrays.warnings
    plain = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=5, random_state=0))
    x = loans[["age", "annual income"]].to_numpy()
    assert not to_onnx(plain.fit(x, _outcome(loans)), tmp_path / "plain.onnx", x).warnings
    # An ensemble warns by its members: linear models compare no thresholds.
    x = holes[["age", "annual income"]].to_numpy()
    for members, warned in (
        ([("a", LogisticRegression()), ("b", LogisticRegression(C=0.5))], False),
        ([("a", LogisticRegression()), ("f", RandomForestClassifier(n_estimators=3))], True),
    ):
        voting = make_pipeline(
            SimpleImputer(), VotingClassifier(members, voting="soft", flatten_transform=False)
        )
        done = to_onnx(voting.fit(x, _outcome(loans)), tmp_path / "voting.onnx", x)
        assert bool(done.warnings) is warned


def test_a_numeric_dataframe_regressor_serves_a_field_per_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loans: pd.DataFrame
) -> None:
    numbers = loans[["age", "annual income"]]
    target = 3 * numbers["age"] - numbers["annual income"]
    joblib.dump(
        make_pipeline(StandardScaler(), LinearRegression()).fit(numbers, target),
        tmp_path / "r.joblib",
    )
    app = make_app(tmp_path / "app", {})
    done = mlfn(monkeypatch, app, "convert", str(tmp_path / "r.joblib"), "--to", "models/r.onnx")
    assert done.exit_code == 0, (done.output, done.exc_info)
    made = mlfn(
        monkeypatch, app, "new", "spend", "--model", "models/r.onnx", "--template", "regressor"
    )
    assert made.exit_code == 0, (made.output, made.exc_info)
    text = (app / "functions" / "spend" / "endpoint.py").read_text()
    assert "    age: Float32\n" in text
    assert '    annual_income: Float32 = Field(alias="annual income")\n' in text
    rows = numbers.head(5).to_dict(orient="records")
    (answer,) = served(app, tmp_path, [("spend", {"instances": rows})])
    got = [p["prediction"] for p in answer.json()["predictions"]]
    np.testing.assert_allclose(got, target.head(5), rtol=1e-4)


# --- end to end: convert, new, HTTP, V2 and a batch file -----------------------------------------


@pytest.fixture
def served_app(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    pipeline: Pipeline,
    loans: pd.DataFrame,
    azurite: AzuriteInfo,
    container: str,
    isolated_imports: None,
) -> Iterator[tuple[LocalHost, str]]:
    """The pipeline pickled, converted with the DataFrame's CSV as its sample, made an endpoint
    by ``mlfn new --template classifier``, served by the local host with Azurite."""
    app = make_app(tmp_path / "app", {})
    joblib.dump(pipeline, tmp_path / "loans.joblib")
    loans.assign(outcome=_outcome(loans)).to_csv(tmp_path / "train.csv", index=False)
    done = mlfn(
        monkeypatch, app, "convert", str(tmp_path / "loans.joblib"), "--to", "models/loans.onnx",
        "--sample", str(tmp_path / "train.csv"),
    )  # fmt: skip
    assert done.exit_code == 0, (done.output, done.exc_info)
    assert f"{len(loans)} sample rows answered by both models" in done.stdout
    name = f"loans{uuid.uuid4().hex[:8]}"
    made = mlfn(
        monkeypatch, app, "new", name, "--model", "models/loans.onnx", "--template", "classifier"
    )
    assert made.exit_code == 0, (made.output, made.exc_info)
    text = (app / "functions" / name / "endpoint.py").read_text()
    assert "from typing import Literal\n" in text
    assert "    age: int\n" in text
    assert '    annual_income: float = Field(alias="annual income")\n' in text
    assert '    city: Literal["oslo", "paris", "rome"]\n' in text
    assert "    size: str\n" in text  # the ordinal encoder takes unknown sizes
    env = app_env(azurite.connection_string, container, tmp_path, MLFN_HOST_BLOB_SCAN_S="0.2")
    host = LocalHost(app, env).start()
    inbox = ContainerClient.from_connection_string(azurite.connection_string, f"{name}-batch")
    try:
        wait_for(inbox.exists, 30, f"container {name}-batch")
        yield host, name
    finally:
        host.stop()


def _v2_request(rows: pd.DataFrame) -> dict[str, Any]:
    """An Open Inference Protocol request: each column a [batch, 1] tensor under its name."""
    datatypes = {"age": "FP64", "annual income": "FP64", "city": "BYTES", "size": "BYTES"}
    return {
        "inputs": [
            {
                "name": column,
                "datatype": datatype,
                "shape": [len(rows), 1],
                "data": rows[column].tolist(),
            }
            for column, datatype in datatypes.items()
        ]
    }


def test_a_dataframe_pipeline_served_by_column_name_answers_what_scikit_learn_answers(
    served_app: tuple[LocalHost, str],
    pipeline: Pipeline,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host, name = served_app
    rows = _loans(60, seed=1)  # rows the pipeline was not fitted on
    classes = [str(c) for c in pipeline.classes_]
    expected_labels = list(pipeline.predict(rows))
    expected_probabilities = pipeline.predict_proba(rows)

    with host.client() as http:
        answer = http.post(
            f"/api/{name}/predict", json={"instances": rows.to_dict(orient="records")}
        )
        assert answer.status_code == 200, answer.text + host.output()
        predictions = answer.json()["predictions"]
        unknown = http.post(
            f"/api/{name}/predict",
            json={"instances": [{**rows.head(1).to_dict(orient="records")[0], "city": "tokyo"}]},
        )
        metadata = http.get(f"/api/v2/models/{name}")
        inferred = http.post(f"/api/v2/models/{name}/infer", json=_v2_request(rows))
    assert [p["label"] for p in predictions] == expected_labels
    got = np.array([[p["probabilities"][c] for c in classes] for p in predictions])
    np.testing.assert_allclose(got, expected_probabilities, atol=1e-6)
    assert len(set(expected_labels)) == 2  # both classes reached
    assert unknown.status_code == 422, unknown.text
    assert "city" in unknown.text and "'oslo', 'paris' or 'rome'" in unknown.text

    # The Open Inference Protocol: the model's own inputs, a [batch, 1] tensor per column,
    # named as the DataFrame names them; the string columns as BYTES.
    assert metadata.status_code == 200, metadata.text
    assert metadata.json()["inputs"] == [
        {"name": "age", "datatype": "FP64", "shape": [-1, 1]},
        {"name": "annual income", "datatype": "FP64", "shape": [-1, 1]},
        {"name": "city", "datatype": "BYTES", "shape": [-1, 1]},
        {"name": "size", "datatype": "BYTES", "shape": [-1, 1]},
    ]
    assert inferred.status_code == 200, inferred.text + host.output()
    outputs = {o["name"]: o for o in inferred.json()["outputs"]}
    assert (outputs["label"]["datatype"], outputs["label"]["shape"]) == ("BYTES", [len(rows)])
    assert outputs["label"]["data"] == expected_labels
    assert outputs["probabilities"]["shape"] == [len(rows), len(classes)]
    got = np.array(outputs["probabilities"]["data"]).reshape(len(rows), len(classes))
    np.testing.assert_allclose(got, expected_probabilities, atol=1e-6)

    rows.to_csv(tmp_path / "applicants.csv", index=False)  # the DataFrame's own CSV
    monkeypatch.chdir(host.app_dir)
    for key, value in host.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(config, "_current", None)
    for module in [m for m in sys.modules if m == "functions" or m.startswith("functions.")]:
        del sys.modules[module]
    out = tmp_path / "scored.csv"
    done = CliRunner().invoke(
        main, ["batch", name, str(tmp_path / "applicants.csv"), "--wait", "120", "--out", str(out)]
    )
    assert done.exit_code == 0, (done.output, done.exc_info)
    assert f"{len(rows)} rows, 0 errors" in done.stdout
    scored = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["error"] for r in scored] == [""] * len(rows)
    assert [r["label"] for r in scored] == expected_labels
    got = np.array([[json.loads(r["probabilities"])[c] for c in classes] for r in scored])
    np.testing.assert_allclose(got, expected_probabilities, atol=1e-6)


def test_the_tensor_template_takes_the_columns_and_its_printed_sample_is_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pipeline: Pipeline, loans: pd.DataFrame
) -> None:
    app = make_app(tmp_path / "app", {})
    to_onnx(pipeline, app / "models" / "loans.onnx", loans)
    made = mlfn(monkeypatch, app, "new", "raw", "--model", "models/loans.onnx")
    assert made.exit_code == 0, (made.output, made.exc_info)
    line = next(w for w in made.stdout.splitlines() if w.strip().startswith("curl"))
    words = shlex.split(line)
    sample = json.loads(words[words.index("-d") + 1])
    assert sample == {"instances": [{"age": 0, "annual income": 0.0, "city": "oslo", "size": "L"}]}
    (answer,) = served(app, tmp_path, [("raw", sample)])
    (prediction,) = answer.json()["predictions"]
    expected = pipeline.predict(pd.DataFrame(sample["instances"]))
    assert prediction["label"] == expected[0]  # the tensor template: the label output


@pytest.mark.parametrize(
    ("columns", "declared"),
    [
        (  # two Python names alike: distinct fields
            {"a b": [1.0, 2.0, 3.0, 4.0], "a_b": [0.5, 0.1, 0.9, 0.2]},
            '    a_b: Float32 = Field(alias="a b")\n    a_b_2: Float32 = Field(alias="a_b")\n',
        ),
        (  # Python reads identifiers in NFKC form: "µm" (the micro sign) is named "μm"
            {"µm": [1.0, 2.0, 3.0, 4.0], "\ufb01eld": [0.5, 0.1, 0.9, 0.2],
             "field": [3.0, 1.0, 0.0, 2.0]},
            '    \u03bcm: Float32 = Field(alias="\\u00b5m")\n'
            '    field: Float32 = Field(alias="\\ufb01eld")\n'
            '    field_2: Float32 = Field(alias="field")\n',
        ),
    ],
    ids=["collide", "nfkc"],
)  # fmt: skip
def test_columns_whose_python_names_differ_keep_their_own_as_aliases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, columns: dict[str, Any], declared: str
) -> None:
    # nfkc: a field written "µm" is named "μm", so the column's own name found no field (422
    # "Field required") and the generated predict's "µm" no column (500 KeyError).
    frame = pd.DataFrame(columns)
    model = LinearRegression().fit(frame, [1.0, 2.0, 3.0, 4.0])
    app = make_app(tmp_path / "app", {})
    to_onnx(model, app / "models" / "named.onnx", frame)
    _, text = new_endpoint(monkeypatch, app, "named", "models/named.onnx", "regressor")
    assert declared in text
    row = {name: values[1] for name, values in columns.items()}
    (answer,) = served(app, tmp_path, [("named", {"instances": [row]})])
    expected = model.predict(pd.DataFrame({k: [v] for k, v in row.items()}))
    np.testing.assert_allclose(answer.json()["predictions"][0]["prediction"], expected, rtol=1e-5)


def test_mlfn_new_says_when_a_column_is_named_like_what_scoring_adds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loans: pd.DataFrame
) -> None:
    # Spark scoring refuses a DataFrame with a column named like an output or 'error', which
    # nothing had said when the endpoint was made (a new user's trial).
    frame = loans[["age"]].assign(error=loans["annual income"], Label=loans["age"] % 7)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(frame, _outcome(loans))
    app = make_app(tmp_path / "app", {})
    to_onnx(model, app / "models" / "clash.onnx", frame)
    made, _ = new_endpoint(monkeypatch, app, "clash", "models/clash.onnx", "classifier")
    assert "note: input column(s) 'Label', 'error' are named like what scoring adds" in (
        made.output
    )


NUMBERS = ["age", "annual income"]


@pytest.mark.parametrize(
    ("model", "columns"),
    [
        (
            make_pipeline(
                ColumnTransformer([("numbers", StandardScaler(), NUMBERS)]), LogisticRegression()
            ),
            NUMBERS,
        ),
        (LogisticRegression(), NUMBERS),  # one matrix in: the columns are joined before it
        (
            make_pipeline(OneHotEncoder(handle_unknown="ignore"), LogisticRegression()),
            ["city", "size"],
        ),
    ],
    ids=["one-part-column-transformer", "bare-estimator", "encoder-first"],
)
def test_every_way_of_reading_the_columns_converts(
    tmp_path: Path, loans: pd.DataFrame, model: Any, columns: list[str]
) -> None:
    frame = loans[columns]
    model.fit(frame, _outcome(loans))
    done = to_onnx(model, tmp_path / "m.onnx", frame)
    assert done.rows == len(frame)
    assert [i.name for i in onnx.load(tmp_path / "m.onnx").graph.input] == columns


def test_a_model_whose_encoder_refuses_unknown_categories_warms_up(
    tmp_path: Path, pipeline: Pipeline, loans: pd.DataFrame
) -> None:
    # Warm-up fed "" to every text input, which the encoder refuses: it never ran, and
    # onnxruntime logged an error at every load.
    from runtime.models.onnx_model import OnnxModel

    to_onnx(pipeline, tmp_path / "loans.onnx", loans)
    model = OnnxModel.load("loans", tmp_path / "loans.onnx", sha256="x", version="1")
    assert model.warm_up()


APP_MODULES = ("function_app", "functions")


def test_values_the_pipeline_imputes_may_be_left_out_over_http_and_in_files(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    loans: pd.DataFrame,
    azurite: AzuriteInfo,
    container: str,
    isolated_imports: None,
) -> None:
    """A SimpleImputer reads a number and a string first: a row may leave them out (JSON null,
    no key, an empty CSV cell, a Parquet null) and gets what the pipeline predicts for NaN
    there; a number read by anything else is still required."""
    holes = loans[["age", "annual income", "city"]].copy()
    holes.loc[::5, "annual income"] = np.nan
    holes.loc[::7, "city"] = np.nan
    target = 3 * loans["age"] - loans["annual income"].fillna(50.0)
    prep = ColumnTransformer(
        [
            ("imputed", make_pipeline(SimpleImputer(), StandardScaler()), ["annual income"]),
            ("scaled", StandardScaler(), ["age"]),  # NaN would reach the scaler: required
            (
                "city",
                make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder()),
                ["city"],
            ),
        ]
    )
    joblib.dump(make_pipeline(prep, LinearRegression()).fit(holes, target), tmp_path / "r.joblib")
    model = joblib.load(tmp_path / "r.joblib")
    app = make_app(tmp_path / "app", {})
    holes.to_csv(tmp_path / "train.csv", index=False)
    done = mlfn(
        monkeypatch, app, "convert", str(tmp_path / "r.joblib"), "--to", "models/r.onnx",
        "--sample", str(tmp_path / "train.csv"),
    )  # fmt: skip
    assert done.exit_code == 0, (done.output, done.exc_info)
    columns = json.loads(_metadata(app / "models/r.onnx")["mlfn.columns"])
    assert [(c.get("optional"), c.get("missing")) for c in columns] == [
        (None, None), (True, None), (True, "<mlfn:missing>"),
    ]  # fmt: skip
    made = mlfn(
        monkeypatch, app, "new", "spend", "--model", "models/r.onnx", "--template", "regressor"
    )
    assert made.exit_code == 0, (made.output, made.exc_info)
    text = (app / "functions" / "spend" / "endpoint.py").read_text()
    assert "    age: int\n" in text  # an int column the scaler reads: required
    assert (
        '    annual_income: Float32 | None = Field(default=None, alias="annual income")\n' in text
    )
    assert '    city: Literal["oslo", "paris", "rome"] | None = None\n' in text

    rows = pd.DataFrame(
        {"age": [30, 41, 52, 63], "annual income": [48.5, np.nan, np.nan, 61.0],
         "city": ["oslo", "rome", np.nan, np.nan]}
    )  # fmt: skip
    expected = model.predict(rows)
    instances: list[dict[str, Any]] = [
        {"age": 30, "annual income": 48.5, "city": "oslo"},
        {"age": 41, "annual income": None, "city": "rome"},  # JSON null
        {"age": 52},  # left out
        {"age": 63, "annual income": 61.0, "city": None},
    ]
    env = app_env(azurite.connection_string, container, tmp_path, MLFN_HOST_BLOB_SCAN_S="0.2")
    host = LocalHost(app, env).start()
    inbox = ContainerClient.from_connection_string(azurite.connection_string, "spend-batch")
    try:
        wait_for(inbox.exists, 30, "container spend-batch")
        with host.client() as http:
            answer = http.post("/api/spend/predict", json={"instances": instances})
            no_age = http.post("/api/spend/predict", json={"instances": [{"city": "oslo"}]})
        assert answer.status_code == 200, answer.text + host.output()
        got = [p["prediction"] for p in answer.json()["predictions"]]
        np.testing.assert_allclose(got, expected, rtol=1e-4)
        assert no_age.status_code == 422 and "age" in no_age.text

        rows.to_csv(tmp_path / "people.csv")  # pandas' index, and empty cells for NaN
        rows.to_parquet(tmp_path / "people.parquet")  # nulls for NaN
        rows.drop(columns="city").to_csv(tmp_path / "people.nocity")  # every city imputed
        monkeypatch.chdir(host.app_dir)
        for key, value in host.env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setattr(config, "_current", None)
        for fmt in ("csv", "parquet", "nocity"):
            for module in [m for m in sys.modules if m.partition(".")[0] in APP_MODULES]:
                del sys.modules[module]  # each command indexes the app anew
            out = tmp_path / f"scored.{fmt}"
            done = CliRunner().invoke(
                main,
                [
                    "batch",
                    "spend",
                    str(tmp_path / f"people.{fmt}"),
                    *(["--path", "people-nocity.csv"] if fmt == "nocity" else []),
                    "--wait",
                    "120",
                    "--out",
                    str(out),
                ],
            )
            assert done.exit_code == 0, (fmt, done.output, done.exc_info, host.output())
        assert "warning: people.nocity has no column for city: every row took the default" in (
            done.stderr
        )
    finally:
        host.stop()
    scored = list(csv.DictReader(io.StringIO((tmp_path / "scored.csv").read_text())))
    assert [r["error"] for r in scored] == [""] * len(rows)
    np.testing.assert_allclose([float(r["prediction"]) for r in scored], expected, rtol=1e-4)
    table = pd.read_parquet(tmp_path / "scored.parquet")
    assert table["error"].isna().all()
    np.testing.assert_allclose(table["prediction"], expected, rtol=1e-4)


def test_a_column_another_step_reads_as_well_stays_required_and_the_proof_tries_missing_values(
    tmp_path: Path, loans: pd.DataFrame
) -> None:
    """The scaler reads "annual income" too: NaN would reach it (scikit-learn refuses such a
    row, the converted model answered null), so only "age", imputed wherever it is read, may
    be left out; the proof answers copies of rows with it missing."""
    holes = loans[["age", "annual income"]].astype(float)
    holes.loc[::5, ["age", "annual income"]] = np.nan
    prep = ColumnTransformer(
        [
            ("imputed", SimpleImputer(), ["age", "annual income"]),
            ("scaled", StandardScaler(), ["annual income"]),
        ]
    )
    model = make_pipeline(prep, LogisticRegression()).fit(holes.fillna(40.0), _outcome(loans))
    done = to_onnx(model, tmp_path / "m.onnx", holes.fillna({"annual income": 50.0}))
    columns = json.loads(_metadata(tmp_path / "m.onnx")["mlfn.columns"])
    assert [c.get("optional") for c in columns] == [True, None]
    assert (done.rows, done.missing_rows) == (len(loans), 8)


def _cities_with_holes(loans: pd.DataFrame, hole: Any) -> pd.DataFrame:
    frame = loans[["age", "city"]].astype({"city": object})
    frame.loc[::6, "city"] = hole
    return frame


def _city_pipeline(frame: pd.DataFrame, loans: pd.DataFrame, encoder: Any) -> Pipeline:
    prep = ColumnTransformer(
        [
            ("age", StandardScaler(), ["age"]),
            ("city", make_pipeline(SimpleImputer(strategy="most_frequent"), encoder), ["city"]),
        ]
    )
    return make_pipeline(prep, LogisticRegression()).fit(frame, _outcome(loans))


def test_an_empty_string_is_a_category_as_scikit_learn_takes_it_not_a_missing_value(
    tmp_path: Path, loans: pd.DataFrame
) -> None:
    """A missing city is fed as a text no one names: "" (a category of its own here, or one
    never seen) is answered as scikit-learn answers it, not imputed."""
    import onnxruntime as ort

    frame = _cities_with_holes(loans, np.nan)
    frame.loc[1::6, "city"] = ""  # a category the model learns
    model = _city_pipeline(frame, loans, OneHotEncoder(handle_unknown="ignore"))
    done = to_onnx(model, tmp_path / "m.onnx", frame)
    assert done.missing_rows == 8
    rows = pd.DataFrame({"age": [30, 41, 52, 63], "city": ["", "oslo", np.nan, "tokyo"]})
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    feeds = {
        "age": rows[["age"]].to_numpy(np.float32),
        "city": rows[["city"]].fillna("<mlfn:missing>").to_numpy(object),
    }
    np.testing.assert_allclose(
        session.run(["probabilities"], feeds)[0], model.predict_proba(rows), atol=1e-5
    )


def test_a_city_fitted_with_none_as_a_category_is_refused_saying_why(
    tmp_path: Path, loans: pd.DataFrame
) -> None:
    frame = _cities_with_holes(loans, None)  # from records or SQL: None, which pandas keeps
    model = _city_pipeline(frame, loans, OneHotEncoder(handle_unknown="ignore"))
    with pytest.raises(ConversionError, match="column 'city' held None when the model was fitted"):
        to_onnx(model, tmp_path / "m.onnx", frame)


def test_a_categorical_dtype_sample_converts(tmp_path: Path, loans: pd.DataFrame) -> None:
    frame = _cities_with_holes(loans, np.nan)
    model = _city_pipeline(frame, loans, OneHotEncoder(handle_unknown="ignore"))
    sample = frame.astype({"city": "category"})  # as read_parquet gives it back
    assert to_onnx(model, tmp_path / "m.onnx", sample).missing_rows == 8


def test_a_column_taken_as_optional_that_the_model_refuses_missing_stays_required(
    tmp_path: Path, loans: pd.DataFrame
) -> None:
    """An identity FunctionTransformer that validates its input refuses NaN: its columns are
    not passed on as they are, and were they taken as optional, the missing rows the proof
    adds fail the original: then no column is optional, and the model still converts."""
    from sklearn.preprocessing import FunctionTransformer

    from runtime.convert import sklearn_columns

    numbers = loans[["age", "annual income"]].astype(float)
    prep = ColumnTransformer(
        [("kept", FunctionTransformer(validate=True), ["age", "annual income"])]
    )
    model = make_pipeline(prep, LinearRegression()).fit(numbers, loans["age"])
    assert not sklearn_columns._passes(model.steps[0][1].transformers_[0][1])

    real = sklearn_columns._imputed
    sklearn_columns._imputed = lambda model, names: set(names)  # a rule taken wrongly
    try:
        done = to_onnx(model, tmp_path / "m.onnx", numbers)
    finally:
        sklearn_columns._imputed = real
    columns = json.loads(_metadata(tmp_path / "m.onnx")["mlfn.columns"])
    assert done.missing_rows == 0 and [c.get("optional") for c in columns] == [None, None]


def test_a_category_the_encoder_refuses_is_refused_by_the_run_naming_the_input(
    tmp_path: Path, loans: pd.DataFrame
) -> None:
    # An ONNX OrdinalEncoder encodes an unknown value as something (V2 scored it, where
    # scikit-learn raises), and a OneHotEncoder's error named no input: an integer category,
    # which no Literal guards, failed inside the model without its name.
    from runtime.errors import ModelInputRefused
    from runtime.models.onnx_model import OnnxModel

    frame = loans[["age", "city"]].assign(zone=loans["age"] % 3 * 10)  # 0, 10, 20
    prep = ColumnTransformer(
        [
            ("zone", OrdinalEncoder(handle_unknown="error"), ["zone"]),
            ("city", OneHotEncoder(handle_unknown="error"), ["city"]),
            ("age", StandardScaler(), ["age"]),
        ]
    )
    fitted = make_pipeline(prep, LogisticRegression()).fit(frame, _outcome(loans))
    to_onnx(fitted, tmp_path / "zones.onnx", frame)
    model = OnnxModel.load("zones", tmp_path / "zones.onnx", sha256="x", version="1")
    good = {"age": [[30], [40]], "zone": [[10], [20]], "city": [["oslo"], ["rome"]]}
    np.testing.assert_allclose(
        model.run(good)["probabilities"],
        fitted.predict_proba(pd.DataFrame({k: [r[0] for r in v] for k, v in good.items()})),
        rtol=1e-5,
    )
    for name, bad in (("zone", [[10], [30]]), ("city", [["oslo"], ["lima"]])):
        with pytest.raises(ValueError):  # scikit-learn refuses the same row
            fitted.predict(
                pd.DataFrame({k: [r[0] for r in v] for k, v in {**good, name: bad}.items()})
            )
        with pytest.raises(ModelInputRefused) as refused:
            model.run({**good, name: bad})
        unknown = bad[1][0]
        assert f"input {name!r}: {unknown!r} is not a category the model was fitted on" in (
            refused.value.message
        )
    # NaN where no imputer takes it (V2's binary floats) is refused by name too, not with
    # onnxruntime's "Unknown Category" naming no input.
    with pytest.raises(ModelInputRefused, match="input 'zone': nan is not a category"):
        model.run({**good, "zone": [[10], [float("nan")]]})


def test_a_bool_column_is_a_bool_field_that_takes_what_pandas_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loans: pd.DataFrame
) -> None:
    # A bool column was an int field: the DataFrame's own to_csv() writes True and False,
    # which an int refuses, so every row of the file failed.
    import pyarrow as pa

    from runtime.columnar.schema import compile_model
    from runtime.columnar.validate import validate

    frame = loans[["age"]].assign(member=loans["age"] % 2 == 0)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(frame, _outcome(loans))
    app = make_app(tmp_path / "app", {})
    to_onnx(model, app / "models" / "members.onnx", frame)
    columns = json.loads(_metadata(app / "models" / "members.onnx")["mlfn.columns"])
    assert columns == [{"name": "age", "type": "int"}, {"name": "member", "type": "bool"}]
    _, text = new_endpoint(monkeypatch, app, "members", "models/members.onnx", "classifier")
    assert "    member: bool\n" in text

    text = frame.head(4).to_csv(index=False).splitlines()  # age,member / 62,True ...
    cells = [line.split(",") for line in text[1:]]
    spec = importlib.util.spec_from_file_location("members", app / "functions/members/endpoint.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    given = {"age": pa.array([c[0] for c in cells]), "member": pa.array([c[1] for c in cells])}
    checked = validate(compile_model(module.Input), given, 4, lambda rows: [])
    assert not checked.errors and checked.columns["member"].tolist() == frame["member"][:4].tolist()

    rows = frame.head(6)
    (answer,) = served(app, tmp_path, [("members", {"instances": rows.to_dict(orient="records")})])
    assert answer.status_code == 200, answer.text
    got = [p["label"] for p in answer.json()["predictions"]]
    assert got == model.predict(rows).tolist()


def test_a_value_an_imputer_replaces_before_a_closed_encoder_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loans: pd.DataFrame
) -> None:
    # The encoder's categories come after the imputer: its sentinel (-1, "?") is never one
    # of them, yet scikit-learn takes it; the run refused it, and the Literal would have.
    from runtime.models.onnx_model import OnnxModel

    frame = loans[["city"]].assign(code=(loans["age"] % 3).astype(float))
    frame.loc[::5, "code"] = -1.0
    frame.loc[::4, "city"] = "?"
    prep = ColumnTransformer(
        [
            (
                "code",
                make_pipeline(
                    SimpleImputer(missing_values=-1.0, strategy="most_frequent"),
                    OneHotEncoder(handle_unknown="error"),
                ),
                ["code"],
            ),
            (
                "city",
                make_pipeline(
                    SimpleImputer(missing_values="?", strategy="most_frequent"),
                    OneHotEncoder(handle_unknown="error"),
                ),
                ["city"],
            ),
        ]
    )
    fitted = make_pipeline(prep, LogisticRegression()).fit(frame, _outcome(loans))
    app = make_app(tmp_path / "app", {})
    to_onnx(fitted, app / "models" / "sentinel.onnx", frame)
    columns = json.loads(_metadata(app / "models" / "sentinel.onnx")["mlfn.columns"])
    assert [c["replaced"] for c in columns] == [["?"], [-1]]
    model = OnnxModel.load("sentinel", app / "models" / "sentinel.onnx", sha256="x", version="1")
    rows = pd.DataFrame({"city": ["?", "oslo"], "code": [-1.0, 2.0]})
    got = model.run({k: rows[k].to_numpy().reshape(-1, 1) for k in rows})["probabilities"]
    np.testing.assert_allclose(got, fitted.predict_proba(rows), rtol=1e-5)
    with pytest.raises(Exception, match="is not a category the model was fitted on"):
        model.run({"city": [["?"]], "code": [[7.0]]})  # an unknown one is still refused
    _, text = new_endpoint(monkeypatch, app, "sentinel", "models/sentinel.onnx", "classifier")
    assert '    city: Literal["oslo", "paris", "rome", "?"]\n' in text

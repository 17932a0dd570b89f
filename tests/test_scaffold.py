"""Scaffolds are code: `mlfn new` renders an endpoint that `mlfn serve` serves unedited."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from click.testing import CliRunner, Result
from mypy import api as mypy_api
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from runtime.cli import main
from runtime.columnar.schema import compile_model
from runtime.config import Settings
from runtime.convert import to_onnx
from runtime.errors import NotCompiled
from runtime.scaffold import render_endpoint
from tests.conftest import AzuriteInfo
from tests.models.onnx_builders import fixed_batch, mlp, multi_io, strings
from tests.models.sklearn_builders import iris_zipmap, sparse_int_labels, string_labels, two_targets
from tests.support import ROOT, LocalHost, make_app

SPECIES = ["setosa", "versicolor", "virginica"]


def _new(monkeypatch: pytest.MonkeyPatch, app: Path, *args: str) -> Result:
    """``mlfn new ARGS`` typed in the app folder, run in this process."""
    monkeypatch.chdir(app)
    return CliRunner().invoke(main, ["new", *args])


def _answers(app: Path, tmp_path: Path, calls: list[tuple[str, Any]]) -> list[httpx.Response]:
    """POST each (NAME, body) to ``/api/NAME/predict`` of the app served by a local host."""
    server = LocalHost(app, {"MLFN_CACHE_DIR": str(tmp_path / "cache")}, ("--no-queues",)).start()
    try:
        with server.client() as http:
            return [http.post(f"/api/{name}/predict", json=body) for name, body in calls]
    finally:
        server.stop()


def _served(app: Path, tmp_path: Path, calls: list[tuple[str, Any]]) -> list[httpx.Response]:
    """``_answers``, each of them a 200."""
    answers = _answers(app, tmp_path, calls)
    for answer in answers:
        assert answer.status_code == 200, answer.text
    return answers


def _run(model: Path, rows: list[list[float]]) -> list[Any]:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: np.array(rows, dtype=np.float32)})


def _printed_body(stdout: str, command: str) -> Any:
    """The JSON body of the ``curl`` or ``mlfn enqueue`` line ``mlfn new`` printed."""
    line = next(line for line in stdout.splitlines() if line.strip().startswith(command))
    words = shlex.split(line)
    return json.loads(words[words.index("-d" if command == "curl" else "--data") + 1])


def _clean_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    """The environment of a fresh shell: no mlfn settings or storage account but ``env``."""
    for key in list(os.environ):
        if key.startswith(("MLFN_", "AzureWebJobs")):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def test_new_endpoint_from_a_local_model_is_served_and_matches_onnxruntime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(tmp_path / "app", {})
    model = multi_io(app / "multi.onnx")
    done = _new(monkeypatch, app, "tensors", "--model", "multi.onnx")
    assert done.exit_code == 0, (done.output, done.exc_info)
    assert done.stdout.startswith(f"created {Path('functions', 'tensors', 'endpoint.py')}\n")
    source = (app / "functions" / "tensors" / "endpoint.py").read_text()
    assert 'Model("./multi.onnx")' in source
    assert (
        'features_0: Annotated[list[Annotated[list[Float32], Field(min_length=2, max_length=2)]], Field(min_length=2, max_length=2)] = Field(alias="features:0")'
        in source
    )
    assert "count: int" in source and "mask: Annotated[list[bool]" in source
    compile(source, "endpoint.py", "exec")

    rows = [
        {"features:0": [[1.5, 2.0], [3.0, -4.0]], "count": 7, "mask": [True, False]},
        {"features:0": [[0.0, 0.5], [1.0, 1.0]], "count": -1, "mask": [False, False]},
    ]
    server = LocalHost(app, {"MLFN_CACHE_DIR": str(tmp_path / "cache")}, ("--no-queues",)).start()
    try:
        with server.client() as http:
            ok = http.post("/api/tensors/predict", json={"instances": rows})
            bad = http.post(
                "/api/tensors/predict", json={"instances": [{**rows[0], "mask": [True]}]}
            )
            nan = {**rows[0], "features:0": [["NaN", 2.0], [3.0, 4.0]]}
            non_finite = http.post("/api/tensors/predict", json={"instances": [nan]})
            # Finite, but no float32: the model would get infinity (and answer nonsense).
            huge = {**rows[0], "features:0": [[1.5, 2.0], [3.0, 1e308]]}
            too_big = http.post("/api/tensors/predict", json={"instances": [huge]})
    finally:
        server.stop()
    assert non_finite.status_code == 422  # the generated input model refuses NaN
    assert non_finite.json()["error"]["detail"][0]["field"] == "instances[0].features:0[0][0]"
    assert too_big.status_code == 422, too_big.text
    assert too_big.json()["error"]["detail"][0]["field"] == "instances[0].features:0[1][1]"
    assert ok.status_code == 200, ok.text + server.output()
    feeds = {
        "features:0": np.array([r["features:0"] for r in rows], dtype=np.float32),
        "count": np.array([r["count"] for r in rows], dtype=np.int64),
        "mask": np.array([r["mask"] for r in rows], dtype=bool),
    }
    doubled, nxt, not_mask = ort.InferenceSession(str(model)).run(
        ["doubled", "next", "not_mask"], feeds
    )
    assert ok.json()["predictions"] == [
        {"doubled": doubled[i].tolist(), "next": int(nxt[i]), "not_mask": not_mask[i].tolist()}
        for i in range(2)
    ]
    assert bad.status_code == 422
    assert bad.json()["error"]["detail"][0]["field"] == "instances[0].mask"


def test_new_endpoint_from_a_store_uri_references_it_verbatim(
    tmp_path: Path, azurite: AzuriteInfo, models_in_blob: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(tmp_path / "app", {})
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    monkeypatch.setenv("MLFN_CACHE_DIR", str(tmp_path / "cache"))
    done = _new(monkeypatch, app, "flowers", "--model", f"az://{models_in_blob}/iris.onnx")
    assert done.exit_code == 0, (done.output, done.exc_info)
    source = (app / "functions" / "flowers" / "endpoint.py").read_text()
    assert f'Model("az://{models_in_blob}/iris.onnx")' in source
    assert "fetching iris.onnx" in done.stderr  # downloads run from the CLI show progress
    assert "input: Annotated[list[Float32], Field(min_length=4, max_length=4)]" in source
    assert "from runtime import Columns, Endpoint, Float32, Limits, Model, OnnxModel\n" in source
    assert (
        "label: int" in source
        and "probabilities: Annotated[list[float], Field(min_length=3, max_length=3)]" in source
    )


@pytest.fixture(scope="module")
def refused_models(
    tmp_path_factory: pytest.TempPathFactory, example_models: dict[str, Path]
) -> Path:
    """Models ``mlfn new`` refuses for one template or another, built once."""
    folder = tmp_path_factory.mktemp("refused")
    multi_io(folder / "m.onnx")
    fixed_batch(folder / "fixed.onnx")
    shutil.copy(example_models["iris"], folder / "iris.onnx")
    iris_zipmap(folder / "zip.onnx")
    iris_zipmap(folder / "badmeta.onnx", {"classes": "setosa,versicolor,virginica"})
    return folder


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["Bad-Name", "--model", "m.onnx"], "must match"),
        (["x", "--model", "m.onnx"], "2-40 characters"),
        (["9lives", "--model", "m.onnx"], "starting with a letter"),
        (["ab_", "--model", "m.onnx"], "'ab--requests'"),  # its queue names hold "--"
        (["a__b", "--model", "m.onnx"], "single hyphens"),
        (["fixed", "--model", "fixed.onnx"], "fixed batch dimension of 8"),
        (["nofile", "--model", "./absent.onnx"], "does not exist"),
        (["typo", "--model", "models/nope.onnx"], "models/nope.onnx does not exist: give"),
        (["zipped", "--model", "zip.onnx"], "--template classifier"),
        (["notcls", "--model", "m.onnx", "--template", "classifier"], "label output"),
        (["notreg", "--model", "iris.onnx", "--template", "regressor"], "looks like a classifier"),
        (["named", "--model", "m.onnx", "--labels", "a,b"], "--template classifier"),
        (
            ["short", "--model", "iris.onnx", "--template", "classifier", "--labels", "a,b"],
            "2 class names from --labels; the model has 3 classes",
        ),
        (
            ["twice", "--model", "iris.onnx", "--template", "classifier", "--labels", "a,b,a"],
            "class names from --labels repeat: 'a'",
        ),
        (
            ["badmeta", "--model", "badmeta.onnx", "--template", "classifier"],
            "metadata_props 'classes' must be a JSON list",
        ),
    ],
)
def test_new_refuses_what_it_cannot_serve_with_a_clear_message(
    tmp_path: Path,
    args: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    refused_models: Path,
) -> None:
    app = make_app(tmp_path / "app", {})
    shutil.copytree(refused_models, app, dirs_exist_ok=True)
    _clean_env(monkeypatch, MLFN_CACHE_DIR=str(tmp_path / "c"))
    done = _new(monkeypatch, app, *args)
    assert done.exit_code == 1, (done.output, done.exc_info)
    assert isinstance(done.exception, SystemExit), done.exc_info  # a message, not a crash
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not (app / "functions" / args[0]).exists()


def test_a_mistyped_local_path_with_a_store_set_says_where_it_was_looked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bare path is looked up in MLFN_MODEL_STORE: the typo of a local file was told as
    # "model az://models/models/x.onnx does not exist in its store", naming no local file.
    app = make_app(tmp_path / "app", {})
    (tmp_path / "store").mkdir()
    _clean_env(
        monkeypatch, MLFN_CACHE_DIR=str(tmp_path / "c"), MLFN_MODEL_STORE=str(tmp_path / "store")
    )
    done = _new(monkeypatch, app, "typo", "--model", "models/nope.onnx")
    assert done.exit_code == 1 and "Traceback" not in done.stderr, (done.output, done.exc_info)
    assert f"models/nope.onnx is no file here ({app / 'models' / 'nope.onnx'})" in done.stderr
    assert f"looked up in MLFN_MODEL_STORE ({tmp_path / 'store'})" in done.stderr


def test_new_refuses_to_overwrite_an_existing_endpoint_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(tmp_path / "app", {"taken": "# mine\n"})
    multi_io(app / "m.onnx")
    before = sorted(p.relative_to(app) for p in app.rglob("*"))
    done = _new(monkeypatch, app, "taken", "--model", "m.onnx")
    assert done.exit_code == 1, (done.output, done.exc_info)
    assert "functions/taken already exists; mlfn new does not overwrite" in done.stderr
    assert (app / "functions" / "taken" / "endpoint.py").read_text() == "# mine\n"
    assert sorted(p.relative_to(app) for p in app.rglob("*")) == before


def test_classifier_endpoints_name_their_classes_and_answer_what_onnxruntime_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, example_models: dict[str, Path]
) -> None:
    app = make_app(tmp_path / "app", {})
    models = {
        "flowers": shutil.copy(example_models["iris"], app / "iris.onnx"),
        "zipped": iris_zipmap(app / "zip.onnx", {"mlfn.classes": json.dumps(SPECIES)}),
        "pets": string_labels(app / "pets.onnx"),
        "sparse": sparse_int_labels(app / "sparse.onnx"),
    }
    made = {
        name: _new(monkeypatch, app, name, "--model", model.name, "--template", "classifier")
        for name, model in models.items()
        if name != "flowers"
    }
    made["flowers"] = _new(
        monkeypatch, app, "flowers", "--model", "iris.onnx", "--template", "classifier",
        "--labels", ",".join(SPECIES),
    )  # fmt: skip
    for done in made.values():
        assert done.exit_code == 0, (done.output, done.exc_info)
        assert "hint:" not in done.stdout
    source = {n: (app / "functions" / n / "endpoint.py").read_text() for n in models}
    assert '0: "setosa",' in source["flowers"] and "come from --labels." in source["flowers"]
    assert '0: "setosa",' in source["zipped"] and "metadata (mlfn.classes)." in source["zipped"]
    assert '"cat": "cat",' in source["pets"] and "own labels." in source["pets"]
    assert '9: "9",' in source["sparse"] and "names none of its classes" in source["sparse"]
    assert "allow_inf_nan=False" in source["pets"]
    assert "classes from the model's metadata (mlfn.classes): setosa, versicolor, virginica\n" in (
        made["zipped"].stdout
    )

    iris = load_iris().data[::25].tolist()
    pets = np.random.default_rng(5).normal(size=(6, 3)).tolist()
    sparse = np.random.default_rng(6).normal(size=(6, 2)).tolist()
    sample = _printed_body(made["flowers"].stdout, "curl")
    assert sample == _printed_body(made["flowers"].stdout, "mlfn enqueue")
    answers = _served(
        app,
        tmp_path,
        [
            ("flowers", {"instances": [{"input": r} for r in iris]}),
            ("zipped", {"instances": [{"measurements": r} for r in iris]}),
            ("pets", {"instances": [{"x": r} for r in pets]}),
            ("sparse", {"instances": [{"x": r} for r in sparse]}),
            ("flowers", sample),  # the body `mlfn new` printed is one the endpoint accepts
        ],
    )
    assert sample == {"instances": [{"input": [0.0, 0.0, 0.0, 0.0]}]}

    def classes(labels: Any, probabilities: Any, names: dict[Any, str]) -> list[Any]:
        rows = probabilities if isinstance(probabilities, list) else probabilities.tolist()
        return [
            {
                "label": names[label],
                "probabilities": {names[k]: p for k, p in row.items()}
                if isinstance(row, dict)
                else dict(zip(names.values(), row, strict=True)),
            }
            for label, row in zip(labels.tolist(), rows, strict=True)
        ]

    assert answers[0].json()["predictions"] == classes(
        *_run(models["flowers"], iris), dict(enumerate(SPECIES))
    )
    assert answers[1].json()["predictions"] == classes(
        *_run(models["zipped"], iris), dict(enumerate(SPECIES))
    )
    assert answers[2].json()["predictions"] == classes(
        *_run(models["pets"], pets), {n: n for n in ("cat", "dog", "eel")}
    )
    assert answers[3].json()["predictions"] == classes(
        *_run(models["sparse"], sparse), {n: str(n) for n in (3, 7, 9)}
    )
    assert {p["label"] for p in answers[3].json()["predictions"]} > {"7"}  # labels, not indices
    assert len(answers[4].json()["predictions"]) == 1


def test_regressor_endpoints_answer_one_field_per_target_what_onnxruntime_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, example_models: dict[str, Path]
) -> None:
    app = make_app(tmp_path / "app", {})
    diabetes = shutil.copy(example_models["diabetes"], app / "diabetes.onnx")
    pair = two_targets(app / "pair.onnx")
    for name, model in (("progression", diabetes), ("pair", pair)):
        done = _new(monkeypatch, app, name, "--model", model.name, "--template", "regressor")
        assert done.exit_code == 0, (done.output, done.exc_info)
    source = {
        n: (app / "functions" / n / "endpoint.py").read_text() for n in ("progression", "pair")
    }
    assert "    prediction: float\n" in source["progression"]
    assert "    prediction_0: float\n    prediction_1: float\n" in source["pair"]

    patients = load_diabetes(scaled=False).data[:5].tolist()
    points = np.random.default_rng(7).normal(size=(4, 3)).tolist()
    answers = _served(
        app,
        tmp_path,
        [
            ("progression", {"instances": [{"input": r} for r in patients]}),
            ("pair", {"instances": [{"x": r} for r in points]}),
        ],
    )
    (progression,) = _run(diabetes, patients)
    assert answers[0].json()["predictions"] == [
        {"prediction": v} for v in progression[:, 0].tolist()
    ]
    (values,) = _run(pair, points)
    assert answers[1].json()["predictions"] == [
        {"prediction_0": a, "prediction_1": b} for a, b in values.tolist()
    ]


def test_new_hints_at_the_classifier_template_when_the_model_looks_like_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, example_models: dict[str, Path]
) -> None:
    app = make_app(tmp_path / "app", {})
    shutil.copy(example_models["iris"], app / "iris.onnx")
    done = _new(monkeypatch, app, "flowers", "--model", "iris.onnx")
    assert done.exit_code == 0, (done.output, done.exc_info)
    assert "hint: the model looks like a classifier" in done.stdout
    assert "--template classifier" in done.stdout
    lines = [line.strip() for line in done.stdout.splitlines()]
    assert "mlfn serve" in lines
    assert any(line.startswith("mlfn results flowers") for line in lines)


def test_the_tensor_template_serves_string_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A string label a row comes back from onnxruntime as a Python str, not an array."""
    app = make_app(tmp_path / "app", {})
    model = string_labels(app / "pets.onnx")
    done = _new(monkeypatch, app, "pets", "--model", model.name)
    assert done.exit_code == 0, (done.output, done.exc_info)
    rows = np.random.default_rng(5).normal(size=(4, 3)).tolist()
    (answer,) = _served(app, tmp_path, [("pets", {"instances": [{"x": r} for r in rows]})])
    labels = [p["label"] for p in answer.json()["predictions"]]
    assert labels and all(isinstance(label, str) for label in labels)


# --- the columnar predict every template writes --------------------------------------------------

# Endpoint name -> (model file, template): every template over each kind of model it takes.
RENDERED = {
    "wide": ("wide.onnx", "tensor"),  # float [batch, 13]
    "echo": ("strings.onnx", "tensor"),  # a string [batch]: no Field, not imported
    "tensors": ("multi.onnx", "tensor"),  # [batch, 2, 2] floats, int [batch], bool [batch, 2]
    "flowers": ("iris.onnx", "classifier"),  # labels 0, 1, 2: an array of names indexed
    "zipped": ("zip.onnx", "classifier"),  # ZipMap probabilities
    "pets": ("pets.onnx", "classifier"),  # string labels: looked up by name
    "sparse": ("sparse.onnx", "classifier"),  # labels 3, 7, 9: looked up
    "progression": ("diabetes.onnx", "regressor"),
    "pair": ("pair.onnx", "regressor"),
    "loans": ("loans.onnx", "classifier"),  # named [batch, 1] columns: int, float, str
    "loanrows": ("loans.onnx", "tensor"),
    "spend": ("spend.onnx", "regressor"),
}
CITIES = ["oslo", "paris", "rome"]


def _loans(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.integers(18, 80, n),
            "annual income": rng.normal(50.0, 12.0, n).round(3),
            "city": rng.choice(CITIES, n),
        }
    )


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory, example_models: dict[str, Path]) -> Path:
    """An app holding every endpoint of RENDERED, rendered once, as `mlfn new` in the app."""
    app = make_app(tmp_path_factory.mktemp("rendered") / "app", {})
    mlp(app / "wide.onnx", (13, 8, 3))
    strings(app / "strings.onnx")
    multi_io(app / "multi.onnx")
    shutil.copy(example_models["iris"], app / "iris.onnx")
    iris_zipmap(app / "zip.onnx")
    string_labels(app / "pets.onnx")
    sparse_int_labels(app / "sparse.onnx")
    shutil.copy(example_models["diabetes"], app / "diabetes.onnx")
    two_targets(app / "pair.onnx")
    frame = _loans(120, seed=0)
    prep = ColumnTransformer(
        [
            ("numbers", StandardScaler(), ["age", "annual income"]),
            ("city", OneHotEncoder(handle_unknown="error"), ["city"]),
        ]
    )
    approved = np.where(frame["age"] / 10 + frame["annual income"] / 8 > 10.5, "yes", "no")
    to_onnx(
        make_pipeline(prep, LogisticRegression()).fit(frame, approved), app / "loans.onnx", frame
    )
    spent = 3 * frame["age"] - frame["annual income"]
    to_onnx(make_pipeline(prep, LinearRegression()).fit(frame, spent), app / "spend.onnx", frame)
    settings = Settings.from_mapping({})
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(app)
        for name, (model, template) in RENDERED.items():
            render_endpoint(name, model, app, settings, template)
    return app


def _endpoint_module(app: Path, name: str) -> ModuleType:
    """``functions/NAME/endpoint.py`` imported on its own (not into sys.modules)."""
    path = app / "functions" / name / "endpoint.py"
    spec = importlib.util.spec_from_file_location(f"rendered_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_template_writes_a_columnar_predict_whose_inputs_the_columnar_checks_compile(
    rendered: Path,
) -> None:
    widths = {"wide": 13, "flowers": 4, "zipped": 4, "pets": 3, "sparse": 2, "progression": 10,
              "pair": 3}  # fmt: skip
    columns = {"age": ("int", None), "annual_income": ("float", None), "city": ("str", None)}
    for name in RENDERED:
        module = _endpoint_module(rendered, name)
        assert module.endpoint.columns_fn is module.predict, name
        if name == "tensors":  # nested lists: the row path validates them; predict still columnar
            with pytest.raises(NotCompiled, match="features_0"):
                compile_model(module.Input)
            continue
        fields = {f.name: (f.value.kind, f.width) for f in compile_model(module.Input).fields}
        if name in widths:  # a [batch, k] float input: a 2-D float64 column
            (field,) = fields.values()
            assert field == ("float", widths[name]), name
        elif name == "echo":
            assert fields == {"text": ("str", None)}
        else:
            assert fields == columns, name
    wide = (rendered / "functions" / "wide" / "endpoint.py").read_text()
    assert "    x: Annotated[list[Float32], Field(min_length=13, max_length=13)]\n" in wide
    assert '            "x": columns["x"],\n' in wide and '        "y": out["y"],\n' in wide
    loans = (rendered / "functions" / "loans" / "endpoint.py").read_text()
    assert '            "annual income": columns["annual_income"].reshape(-1, 1),\n' in loans
    flowers = (rendered / "functions" / "flowers" / "endpoint.py").read_text()
    assert '"label": np.asarray(NAMES)[out["label"]],' in flowers
    # numpy in predict, where the model has loaded it: never at the top, where the app's
    # indexing would load it (mlfn check refuses that).
    assert "    import numpy as np  # loaded with the model, not at indexing\n" in flowers
    assert all("\nimport numpy" not in text for text in (flowers, loans, wide))


def test_an_app_of_generated_endpoints_passes_mlfn_checks_import_rule(rendered: Path) -> None:
    from runtime.deploy.check import check

    findings = [str(f) for f in check(rendered, env={}).findings]
    assert not [f for f in findings if "importing the app loads" in f], findings


def test_generated_endpoints_are_clean_for_ruff_and_strict_mypy(rendered: Path) -> None:
    files = [str(rendered / "functions" / name / "endpoint.py") for name in RENDERED]
    # E501: a model's path in the docstring, or a nested list's annotation, may be long.
    lint = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--config",
         str(ROOT / "pyproject.toml"), "--ignore", "E501", *files],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert lint.returncode == 0, lint.stdout + lint.stderr
    out, err, status = mypy_api.run(
        ["--config-file", str(ROOT / "pyproject.toml"), "--strict", "--cache-dir", os.devnull,
         "--no-incremental", *files]
    )  # fmt: skip
    assert status == 0, out + err


def _onnxruntime(model: Path, columns: dict[str, Any]) -> dict[str, Any]:
    """Every output of ``model`` run by onnxruntime on ``columns`` (a value a row, by input
    name), each cast to its input's element type and shaped as it."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    types = {"tensor(float)": np.float32, "tensor(double)": np.float64,
             "tensor(int64)": np.int64, "tensor(string)": object}  # fmt: skip
    feeds = {}
    for spec in session.get_inputs():
        array = np.array(columns[spec.name], dtype=types[spec.type])
        feeds[spec.name] = (
            array.reshape(-1, 1) if array.ndim == 1 and len(spec.shape) == 2 else array
        )
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def test_generated_columnar_predicts_answer_what_onnxruntime_answers_over_http(
    rendered: Path, tmp_path: Path
) -> None:
    """The row-form templates answered each output row as onnxruntime gave it (classes named):
    the columnar ones answer the same over HTTP, where instances are gathered into columns."""
    wide = np.random.default_rng(3).normal(size=(5, 13)).round(4).tolist()
    frame = _loans(7, seed=1)
    rows = frame.to_dict(orient="records")
    *answers, short, nan = _answers(
        rendered,
        tmp_path,
        [
            ("wide", {"instances": [{"x": r} for r in wide]}),
            ("loans", {"instances": rows}),
            ("loanrows", {"instances": rows}),
            ("spend", {"instances": rows}),
            ("wide", {"instances": [{"x": wide[0]}, {"x": wide[1][:12]}]}),
            ("wide", {"instances": [{"x": ["NaN", *wide[0][1:]]}]}),
        ],
    )
    for answer in answers:
        assert answer.status_code == 200, answer.text
    # The input model's own errors, as the row form gave them.
    assert short.status_code == 422 and nan.status_code == 422, (short.text, nan.text)
    assert short.json()["error"]["detail"][0]["field"] == "instances[1].x"
    assert "at least 13 items" in short.json()["error"]["detail"][0]["message"]
    assert nan.json()["error"]["detail"][0]["field"] == "instances[0].x[0]"
    (y,) = _onnxruntime(rendered / "wide.onnx", {"x": wide}).values()
    assert answers[0].json()["predictions"] == [{"y": r} for r in y.tolist()]

    loans = _onnxruntime(rendered / "loans.onnx", frame.to_dict(orient="list"))
    assert set(loans["label"].tolist()) == {"no", "yes"}  # both classes reached
    assert answers[1].json()["predictions"] == [
        {"label": label, "probabilities": dict(zip(["no", "yes"], p, strict=True))}
        for label, p in zip(loans["label"].tolist(), loans["probabilities"].tolist(), strict=True)
    ]
    assert answers[2].json()["predictions"] == [
        {"label": label, "probabilities": p}
        for label, p in zip(loans["label"].tolist(), loans["probabilities"].tolist(), strict=True)
    ]
    (spent,) = _onnxruntime(rendered / "spend.onnx", frame.to_dict(orient="list")).values()
    assert answers[3].json()["predictions"] == [{"prediction": v} for v in spent[:, 0].tolist()]


def test_the_printed_commands_reach_the_app_where_mlfn_url_says_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(tmp_path / "app", {})
    multi_io(app / "m.onnx")
    monkeypatch.setenv("MLFN_URL", "http://127.0.0.1:7391")
    done = _new(monkeypatch, app, "tensors", "--model", "m.onnx")
    assert done.exit_code == 0, (done.output, done.exc_info)
    assert "  mlfn serve --port 7391\n" in done.stdout
    assert "  curl -s http://127.0.0.1:7391/api/tensors/predict " in done.stdout

"""A scikit-learn pipeline fitted on a DataFrame of numeric and categorical string columns,
converted into the app, made an endpoint by ``mlfn new``, scored on Spark by column name: the
pipeline's own answers, and each bad row the error HTTP gives the same instance."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pytest

from tests.convert.steps import mlfn
from tests.convert.test_sklearn_dataframe import _fitted_pipeline, _loans
from tests.spark.spark_support import local_spark, needs_spark
from tests.support import LocalHost, make_app

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

pytestmark = [needs_spark, pytest.mark.timeout(300)]

ROWS = 400


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    """local[2], one onnxruntime thread per Python worker; the model is a file in the app, so
    no store is needed."""
    with local_spark({"MLFN_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}) as session:
        yield session


def _applicants() -> tuple[pd.DataFrame, list[int], list[int]]:
    """ROWS applicants the pipeline was not fitted on, with an id; 1% are bad: every row with
    id % 100 == 7 alternately names a city the one-hot encoder refuses, or has no age (a
    null, which the required ``age: int`` refuses). Returns them, the bad cities' ids and the
    missing ages' ids."""
    rows = _loans(ROWS, seed=2).astype({"age": "Int64"})  # a nullable integer column
    rows.insert(0, "id", range(ROWS))
    bad = [i for i in range(ROWS) if i % 100 == 7]
    cities, ages = bad[::2], bad[1::2]
    rows.loc[cities, "city"] = "tokyo"
    rows.loc[ages, "age"] = pd.NA
    return rows, cities, ages


def test_a_dataframe_pipeline_scores_on_spark_as_scikit_learn_does_bad_rows_as_over_http(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_imports: None
) -> None:
    from runtime.convert import to_onnx
    from runtime.spark import score

    loans = _loans(240)
    pipeline = _fitted_pipeline(loans)
    app = make_app(tmp_path / "app", {})
    to_onnx(pipeline, app / "models" / "loans.onnx", loans)
    made = mlfn(
        monkeypatch, app, "new", "loans", "--model", "models/loans.onnx", "--template", "classifier"
    )
    assert made.exit_code == 0, (made.output, made.exc_info)
    text = (app / "functions" / "loans" / "endpoint.py").read_text()
    assert '    model=Model("./models/loans.onnx"),\n' in text  # a file of the app's own
    assert "@endpoint.predict_columns\n" in text  # Spark scores it as columns

    rows, cities, ages = _applicants()
    bad = sorted([*cities, *ages])
    assert len(bad) == ROWS // 100 and cities and ages
    scored = score(spark.createDataFrame(rows), "loans", app_dir=app)
    assert scored.columns == [
        "id", "age", "annual income", "city", "size", "label", "probabilities", "error",
    ]  # fmt: skip
    got = {r["id"]: r for r in scored.toArrow().to_pylist()}
    assert sorted(got) == list(range(ROWS))

    good = rows.drop(index=bad).astype({"age": "int64"})
    classes = [str(c) for c in pipeline.classes_]
    labels = pipeline.predict(good.drop(columns="id"))
    probabilities = pipeline.predict_proba(good.drop(columns="id"))
    assert len(set(labels)) == 2  # both classes reached
    for i, label, want in zip(good["id"].tolist(), labels.tolist(), probabilities, strict=True):
        row = got[i]
        assert row["error"] is None, (i, row["error"])
        assert row["label"] == label, i
        have = dict(row["probabilities"])
        np.testing.assert_allclose([have[c] for c in classes], want, atol=1e-6, err_msg=str(i))

    # The same bad rows over HTTP, one request each: a null in Spark is a field left out (as
    # an empty CSV cell is), so the instance over HTTP has no "age" either.
    instances = []
    for i in bad:
        instance: dict[str, Any] = rows.loc[i].drop("id").to_dict()
        if i in ages:
            del instance["age"]
        else:
            instance["age"] = int(instance["age"])
        instances.append(instance)
    server = LocalHost(app, {"MLFN_CACHE_DIR": str(tmp_path / "cache")}, ("--no-queues",))
    server.start()
    try:
        with server.client() as http:
            answers = [
                http.post("/api/loans/predict", json={"instances": [instance]})
                for instance in instances
            ]
    finally:
        server.stop()
    for i, answer in zip(bad, answers, strict=True):
        assert answer.status_code == 422, answer.text
        row = got[i]
        assert row["label"] is None and row["probabilities"] is None
        error = json.loads(row["error"])
        assert error["type"] == "ValidationFailed", error
        field = "city" if i in cities else "age"
        # HTTP names the field by its place in the request, Spark by its own: the rest is
        # the same, word for word.
        http_detail = answer.json()["error"]["detail"]
        assert [d["field"] for d in http_detail] == [f"instances[0].{field}"], http_detail
        assert [d["field"] for d in error["detail"]] == [field], error
        said = [(d["message"], d["type"]) for d in error["detail"]]
        assert said == [(d["message"], d["type"]) for d in http_detail], (said, http_detail)

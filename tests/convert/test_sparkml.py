"""Spark ML to an endpoint: a fitted pipeline saved as a Spark ML model folder, converted,
proven, scaffolded and served. Reported skipped where pyspark or onnxmltools is not installed."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from sklearn.datasets import load_iris

from runtime.convert import to_onnx
from runtime.errors import ConversionError
from tests.convert.steps import mlfn, served
from tests.support import make_app

REASON = (
    "pyspark and onnxmltools are not installed: `make test-frameworks` installs them (Python 3.11)"
)
pytest.importorskip("pyspark", reason=REASON)
pytest.importorskip("onnxmltools", reason=REASON)
if shutil.which("java") is None:
    pytest.skip("Spark needs Java (17) on PATH", allow_module_level=True)
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    from runtime.convert.from_sparkml import session

    with pytest.MonkeyPatch.context() as env:
        env.setenv("SPARK_LOCAL_IP", "127.0.0.1")  # read as the JVM starts
        spark = session()  # local[1], loopback only, no web UI
    spark.sparkContext.setLogLevel("ERROR")
    yield spark
    spark.stop()


@pytest.fixture(scope="module")
def iris(spark: Any) -> Any:
    data = load_iris()
    rows = [[*map(float, r), float(y)] for r, y in zip(data.data, data.target, strict=True)]
    return spark.createDataFrame(rows, [*COLUMNS, "label"])


@pytest.fixture(scope="module")
def pipeline(iris: Any) -> Any:
    """Assembler, scaler and a random forest, fitted on iris."""
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import RandomForestClassifier
    from pyspark.ml.feature import StandardScaler, VectorAssembler

    return Pipeline(
        stages=[
            VectorAssembler(inputCols=COLUMNS, outputCol="features"),
            StandardScaler(inputCol="features", outputCol="scaled"),
            RandomForestClassifier(featuresCol="scaled", numTrees=5, maxDepth=3, seed=0),
        ]
    ).fit(iris)


@pytest.fixture(scope="module")
def saved(pipeline: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pipeline saved as a Spark ML model folder, what ``mlfn convert`` reads."""
    folder = tmp_path_factory.mktemp("saved") / "spark-model"
    pipeline.write().save(str(folder))
    return folder


def test_a_saved_pipeline_converted_and_served_answers_what_spark_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pipeline: Any, saved: Path, iris: Any,
    spark: Any,
) -> None:  # fmt: skip
    app = make_app(tmp_path / "app", {})

    done = mlfn(monkeypatch, app, "convert", str(saved), "--to", "m.onnx")
    assert done.exit_code == 0, (done.output, done.exc_info)
    assert "32 synthesised sample rows answered by both models" in done.stdout
    graph = onnx.load(app / "m.onnx").graph
    assert [i.name for i in graph.input] == COLUMNS  # one input a column the pipeline reads
    made = mlfn(monkeypatch, app, "new", "flowers", "--model", "m.onnx")
    assert made.exit_code == 0, (made.output, made.exc_info)

    picked = iris.collect()[::5]
    body = {"instances": [{c: [row[c]] for c in COLUMNS} for row in picked]}
    (answer,) = served(app, tmp_path, [("flowers", body)])
    expected = pipeline.transform(spark.createDataFrame(picked)).collect()
    predictions = answer.json()["predictions"]
    assert [p["prediction"] for p in predictions] == [r["prediction"] for r in expected]
    np.testing.assert_allclose(
        [p["probability"] for p in predictions],
        [r["probability"].toArray() for r in expected],
        atol=1e-5,
    )
    assert len({r["prediction"] for r in expected}) == 3


def test_a_sample_file_is_read_as_rows_of_the_columns_the_pipeline_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pipeline: Any, saved: Path, iris: Any,
    spark: Any,
) -> None:  # fmt: skip
    picked = iris.collect()[::10]
    np.save(tmp_path / "rows.npy", np.array([[row[c] for c in COLUMNS] for row in picked]))
    done = mlfn(
        monkeypatch, tmp_path, "convert", str(saved), "--to", "m.onnx", "--sample", "rows.npy"
    )
    assert done.exit_code == 0, (done.output, done.exc_info)
    assert "onnx checker: passed; 15 sample rows answered by both models" in done.stdout

    with pytest.raises(ConversionError, match=r"\[rows, 4\], one column each for sepal_length"):
        to_onnx(pipeline, tmp_path / "x.onnx", np.zeros((3, 2)), spark=spark)
    assert not (tmp_path / "x.onnx").exists()


def test_the_api_proves_a_pipeline_on_the_rows_given(
    tmp_path: Path, pipeline: Any, iris: Any, spark: Any
) -> None:
    done = to_onnx(pipeline, tmp_path / "m.onnx", iris, spark=spark)
    assert done.framework == "sparkml" and done.rows == 150
    assert [d.output for d in done.differences] == ["prediction", "probability"]
    assert done.largest_difference < 1e-5


def test_a_conversion_that_changes_the_answers_is_refused(
    tmp_path: Path, iris: Any, spark: Any
) -> None:
    """docs/models.md's known refusal: onnxmltools writes a logistic post-transform for a
    multinomial logistic regression, where Spark uses a softmax. If this starts to pass, the
    converter was fixed: drop the refusal from the docs."""
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import VectorAssembler

    from runtime.errors import ConversionMismatch

    multinomial = Pipeline(
        stages=[
            VectorAssembler(inputCols=COLUMNS, outputCol="features"),
            LogisticRegression(maxIter=50, family="multinomial"),
        ]
    ).fit(iris)
    with pytest.raises(ConversionMismatch, match=r"probability: largest difference 0\.\d+"):
        to_onnx(multinomial, tmp_path / "m.onnx", iris, spark=spark)
    assert not (tmp_path / "m.onnx").exists()

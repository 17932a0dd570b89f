"""runtime.spark.score on pyspark in local mode: one SparkSession (local[2]) for the module,
the model in Azurite, downloads counted in Azurite's access log."""

from __future__ import annotations

import datetime as dt
import math
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from tests.conftest import AzuriteInfo
from tests.spark.spark_support import (
    IRIS,
    IRIS_COLUMNS,
    ODD,
    SHAPES,
    count_blob_downloads,
    local_spark,
    needs_spark,
    row_endpoint,
)
from tests.support import make_app

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

pytestmark = [needs_spark, pytest.mark.timeout(300)]

ROWS, PARTITIONS = 100_000, 8


@pytest.fixture(scope="module")
def store(azurite: AzuriteInfo, example_models: dict[str, Path]) -> str:
    """A container holding iris.onnx, for every test of the module."""
    import uuid

    from azure.storage.blob import ContainerClient

    name = f"spark{uuid.uuid4().hex[:12]}"
    client = ContainerClient.from_connection_string(azurite.connection_string, name)
    client.create_container()
    client.upload_blob("iris.onnx", example_models["iris"].read_bytes())
    return name


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The test app; the driver imports its `functions` package (whatever was imported before
    is set aside by runtime.spark), and the module leaves the imports as it found them."""
    saved_path, saved = list(sys.path), dict(sys.modules)
    yield make_app(
        tmp_path_factory.mktemp("spark-app"),
        {
            "spark_iris": IRIS,
            "spark_iris_columns": IRIS_COLUMNS,
            "spark_shapes": SHAPES,
            "spark_odd": ODD,
        },
    )
    for name in [n for n in sys.modules if n == "functions" or n.startswith("functions.")]:
        del sys.modules[name]
    sys.modules.update({n: m for n, m in saved.items() if n.partition(".")[0] == "functions"})
    sys.path[:] = saved_path


@pytest.fixture(scope="module")
def spark(
    azurite: AzuriteInfo, store: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SparkSession]:
    """local[2]; the Python workers inherit the environment the JVM starts with."""
    env = {
        "AzureWebJobsStorage": azurite.connection_string,
        "MLFN_MODEL_STORE": f"az://{store}",
        "MLFN_CACHE_DIR": str(tmp_path_factory.mktemp("cache")),
    }
    with local_spark(env) as session:
        yield session


def _flowers(spark: SparkSession) -> DataFrame:
    """ROWS flowers over PARTITIONS partitions; every row with id % 100 == 7 (1%) has a
    negative petal length, which the input model refuses."""
    return spark.range(0, ROWS, 1, PARTITIONS).selectExpr(
        "id",
        "4.0 + (id * 7 % 40) / 10.0 AS sepal_length",
        "2.0 + (id * 3 % 25) / 10.0 AS sepal_width",
        "CASE WHEN id % 100 = 7 THEN -1.0 ELSE 1.0 + (id * 11 % 60) / 10.0 END AS petal_length",
        "0.1 + (id * 13 % 25) / 10.0 AS petalWidth",  # the input field's alias
    )


def _expected(ids: np.ndarray, model: Path) -> dict[str, np.ndarray]:
    """onnxruntime on the same rows, computed here from the same formulas."""
    import onnxruntime as ort

    features = np.stack(
        [
            4.0 + (ids * 7 % 40) / 10.0,
            2.0 + (ids * 3 % 25) / 10.0,
            1.0 + (ids * 11 % 60) / 10.0,
            0.1 + (ids * 13 % 25) / 10.0,
        ],
        axis=1,
    ).astype(np.float32)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    label, probabilities = session.run(["label", "probabilities"], {"input": features})
    return {"label": np.asarray(label), "probabilities": np.asarray(probabilities)}


def test_100k_rows_score_as_onnxruntime_does_bad_rows_carry_errors_one_download(
    spark: SparkSession,
    app: Path,
    azurite: AzuriteInfo,
    store: str,
    example_models: dict[str, Path],
) -> None:
    from runtime.spark import score

    scored = score(_flowers(spark), "spark_iris", app_dir=app)
    assert scored.columns == [
        "id", "sepal_length", "sepal_width", "petal_length", "petalWidth",
        "label", "probabilities", "worker", "error",
    ]  # fmt: skip
    table = scored.toArrow()
    assert table.num_rows == ROWS
    rows = {r["id"]: r for r in table.to_pylist()}
    assert sorted(rows) == list(range(ROWS))  # each id once

    bad = [i for i in range(ROWS) if i % 100 == 7]
    assert len(bad) == ROWS // 100
    for i in bad:
        row = rows[i]
        assert row["label"] is None and row["probabilities"] is None
        assert row["error"].startswith('{"type":"ValidationFailed"')
        assert '"field":"petal_length"' in row["error"]
    good = np.array([i for i in range(ROWS) if i % 100 != 7])
    expected = _expected(good, example_models["iris"])
    species = ("setosa", "versicolor", "virginica")
    for n, i in enumerate(good.tolist()):
        row = rows[i]
        assert row["error"] is None
        assert row["label"] == species[int(expected["label"][n])], i
        got = dict(row["probabilities"])
        want = dict(zip(species, expected["probabilities"][n].tolist(), strict=True))
        assert got == pytest.approx(want, rel=1e-6, abs=1e-9), i

    # Each Python worker loads the model once, for all the tasks it runs; and the bytes
    # cross the network once for the machine (the disk cache and its file lock). Every other
    # worker's load is a revalidation: a GET answered 304. Downloading per task (8) or per
    # batch (400) would exceed both counts.
    workers = {r["worker"] for r in rows.values() if r["worker"] is not None}
    gets, downloads = count_blob_downloads(azurite.log_path, store, "iris.onnx")
    assert downloads == 1
    assert 1 <= gets <= len(workers) < PARTITIONS


def test_a_columnar_predict_scores_as_the_row_form_does_bad_rows_alike(
    spark: SparkSession, app: Path
) -> None:
    from runtime.spark import score

    flowers = _flowers(spark)
    by_rows = score(flowers, "spark_iris", app_dir=app).drop("worker").toArrow()
    by_columns = score(flowers, "spark_iris_columns", app_dir=app).drop("worker").toArrow()
    assert by_columns.schema == by_rows.schema
    rows = {r["id"]: r for r in by_rows.to_pylist()}
    columns = {r["id"]: r for r in by_columns.to_pylist()}
    assert sorted(columns) == sorted(rows)
    bad = 0
    for i, want in rows.items():
        got = columns[i]
        assert got["error"] == want["error"], i  # the same error, word for word
        bad += want["error"] is not None
        assert got["label"] == want["label"], i
        if want["probabilities"] is not None:
            assert dict(got["probabilities"]) == pytest.approx(dict(want["probabilities"]))
    assert bad == ROWS // 100


def test_every_output_type_becomes_its_spark_column(spark: SparkSession, app: Path) -> None:
    from runtime.spark import score

    df = spark.createDataFrame(
        [(1, 1.0, ["a", "b"]), (2, 3.0, []), (3, None, ["c"])],
        "id long, x double, tags array<string>",
    )
    scored = score(df, "spark_shapes", app_dir=app)
    types = {f.name: f.dataType.simpleString() for f in scored.schema.fields}
    assert types == {
        "id": "bigint",
        "x": "double",
        "tags": "array<string>",
        "count": "bigint",
        "value": "double",
        "name": "string",
        "flag": "boolean",
        "values": "array<double>",
        "point": "struct<lat:double,note:string>",
        "scores": "map<string,double>",
        "maybe": "bigint",
        "renamedField": "string",
        "error": "string",
    }
    rows: dict[int, Any] = {r["id"]: r.asDict(recursive=True) for r in scored.collect()}
    one = rows[1]
    assert (one["count"], one["value"], one["name"], one["flag"]) == (1, 0.5, "n1", False)
    assert one["values"][0] == 1.0 and math.isnan(one["values"][1])  # NaN, not null, again
    assert one["point"] == {"lat": 1.0, "note": "low"}
    assert one["scores"] == {"a": 1.0, "b": 1.0} and one["maybe"] == 1
    assert one["renamedField"] == "r" and one["error"] is None
    two = rows[2]
    assert two["point"] == {"lat": 3.0, "note": None} and two["maybe"] is None
    assert two["scores"] == {} and two["flag"] is True
    three = rows[3]  # x is null: refused by the input model, the job goes on
    assert three["count"] is None and three["point"] is None
    assert '"field":"x"' in three["error"]


def test_a_dataframe_without_an_input_column_is_refused_before_any_job(
    spark: SparkSession, app: Path
) -> None:
    from runtime.errors import ColumnsRefused
    from runtime.spark import score

    df = _flowers(spark).drop("petalWidth")
    with pytest.raises(ColumnsRefused, match="no column for input fields petalWidth"):
        score(df, "spark_iris", app_dir=app)


def test_an_app_shipped_as_the_zip_mlfn_pack_writes_scores_the_same(
    spark: SparkSession, app: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from runtime.deploy.files import package, write_zip
    from runtime.digest import sha256_file
    from runtime.spark import score

    archive = write_zip(package(app), tmp_path / "app.zip")
    # Where this machine's Python workers unpack it (their temporary folder is this process's).
    unpacked = Path(tempfile.gettempdir()) / f"mlfn-app-{sha256_file(archive)[:16]}"
    request.addfinalizer(lambda: shutil.rmtree(unpacked, ignore_errors=True))
    df = _flowers(spark).where("id < 300")
    by_zip = {r["id"]: (r["label"], r["error"]) for r in score(df, "spark_iris", archive).collect()}
    assert unpacked.is_dir()
    by_folder = {r["id"]: (r["label"], r["error"]) for r in score(df, "spark_iris", app).collect()}
    assert by_zip == by_folder and len(by_zip) == 300
    assert sum(error is not None for _, error in by_zip.values()) == 3


def test_dates_int_keys_and_defaults_come_through_and_an_int_over_64_bits_fails_its_row(
    spark: SparkSession, app: Path
) -> None:
    from runtime.spark import score

    df = spark.createDataFrame(
        [(1, None, [{"a": 1}, {"b": 2}]), (2, 1.0, []), (3, 0.5, None)],
        "n long, scale double, nested array<map<string,long>>",
    )
    scored = score(df, "spark_odd", app_dir=app)
    assert scored.columns[3:] == ["at", "day", "big", "by_id", "seen", "twice", "error"]
    rows: dict[int, Any] = {r["n"]: r.asDict(recursive=True) for r in scored.collect()}
    one = rows[1]
    assert one["error"] is None, one["error"]
    utc = dt.datetime(2024, 1, 3, 3, 4, 5, tzinfo=dt.UTC)
    assert one["at"].astimezone(dt.UTC) == utc  # Spark hands back local time
    assert one["day"] == dt.date(2024, 1, 1) and one["big"] == 1
    assert one["by_id"] == {1: 2.0}  # a null scale is left out: the default applies
    assert (one["seen"], one["twice"]) == (3, 6)  # maps inside a list arrive as dicts
    two = rows[2]  # 2**63: no bigint holds it; that row alone fails
    assert two["big"] is None and two["day"] is None
    assert two["error"].startswith('{"type":"OutputNotRepresentable"')
    assert "'big'" in two["error"]
    assert rows[3]["error"] is None and rows[3]["by_id"] == {3: 0.5}


def test_output_names_clash_with_input_columns_whatever_their_case(
    spark: SparkSession, app: Path
) -> None:
    from runtime.errors import ColumnsRefused
    from runtime.spark import score

    df = spark.createDataFrame([(1, "x")], "n long, DAY string")
    with pytest.raises(ColumnsRefused, match="columns named like outputs: day"):
        score(df, "spark_odd", app_dir=app)


def test_an_app_edited_between_two_jobs_scores_with_its_new_code(
    spark: SparkSession, tmp_path: Path
) -> None:
    from runtime.spark import score

    app = make_app(tmp_path / "edited", {"spark_edited": SHAPES})
    endpoint = app / "functions" / "spark_edited" / "endpoint.py"
    df = spark.createDataFrame([(1.0,)], "x double").coalesce(1)
    assert score(df, "spark_edited", app_dir=app).first()["count"] == 1  # type: ignore[index]
    endpoint.write_text(endpoint.read_text().replace("count=int(", "count=1000 + int("))
    assert score(df, "spark_edited", app_dir=app).first()["count"] == 1001  # type: ignore[index]


def test_csv_columns_are_read_as_strings(spark: SparkSession, tmp_path: Path) -> None:
    from runtime.spark.files import read

    (tmp_path / "in.csv").write_text("id,code\n1,007\n")
    df = read(spark, str(tmp_path / "in.csv"), "csv")
    assert [(f.name, f.dataType.simpleString()) for f in df.schema.fields] == [
        ("id", "string"),
        ("code", "string"),
    ]
    assert df.first()["code"] == "007"  # type: ignore[index]


def test_arrays_and_maps_score_with_large_var_types_on(spark: SparkSession, app: Path) -> None:
    from runtime.spark import score

    df = spark.createDataFrame([(1, 1.0, ["a"])], "id long, x double, tags array<string>")
    spark.conf.set("spark.sql.execution.arrow.useLargeVarTypes", "true")
    try:
        row = score(df, "spark_shapes", app_dir=app).first()
    finally:
        spark.conf.unset("spark.sql.execution.arrow.useLargeVarTypes")
    assert row is not None and row["error"] is None, row
    assert row["values"][0] == 1.0 and row["scores"] == {"a": 1.0} and row["name"] == "n1"


THREADS = row_endpoint(
    "threads: int",
    "threads=model.session_info.intra_op_threads if model.session_info else -1",
)


def test_a_model_runs_on_the_cpus_spark_gives_a_task(spark: SparkSession, tmp_path: Path) -> None:
    # Its session took every CPU of the machine (2 here) in each of the executor's workers
    # at once (local[2]: two), as outside Spark; spark.task.cpus is 1.
    from runtime.spark import score

    app = make_app(tmp_path / "threads", {"spark_threads": THREADS})
    df = spark.createDataFrame([(1.0,), (2.0,)], "x double").repartition(2)
    assert {r["threads"] for r in score(df, "spark_threads", app_dir=app).collect()} == {1}

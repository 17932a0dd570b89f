"""``mlfn spark-score``: a file in, the scored file out, on a local Spark session."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.spark.spark_support import needs_spark
from tests.support import MLFN, copy_examples

pytestmark = [needs_spark, pytest.mark.timeout(300)]

FLOWER = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def _mlfn(app: Path, models: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFN_", "AzureWebJobs"))}
    env.update(MLFN_MODEL_STORE=str(models), MLFN_CACHE_DIR=str(app / "cache"))
    return subprocess.run(
        [str(MLFN), *args], cwd=app, env=env, capture_output=True, text=True, timeout=240
    )


def test_a_json_lines_file_is_scored_into_parquet_with_an_error_per_bad_row(
    tmp_path: Path, example_models: dict[str, Path]
) -> None:
    import pyarrow.parquet as pq

    app = copy_examples(tmp_path / "app")
    rows = [{"id": i, **FLOWER} for i in range(20)]
    rows[3]["petal_width"] = -1
    rows[11]["sepal_length"] = "long"
    (app / "flowers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    done = _mlfn(
        app, example_models["iris"].parent,
        "spark-score", "iris", "flowers.jsonl", "scored.parquet", "--master", "local[1]",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("scored 20 rows (2 errors) into scored.parquet in ")

    table = pq.read_table(app / "scored.parquet")
    assert table.column_names[-3:] == ["label", "probabilities", "error"]
    out = {r["id"]: r for r in table.to_pylist()}
    assert sorted(out) == list(range(20))
    assert '"field":"petal_width"' in out[3]["error"] and out[3]["label"] is None
    assert '"field":"sepal_length"' in out[11]["error"]
    assert {out[i]["label"] for i in out if i not in (3, 11)} == {"setosa"}


def test_errors_are_one_line_without_a_traceback(
    tmp_path: Path, example_models: dict[str, Path]
) -> None:
    app = copy_examples(tmp_path / "app")
    models = example_models["iris"].parent

    unknown = _mlfn(app, models, "spark-score", "nope", "in.parquet", "out.parquet")
    assert unknown.returncode == 1
    assert unknown.stderr == "Error: no endpoint named 'nope'\n"

    absent = _mlfn(
        app, models, "spark-score", "iris", "absent.parquet", "out.parquet", "--master", "local[1]"
    )
    assert absent.returncode == 1
    last = absent.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: Spark job failed: [PATH_NOT_FOUND]"), absent.stderr[-2000:]
    assert "absent.parquet" in last and "Traceback" not in absent.stderr

    (app / "noise.parquet").write_bytes(os.urandom(2000))  # no Parquet footer
    corrupt = _mlfn(
        app, models, "spark-score", "iris", "noise.parquet", "out.parquet", "--master", "local[1]"
    )
    assert corrupt.returncode == 1
    last = corrupt.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: Spark job failed: "), corrupt.stderr[-2000:]
    assert "Traceback" not in corrupt.stderr and "Py4JJavaError" not in corrupt.stderr

"""The payload log and ``mlfn drift`` together: the iris endpoint logs its traffic, one of
whose features has drifted from the training data; the drift report over those very files
ranks that feature first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from runtime.cli import main
from tests.payload_log.test_records import App
from tests.support import copy_examples

FIELDS = ("sepal_length", "sepal_width", "petal_length", "petal_width")
CENTRES = {"sepal_length": 5.8, "sepal_width": 3.0, "petal_length": 3.7, "petal_width": 1.2}


def flowers(rng: np.random.Generator, n: int, shift: float = 0.0) -> dict[str, np.ndarray]:
    columns = {f: rng.normal(CENTRES[f], 0.3, n).clip(0.1, 40) for f in FIELDS}
    columns["petal_length"] = columns["petal_length"] + shift
    return columns


def test_the_drift_report_over_logged_traffic_ranks_the_shifted_feature_first(
    tmp_path: Path, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = tmp_path / "train.parquet"
    pq.write_table(pa.table(flowers(np.random.default_rng(1), 4000)), reference)
    app = App(copy_examples(tmp_path / "app"), store, tmp_path / "cache", tmp_path / "logs")
    try:
        recent = flowers(np.random.default_rng(2), 2000, shift=0.4)
        for start in range(0, 2000, 100):
            instances = [
                {f: float(recent[f][i]) for f in FIELDS} for i in range(start, start + 100)
            ]
            assert app.post("iris_predict", "iris/predict", {"instances": instances})[0] == 200
    finally:
        app.close()  # writes what waits

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        main,
        ["drift", "iris", "--reference", str(reference), "--logs", str(tmp_path / "logs")],
        catch_exceptions=False,
    )

    print(result.output)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("field "))
    rows = [line.split() for line in lines[header + 1 : header + 5]]
    assert rows[0][0] == "petal_length" and float(rows[0][3]) > 0.2
    assert {r[0] for r in rows[1:]} == {"sepal_length", "sepal_width", "petal_width"}
    assert all(float(r[3]) < 0.1 for r in rows[1:]), rows
    assert (tmp_path / "drift-iris.html").is_file()

"""A dict output (a classifier's probability of each class, by name) scored as columns: a map
column made without a Python object a row, checked as pydantic checks it, and written as the
row path writes it, in every format (a float32 in CSV with its own shortest digits)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel

from runtime.columnar.frame import compiled
from runtime.config import Settings
from runtime.endpoint import BoundEndpoint, Endpoint, Limits
from runtime.errors import PredictContractError
from runtime.models.onnx_model import OnnxModel
from runtime.models.registry import ModelRegistry
from runtime.protocol.batch_formats import ColumnOutcomes, Outcome, as_outcomes
from runtime.protocol.csv_rows import CsvWriter, _own_digits
from runtime.protocol.parquet_rows import ParquetWriter
from runtime.services.columns import ColumnService
from runtime.services.predict import PredictService
from runtime.services.rows import RowService

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
NAMES = ("setosa", "versi,color", 'vir"ginica')  # JSON and CSV have to quote two of them


class Flower(BaseModel):
    sepal_length: float
    sepal_width: float
    petal_length: float
    petal_width: float


class Species(BaseModel):
    label: str
    probabilities: dict[str, float]


def _run(columns: dict[str, Any], model: OnnxModel) -> dict[str, Any]:
    return model.run({"input": np.column_stack([columns[n] for n in FEATURES])})


def per_key(columns: dict[str, Any], model: OnnxModel) -> dict[str, Any]:
    """What ``mlfn new --template classifier`` writes: a column per class."""
    out = _run(columns, model)
    return {
        "label": np.array(NAMES)[out["label"]],
        "probabilities": dict(zip(NAMES, out["probabilities"].T, strict=True)),
    }


def per_row(columns: dict[str, Any], model: OnnxModel) -> dict[str, Any]:
    """A dict a row (a ZipMap's output is this)."""
    out = _run(columns, model)
    return {
        "label": [NAMES[i] for i in out["label"].tolist()],
        "probabilities": [dict(zip(NAMES, p, strict=True)) for p in out["probabilities"].tolist()],
    }


def per_row_float32(columns: dict[str, Any], model: OnnxModel) -> dict[str, Any]:
    """A dict a row of the model's own float32s (its output's rows zipped with the names)."""
    out = _run(columns, model)
    return {
        "label": [NAMES[i] for i in out["label"].tolist()],
        "probabilities": [dict(zip(NAMES, p, strict=True)) for p in out["probabilities"]],
    }


def by_rows(flowers: list[Flower], model: OnnxModel) -> list[Species]:
    out = model.run({"input": [[getattr(f, n) for n in FEATURES] for f in flowers]})
    return [
        Species(label=NAMES[label], probabilities=dict(zip(NAMES, p, strict=True)))
        for label, p in zip(out["label"].tolist(), out["probabilities"].tolist(), strict=True)
    ]


def _service(model: Path, tmp: Path, columnar: Any) -> tuple[ColumnService, RowService]:
    endpoints = {}
    for name, fn in (("rows", by_rows), ("columns", columnar)):
        endpoint = Endpoint(Flower, Species, model=str(model), limits=Limits(max_batch_size=16))
        (endpoint.predict if fn is by_rows else endpoint.predict_columns)(fn)  # type: ignore[operator]
        endpoints[name] = BoundEndpoint(name, endpoint)
    predict = PredictService(endpoints, ModelRegistry(Settings(cache_dir=tmp / "cache"), tmp))
    return ColumnService(predict), RowService(predict)


def _given(n: int) -> dict[str, pa.Array]:
    rng = np.random.default_rng(11)
    values = rng.uniform([4.3, 2.0, 1.0, 0.1], [7.9, 4.4, 6.9, 2.5], size=(n, 4))
    return {f: pa.array(values[:, i]) for i, f in enumerate(FEATURES)}


def _rows_of(given: dict[str, pa.Array]) -> list[dict[str, Any]]:
    return pa.table(given).to_pylist()


def _csv_rows(data: bytes) -> list[dict[str, Any]]:
    """A results CSV's records, the probabilities read back from their JSON text."""
    rows = list(csv.DictReader(io.StringIO(data.decode(), newline="")))
    return [{**r, "probabilities": json.loads(r["probabilities"])} for r in rows]


def test_a_dict_output_compiles_as_a_map_of_its_value_type() -> None:
    plan = compiled(Species, output=True)
    assert not isinstance(plan, Exception)
    probabilities = next(f for f in plan.fields if f.name == "probabilities")
    assert probabilities.mapped and probabilities.value.kind == "float"


@pytest.mark.parametrize(
    "columnar",
    [per_key, per_row, per_row_float32],
    ids=["column per key", "dict per row", "dict of float32s per row"],
)
def test_dict_outputs_score_and_write_as_the_row_path_writes_them(
    columnar: Any, example_models: dict[str, Path], tmp_path: Path
) -> None:
    columns, rows = _service(example_models["iris"], tmp_path, columnar)
    n = 100
    given = _given(n)
    scored = columns.score_sync("columns", given, n, lambda picked: [])
    assert scored.outputs is not None and not scored.errors  # no pydantic object a row
    assert pa.types.is_map(scored.outputs["probabilities"].type)
    expected = rows.score_sync("rows", _rows_of(given)).rows
    outcomes = ColumnOutcomes(scored.outputs, {}, n)
    by_row: list[Outcome] = [(r.prediction, r.error) for r in expected]
    # The same JSON, byte for byte (the column path's once wrote 1e-09 where pydantic writes 1e-9)
    assert [p for p, _ in as_outcomes(outcomes)] == [p for p, _ in by_row]
    for writer in (CsvWriter, ParquetWriter):
        mine, theirs = io.BytesIO(), io.BytesIO()
        for sink, chunk in ((mine, outcomes), (theirs, by_row)):
            w = writer(sink, Species)
            w.write(0, chunk)
            w.close()
        if writer is CsvWriter and columnar is per_row:  # Python floats: the same bytes
            assert mine.getvalue() == theirs.getvalue()
        elif writer is CsvWriter:  # float32 columns: each float32's own shortest digits
            mine_rows, their_rows = (_csv_rows(s.getvalue()) for s in (mine, theirs))
            assert len(mine_rows) == len(their_rows) == n
            for m, t in zip(mine_rows, their_rows, strict=True):
                assert m["label"] == t["label"] and m["error"] == t["error"] == ""
                shortest = {k: float(str(np.float32(v))) for k, v in t["probabilities"].items()}
                assert m["probabilities"] == shortest
            assert len(mine.getvalue()) < len(theirs.getvalue())
        else:
            read = [pq.read_table(io.BytesIO(s.getvalue())).to_pylist() for s in (mine, theirs)]
            assert read[0] == read[1]


def test_a_value_pydantic_refuses_in_a_dict_is_that_row_s_error(
    example_models: dict[str, Path], tmp_path: Path
) -> None:
    def with_a_hole(columns: dict[str, Any], model: OnnxModel) -> dict[str, Any]:
        out = per_key(columns, model)
        setosa = out["probabilities"]["setosa"].astype(object)
        setosa[3] = None  # a float field's value: None is refused
        out["probabilities"]["setosa"] = setosa
        return out

    columns, _ = _service(example_models["iris"], tmp_path, with_a_hole)
    scored = columns.score_sync("columns", _given(10), 10, lambda picked: [])
    assert list(scored.errors) == [3]
    assert "probabilities.setosa" in scored.errors[3].message
    assert scored.outputs is not None and scored.outputs["probabilities"][3].as_py() is None


def test_a_non_finite_probability_is_written_as_the_row_path_writes_it(
    example_models: dict[str, Path], tmp_path: Path
) -> None:
    def nan_at_5(columns: dict[str, Any], model: OnnxModel) -> dict[str, Any]:
        out = per_key(columns, model)
        out["probabilities"]["setosa"][5] = math.nan
        return out

    columns, _ = _service(example_models["iris"], tmp_path, nan_at_5)
    scored = columns.score_sync("columns", _given(8), 8, lambda picked: [])
    assert scored.outputs is not None
    outcomes = ColumnOutcomes(scored.outputs, scored.errors, 8)
    mine, theirs = io.BytesIO(), io.BytesIO()
    # The row path's writer, given the float32s' own digits (as the column path keeps them)
    for sink, chunk in ((mine, outcomes), (theirs, as_outcomes(_own_digits(outcomes)))):
        CsvWriter(sink, Species).write(0, chunk)
    assert mine.getvalue() == theirs.getvalue()
    assert b'"setosa"":null' in mine.getvalue()  # NaN as JSON writes it: null


def test_a_key_column_of_another_length_names_the_key(
    example_models: dict[str, Path], tmp_path: Path
) -> None:
    def short(columns: dict[str, Any], model: OnnxModel) -> dict[str, Any]:
        out = per_key(columns, model)
        out["probabilities"]["setosa"] = out["probabilities"]["setosa"][:-1]
        return out

    columns, _ = _service(example_models["iris"], tmp_path, short)
    scored = columns.score_sync("columns", _given(4), 4, lambda picked: [])
    assert set(scored.errors) == {0, 1, 2, 3}
    error = scored.errors[0]
    assert isinstance(error, PredictContractError) and "'setosa'" in error.message

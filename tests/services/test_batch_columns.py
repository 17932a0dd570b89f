"""Batch files through a columnar predict: the same outputs, and word for word the same error
for each bad row, as the row form writes, in every format (against Azurite)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from azure.storage.blob import ContainerClient
from pydantic import BaseModel, ConfigDict, Field

from runtime.config import Settings
from runtime.endpoint import Batch, BoundEndpoint, Endpoint, Limits
from runtime.models.onnx_model import OnnxModel
from runtime.models.registry import ModelRegistry
from runtime.protocol import batch
from runtime.protocol.csv_rows import CsvRows
from runtime.services.batch import BatchService
from runtime.services.columns import ColumnService
from runtime.services.predict import PredictService
from runtime.services.rows import RowService
from tests.conftest import AzuriteInfo

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


class Flower(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

    sepal_length: float = Field(gt=0, le=50)
    sepal_width: float = Field(gt=0, le=50)
    petal_length: float = Field(gt=0, le=50)
    petal_width: float = Field(default=1.0, gt=0, le=50)
    tag: str | None = None  # a JSON null is a value here; left out, the default


class Species(BaseModel):
    label: int
    probabilities: list[float]
    tag: str | None


def by_rows(flowers: list[Flower], model: OnnxModel) -> list[Species]:
    out = model.run({"input": [[getattr(f, n) for n in FEATURES] for f in flowers]})
    return [
        Species(label=label, probabilities=probs, tag=f.tag)
        for f, label, probs in zip(
            flowers, out["label"].tolist(), out["probabilities"].tolist(), strict=True
        )
    ]


def by_columns(columns: dict[str, Any], model: OnnxModel) -> dict[str, Any]:
    out = model.run({"input": np.column_stack([columns[n] for n in FEATURES])})
    return {"label": out["label"], "probabilities": out["probabilities"], "tag": columns["tag"]}


def _rows(n: int, json_lines: bool = False) -> list[Any]:
    """Flowers, 1% of them bad each its own way, and some the columns cannot tell alone;
    ``json_lines``: lines of JSON that is not an object among them."""
    rng = np.random.default_rng(3)
    values = rng.uniform([4.3, 2.0, 1.0, 0.1], [7.9, 4.4, 6.9, 2.5], size=(n, 4)).round(2)
    rows: list[Any] = [dict(zip(FEATURES, map(float, v), strict=True)) for v in values]
    bad: list[Any] = [
        {"sepal_length": 5.0},  # fields missing
        {f: -1.0 for f in FEATURES},  # out of range
        {f: "wide" for f in FEATURES},  # wrong type
        {**rows[0], "petal_width": None},  # a null where a default stands: pydantic refuses
        "{not json",
    ]
    if json_lines:  # JSON, not an object: each its own error, its neighbours scored
        bad += ["[5.1, 3.5, 1.4, 0.2]", "null", "5", '"text"', "true"]
    for k, i in enumerate(range(5, n, 100)):
        rows[i] = bad[k % len(bad)]
    for i in range(7, n, 50):
        rows[i] = {**rows[i], "tag": None if i % 100 == 7 else f"t{i}"}  # JSON null, and text
    for i in range(9, n, 100):
        del rows[i]["petal_width"]  # left out: the default
    return rows


def _jsonl(rows: list[Any]) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


def _csv(rows: list[Any]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*FEATURES, "tag"])
    for r in rows:
        if isinstance(r, str):
            writer.writerow([r, "", "", "", ""])  # a record whose cells are not numbers
        else:
            writer.writerow(["" if r.get(k) is None else r[k] for k in (*FEATURES, "tag")])
    return out.getvalue().encode()


def _parquet(rows: list[Any]) -> bytes:
    table = pa.table(
        {
            k: [None if isinstance(r, str) else r.get(k) for r in rows]
            if k == "tag"
            else [
                None if isinstance(r, str) or not isinstance(r.get(k), float) else r[k]
                for r in rows
            ]
            for k in (*FEATURES, "tag")
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=300)
    return sink.getvalue()


def _service(model: Path, tmp: Path, azurite: AzuriteInfo, prefix: str) -> BatchService:
    endpoints = {}
    for name, fn in (("byrows", by_rows), ("bycols", by_columns)):
        endpoint = Endpoint(
            Flower,
            Species,
            model=str(model),
            limits=Limits(max_batch_size=64),
            batch=Batch(files=f"{prefix}-{name}", results=f"{prefix}-{name}-out"),
        )
        (endpoint.predict if fn is by_rows else endpoint.predict_columns)(fn)  # type: ignore[operator]
        endpoints[name] = BoundEndpoint(name, endpoint)
    settings = Settings.from_mapping(
        {"AzureWebJobsStorage": azurite.connection_string, "MLFN_CACHE_DIR": str(tmp / "cache")}
    )
    predict = PredictService(endpoints, ModelRegistry(settings, tmp))
    columns = ColumnService(predict)
    return BatchService(RowService(predict), settings, lambda: columns)


def _score(service: BatchService, azurite: AzuriteInfo, prefix: str, name: str, path: str,
           data: bytes) -> tuple[batch.Summary, bytes]:  # fmt: skip
    container = ContainerClient.from_connection_string(
        azurite.connection_string, f"{prefix}-{name}"
    )
    container.create_container()
    container.upload_blob(path, data)
    summary = asyncio.run(service.score_blob(name, path, f"{prefix}-{name}-out"))
    assert summary is not None and summary.output is not None, summary
    out = ContainerClient.from_connection_string(azurite.connection_string, f"{prefix}-{name}-out")
    return summary, out.download_blob(summary.output).readall()


def _records(fmt: str, data: bytes) -> list[dict[str, Any]]:
    if fmt == "jsonl":
        return [json.loads(line) for line in data.splitlines()]
    if fmt.endswith("csv"):
        return list(csv.DictReader(io.StringIO(data.decode())))
    return pq.read_table(io.BytesIO(data)).to_pylist()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-6)
    if isinstance(a, str) and a.startswith("[") and isinstance(b, str):
        return _same(json.loads(a), json.loads(b))
    if isinstance(a, list):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "quoted.csv", "parquet"])
def test_a_file_scores_through_columns_as_through_rows(
    fmt: str,
    azurite: AzuriteInfo,
    example_models: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from runtime.services import batch as batch_service

    through_columns = []

    def spy(*args: Any) -> Any:
        done = score_columns(*args)
        through_columns.append(done is not None)
        return done

    score_columns = batch_service._score_columns
    monkeypatch.setattr(batch_service, "_score_columns", spy)
    parsed_by_arrow = []
    csv_columns = CsvRows.columns

    def csv_spy(self: CsvRows, keys: Any) -> Any:
        done = csv_columns(self, keys)
        parsed_by_arrow.append(done is not None)
        return done

    monkeypatch.setattr(CsvRows, "columns", csv_spy)
    prefix = f"c{uuid.uuid4().hex[:10]}"
    service = _service(example_models["iris"], tmp_path, azurite, prefix)
    rows = _rows(1000, json_lines=fmt == "jsonl")
    if fmt == "quoted.csv":  # a cell the writer quotes: the csv module reads the file
        rows[500] = {**rows[500], "tag": 'a,"b'} if isinstance(rows[500], dict) else rows[500]
    data = {"jsonl": _jsonl, "csv": _csv, "quoted.csv": _csv, "parquet": _parquet}[fmt](rows)
    path = f"flowers.{fmt}"
    want_summary, want = _score(service, azurite, prefix, "byrows", path, data)
    got_summary, got = _score(service, azurite, prefix, "bycols", path, data)
    assert through_columns and all(through_columns)  # no chunk fell back to the rows
    if fmt.endswith("csv"):  # plain records parsed by Arrow at once; quoted ones by csv
        assert parsed_by_arrow == [fmt == "csv"] * len(parsed_by_arrow) and parsed_by_arrow
    assert (got_summary.rows, got_summary.errors) == (want_summary.rows, want_summary.errors)
    assert 5 <= want_summary.errors < 40
    expected, actual = _records(fmt, want), _records(fmt, got)
    assert len(actual) == len(expected) == 1000
    for i, (a, b) in enumerate(zip(expected, actual, strict=True)):
        assert _same(b, a), (i, a, b)  # errors word for word, numbers as numbers


def test_a_dataframes_own_csv_with_its_unnamed_index_column_scores(
    azurite: AzuriteInfo, example_models: dict[str, Path], tmp_path: Path
) -> None:
    """pandas' DataFrame.to_csv() writes the index first, under an empty name: no field's."""
    data = (
        b",sepal_length,sepal_width,petal_length,petal_width\n"
        b"0,5.1,3.5,1.4,0.2\n1,6.2,2.9,4.3,1.3\n2,7.7,3.0,6.1,2.3\n"
    )
    prefix = f"c{uuid.uuid4().hex[:10]}"
    service = _service(example_models["iris"], tmp_path, azurite, prefix)
    outputs = []
    for name in ("byrows", "bycols"):
        summary, written = _score(service, azurite, prefix, name, "frame.csv", data)
        assert (summary.rows, summary.errors) == (3, 0), written
        outputs.append(_records("csv", written))
    assert [r["label"] for r in outputs[0]] == ["0", "1", "2"]  # setosa, versicolor, virginica
    assert all(_same(b, a) for a, b in zip(*outputs, strict=True))


def test_a_parquet_string_that_is_not_utf8_fails_its_row_alone(
    azurite: AzuriteInfo, example_models: dict[str, Path], tmp_path: Path
) -> None:
    """Parquet does not check what a writer stored as a string: the columns' checks raised on
    it, and the whole file failed (an InternalError) where the row path fails the one row."""
    texts = [b"a", b"\xff\xfe", b"c"]
    offsets = np.cumsum([0] + [len(t) for t in texts]).astype(np.int32)
    tag = pa.Array.from_buffers(
        pa.string(), 3, [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(texts))]
    )
    flowers = {f: [5.1, 6.2, 7.7] for f in FEATURES}
    sink = io.BytesIO()
    pq.write_table(pa.table({**flowers, "tag": tag}), sink)
    prefix = f"c{uuid.uuid4().hex[:10]}"
    service = _service(example_models["iris"], tmp_path, azurite, prefix)
    for name in ("byrows", "bycols"):
        summary, written = _score(service, azurite, prefix, name, "odd.parquet", sink.getvalue())
        assert (summary.rows, summary.errors) == (3, 1), (name, summary)
        records = _records("parquet", written)
        assert [r["error"] is None for r in records] == [True, False, True], name
        assert "cannot be read" in records[1]["error"], name

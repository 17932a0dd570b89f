"""Batch-file rows in the payload log: sampled on their own (``Log(bulk_sample=...)``), each
with its file and row number, by the rows path and the columns path alike. In process, the
files in Azurite."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from azure.storage.blob import ContainerClient

from runtime.endpoint import Batch
from runtime.payload_log import Log
from tests.conftest import AzuriteInfo
from tests.models.onnx_builders import adder
from tests.services.pairs import by_columns, pairs, services


@pytest.mark.parametrize("columnar", [False, True], ids=["rows", "columns"])
def test_every_row_of_a_file_is_logged_with_its_number_and_a_bad_row_with_its_error(
    tmp_path: Path,
    azurite: AzuriteInfo,
    containers: tuple[ContainerClient, ContainerClient],
    columnar: bool,
) -> None:
    files, results = containers
    rows = pairs(40)
    rows[7] = {"x": [1.0], "y": [0.0, 0.0]}  # too short: that row's error
    text = "\n".join(json.dumps(r) for r in rows).encode()
    files.get_blob_client("in.jsonl").upload_blob(text)
    extra = {"predict": by_columns, "columnar": True} if columnar else {}
    app = services(
        adder(tmp_path / "adder.onnx"),
        tmp_path,
        {
            "AzureWebJobsStorage": azurite.connection_string,
            "MLFN_PAYLOAD_LOG": str(tmp_path / "logs"),
        },
        batch=Batch(files=files.container_name, results=results.container_name),
        log=Log(sample=0.0, bulk_sample=1.0),
        **extra,  # type: ignore[arg-type]
    )

    summary = asyncio.run(app.batch.score_blob("pairs", "in.jsonl", results.container_name))
    assert summary is not None and summary.rows == 40 and summary.errors == 1
    assert app.payload_log is not None
    app.payload_log.close()

    (file,) = (tmp_path / "logs").rglob("*.parquet")
    records = pq.read_table(file).to_pandas().sort_values("row")
    assert list(records["row"]) == list(range(40))
    assert set(records["request_id"]) == {"in.jsonl"} and set(records["source"]) == {"file"}
    bad = records[records["row"] == 7].iloc[0]
    assert bad["status"] == 422 and bad["error"] == "ValidationFailed"
    assert bad["input_x"] is None  # a refused row's values would not fit the column's type
    good = records[records["row"] == 3].iloc[0]
    assert good["input_x"].tolist() == [3.5, 6.0]
    assert good["prediction_sum"].tolist() == pytest.approx([3.75, 2.0])

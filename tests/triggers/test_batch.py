"""The batch-file trigger called as the worker calls it: with a ``BlobReference`` (container and
name) that the host sent instead of the blob's bytes."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import ContainerClient

from runtime import Batch
from runtime.config import Settings
from runtime.host.deferred import decode_blob, registry_for
from runtime.protocol import batch, jobs
from runtime.registration import build_app
from runtime.triggers.blob_reference import BlobReference
from tests.conftest import AzuriteInfo
from tests.support import make_app

ENDPOINT = """
from pydantic import BaseModel
from runtime import Batch, Endpoint, OnnxModel

class In(BaseModel):
    x: float

class Out(BaseModel):
    y: float

endpoint = Endpoint(In, Out, model=MODEL, batch=Batch(files="PREFIX-in", results="PREFIX-out"))

@endpoint.predict
def predict(rows: list[In], model: OnnxModel) -> list[Out]:
    return [Out(y=r.x * 2) for r in rows]
"""


def _decoded(container: str, name: str, etag: str) -> BlobReference:
    annotation = BlobReference
    properties = {"ETag": etag}
    found = decode_blob(
        registry_for(annotation), annotation, "blobTrigger", "AzureWebJobsStorage",
        container, name, {"Properties": (json.dumps(properties), "json")},
    )  # fmt: skip
    assert isinstance(found, BlobReference)
    return found


def test_a_reference_handed_over_again_scores_the_blob_s_current_version(
    tmp_path: Path, azurite: AzuriteInfo, example_models: dict[str, Path], isolated_imports: None
) -> None:
    # The Python worker for 3.9-3.12 caches what it decoded by container and name: an event for
    # an overwritten blob brings the reference of the first. The new version must be scored.
    prefix = f"t{uuid.uuid4().hex[:10]}"
    source = ENDPOINT.replace("MODEL", repr(str(example_models["iris"]))).replace("PREFIX", prefix)
    app_dir = make_app(tmp_path / "app", {"doubler": source})
    settings = Settings.from_mapping(
        {"AzureWebJobsStorage": azurite.connection_string, "MLFN_CACHE_DIR": str(tmp_path / "c")}
    )
    functions = {f.get_function_name(): f for f in build_app(app_dir / "functions", settings=settings).get_functions()}  # fmt: skip
    score_file = functions["doubler_batch"].get_user_function()
    inbox = ContainerClient.from_connection_string(azurite.connection_string, f"{prefix}-in")
    inbox.create_container()
    results = ContainerClient.from_connection_string(azurite.connection_string, f"{prefix}-out")
    reference = None
    summaries = []
    for rows in ([{"x": 1}], [{"x": 2}, {"x": 3}]):
        data = "\n".join(json.dumps(r) for r in rows).encode()
        etag = inbox.upload_blob("rows.jsonl", data, overwrite=True).get_blob_properties().etag
        # Decoded once, from the first event (its properties name the first version), as the
        # worker decodes it; the second event gets the same object back.
        reference = reference or _decoded(f"{prefix}-in", "rows.jsonl", etag)
        asyncio.run(score_file(reference))
        summary = json.loads(
            results.download_blob(batch.summary_path("rows.jsonl", etag)).readall()
        )
        summaries.append(summary)
    assert [(s["rows"], s["errors"]) for s in summaries] == [(1, 0), (2, 0)]
    lines = results.download_blob(summaries[1]["output"]).readall().decode().splitlines()
    assert [json.loads(line)["prediction"] for line in lines] == [{"y": 4.0}, {"y": 6.0}]


def _score_file(
    tmp_path: Path, azurite: AzuriteInfo, example_models: dict[str, Path]
) -> tuple[Any, ContainerClient, ContainerClient]:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    source = ENDPOINT.replace("MODEL", repr(str(example_models["iris"]))).replace("PREFIX", prefix)
    app_dir = make_app(tmp_path / "app", {"doubler": source})
    settings = Settings.from_mapping(
        {"AzureWebJobsStorage": azurite.connection_string, "MLFN_CACHE_DIR": str(tmp_path / "c")}
    )
    functions = {f.get_function_name(): f for f in build_app(app_dir / "functions", settings=settings).get_functions()}  # fmt: skip
    inbox = ContainerClient.from_connection_string(azurite.connection_string, f"{prefix}-in")
    inbox.create_container()
    results = ContainerClient.from_connection_string(azurite.connection_string, f"{prefix}-out")
    return functions["doubler_batch"].get_user_function(), inbox, results


def test_a_value_python_cannot_hold_in_a_column_never_read_costs_the_file_nothing(
    tmp_path: Path, azurite: AzuriteInfo, example_models: dict[str, Path], isolated_imports: None
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    score_file, inbox, results = _score_file(tmp_path, azurite, example_models)
    n = 10_000
    stamps = pa.array([0] * 8000 + [2**62] + [0] * (n - 8001), pa.timestamp("us"))  # year > 9999
    sink = io.BytesIO()
    pq.write_table(pa.table({"x": [float(i) for i in range(n)], "when": stamps}), sink)
    etag = inbox.upload_blob("rows.parquet", sink.getvalue()).get_blob_properties().etag
    asyncio.run(score_file(_decoded(inbox.container_name, "rows.parquet", etag)))
    summary = json.loads(results.download_blob(batch.summary_path("rows.parquet", etag)).readall())
    assert summary["error"] is None and (summary["rows"], summary["errors"]) == (n, 0), summary
    out = pq.read_table(io.BytesIO(results.download_blob(summary["output"]).readall()))
    assert out.column("y").to_pylist() == [2.0 * i for i in range(n)]


def test_a_file_that_fails_part_way_has_a_summary_that_agrees_with_its_output(
    tmp_path: Path, azurite: AzuriteInfo, example_models: dict[str, Path], isolated_imports: None
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    score_file, inbox, results = _score_file(tmp_path, azurite, example_models)
    sink = io.BytesIO()
    # Corrupt in its last row group: the slabs before it are scored and written first.
    rows = pa.table({"x": [float(i) for i in range(40_000)]})
    pq.write_table(rows, sink, row_group_size=10_000, compression="none")
    data = sink.getvalue()
    at = pq.ParquetFile(io.BytesIO(data)).metadata.row_group(3).column(0).data_page_offset
    cut = data[:at] + b"\xff" * 64 + data[at + 64 :]  # its page header
    etag = inbox.upload_blob("cut.parquet", cut).get_blob_properties().etag
    asyncio.run(score_file(_decoded(inbox.container_name, "cut.parquet", etag)))
    summary = json.loads(results.download_blob(batch.summary_path("cut.parquet", etag)).readall())
    assert summary["error"]["type"] == "FileUnreadable" and summary["output"] is None
    assert (summary["rows"], summary["errors"]) == (0, 0)  # no output: no rows in it


@pytest.mark.parametrize("container", ["azure-webjobs-hosts", "azure-webjobs-secrets"])
def test_the_host_s_own_containers_are_refused_as_batch_containers(container: str) -> None:
    # The claim checks' own rule (one function): with its receipts container as the batch
    # container, the local host would score its own receipts.
    assert jobs.is_host_container(container)
    for role in ("files", "results"):
        with pytest.raises(ValueError, match="belongs to the Functions host"):
            Batch(**{role: container})


def _refusing(code: str) -> Any:
    from azure.core.exceptions import HttpResponseError

    def commit(self: object, metadata: object = None) -> None:
        # As the storage SDK raises a refusal: the status and the service's error code, a
        # member of its StorageErrorCode where it has one (a plain string otherwise).
        from azure.storage.blob import StorageErrorCode

        known = code in StorageErrorCode.__members__.values()
        error = HttpResponseError(message=f"refused: {code}")
        error.status_code, error.reason = 400, "Bad Request"
        error.error_code = StorageErrorCode(code) if known else code  # type: ignore[attr-defined]
        raise error

    return commit


@pytest.mark.parametrize(
    ("code", "for_good"),
    [("InvalidUri", True), ("OutOfRangeInput", True), ("InvalidResourceName", True),
     ("Md5Mismatch", False), ("Crc64Mismatch", False), ("SomethingNew", False)],
)  # fmt: skip
def test_only_a_refusal_that_can_never_pass_ends_a_file_with_an_error_summary(
    tmp_path: Path,
    azurite: AzuriteInfo,
    example_models: dict[str, Path],
    isolated_imports: None,
    monkeypatch: pytest.MonkeyPatch,
    code: str,
    for_good: bool,
) -> None:
    from azure.core.exceptions import HttpResponseError

    from runtime.storage import blob_files

    score_file, inbox, results = _score_file(tmp_path, azurite, example_models)
    etag = inbox.upload_blob("rows.jsonl", b'{"x": 1}\n').get_blob_properties().etag
    monkeypatch.setattr(blob_files.BlockWriter, "commit", _refusing(code))
    reference = _decoded(inbox.container_name, "rows.jsonl", etag)
    if not for_good:  # a retry may pass: the host tries the file again
        with pytest.raises(HttpResponseError, match=code):
            asyncio.run(score_file(reference))
        assert not list(results.list_blobs())
        return
    asyncio.run(score_file(reference))
    summary = json.loads(results.download_blob(batch.summary_path("rows.jsonl", etag)).readall())
    assert summary["output"] is None and (summary["rows"], summary["errors"]) == (0, 0)
    assert summary["error"]["message"] == f"the storage refused the file's results for good: {code}"

"""The batch-file trigger invoked through the Functions worker's own code: a blob trigger's data
and metadata as the host sends them; the results land in the results container."""

from __future__ import annotations

import json

from azure.storage.blob import ContainerClient

from runtime.protocol import batch
from tests.conftest import AzuriteInfo
from tests.worker.conftest import FLOWER, VIRGINICA, needs_worker_code
from tests.worker.harness import Worker, failure

pytestmark = needs_worker_code


def test_the_worker_asks_the_host_for_the_batch_blob_by_reference(
    example_worker: Worker,
) -> None:
    # Without the flag the host reads the whole file into the worker before the function runs.
    bindings = [json.loads(raw) for raw in example_worker.functions["iris_batch"].raw_bindings]
    trigger = next(b for b in bindings if b["type"] == "blobTrigger")
    assert trigger["properties"] == {"SupportsDeferredBinding": True}
    assert trigger["source"] == "EventGrid"


def test_a_blob_version_is_scored_into_the_results_container(
    example_worker: Worker, azurite: AzuriteInfo
) -> None:
    content = b"\n".join(
        [json.dumps(FLOWER).encode(), b"{not json", json.dumps(VIRGINICA).encode()]
    )
    source = ContainerClient.from_connection_string(azurite.connection_string, "iris-batch")
    if not source.exists():
        source.create_container()
    blob = source.get_blob_client("worker/rows.jsonl")
    etag = blob.upload_blob(content, overwrite=True)["etag"]
    response = example_worker.blob(
        "iris_batch", "iris-batch", "worker/rows.jsonl", content, etag, blob.url
    )
    assert failure(response) is None
    assert response.return_value.WhichOneof("data") is None  # no $return, no output binding
    results = ContainerClient.from_connection_string(
        azurite.connection_string, "iris-batch-results"
    )
    summary = json.loads(
        results.download_blob(batch.summary_path("worker/rows.jsonl", etag)).readall()
    )
    assert (summary["rows"], summary["errors"], summary["etag"]) == (3, 1, etag)
    lines = results.download_blob(summary["output"]).readall().decode().splitlines()
    rows = [json.loads(line) for line in lines]
    assert rows[0]["prediction"]["label"] == "setosa"
    assert rows[1] == {"row": 1, "error": rows[1]["error"]}
    assert rows[1]["error"]["type"] == "BadRequest"
    assert rows[2]["prediction"]["label"] == "virginica"

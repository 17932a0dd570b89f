"""The batch-file trigger invoked through the Functions worker's own code: a blob trigger's data
and metadata as the host sends them; the results land in the results container."""

from __future__ import annotations

import json

from azure.storage.blob import ContainerClient

from runtime.protocol import batch
from tests.conftest import AzuriteInfo
from tests.worker.conftest import FLOWER, VIRGINICA, needs_worker_code
from tests.worker.harness import Worker, blob_data, failure

pytestmark = needs_worker_code


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
    data, metadata = blob_data("iris-batch", "worker/rows.jsonl", content, etag, blob.url)
    response = example_worker.invoke("iris_batch", data, metadata)
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

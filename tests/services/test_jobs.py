"""The jobs service decides what a queue message becomes: a result, an error result for a
message that can never succeed, or a raise the host retries. In process, against Azurite for
the claim checks; no host."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

from runtime.errors import MlfnError, ModelNotInStore
from runtime.models import registry
from runtime.protocol import jobs
from runtime.services import Services
from runtime.services.jobs import COLUMNS_FROM
from tests.conftest import AzuriteInfo
from tests.models.onnx_builders import adder
from tests.services.pairs import by_columns, pairs, services, sums


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return adder(tmp_path_factory.mktemp("models") / "adder.onnx")


@pytest.fixture
def app(model: Path, tmp_path: Path, azurite: AzuriteInfo) -> Services:
    return services(model, tmp_path, {"AzureWebJobsStorage": azurite.connection_string})


def _process(app: Services, body: bytes | str, message_id: str | None = "m-1") -> Any:
    data = body.encode() if isinstance(body, str) else body
    return asyncio.run(app.jobs.process("pairs", data, message_id))


def test_a_message_becomes_its_result_with_the_model_that_scored_it(app: Services) -> None:
    instances = pairs(3)
    result = _process(app, jobs.encode_request("job-1", instances))
    assert result.error is None
    doc = json.loads(result.text)
    assert doc["id"] == "job-1"
    assert [p["sum"] for p in doc["predictions"]] == sums(instances)
    assert doc["model"]["name"] == "pairs" and len(doc["model"]["sha256"]) == 64


@pytest.mark.parametrize(
    ("body", "job_id", "error"),
    [
        ("{not json", None, "BadRequest"),
        ('{"instances": []}', None, "BadRequest"),  # no id
        ('{"id": "j-2", "instances": {"x": 1}}', "j-2", "BadRequest"),
        ('{"id": "j-3", "instances": [], "instances_blob": "a/b"}', "j-3", "BadRequest"),
        ('{"id": "j-4", "instances": [{"x": [1, 2]}]}', "j-4", "ValidationFailed"),
        ('{"id": "j-5", "instances_blob": "not-a-path"}', "j-5", "BadRequest"),
        ('{"id": "j-6", "instances_blob": "azure-webjobs-hosts/x"}', "j-6", "BadRequest"),
        ('{"id": "j-7", "instances_blob": "requests/pairs/none.jsonl"}', "j-7", "InputBlobMissing"),
        ('{"id": "../etc", "instances": []}', "../etc", "BadRequest"),  # an id that names no file
    ],
)
def test_a_message_that_can_never_succeed_gets_an_error_result_not_a_retry(
    app: Services, body: str, job_id: str | None, error: str
) -> None:
    result = _process(app, body, message_id="queue-id-9")
    assert isinstance(result.error, MlfnError) and not result.error.retryable
    doc = json.loads(result.text)
    assert (doc["id"], doc["message_id"], doc["error"]["type"]) == (job_id, "queue-id-9", error)
    assert "predictions" not in doc


def test_a_claim_checked_message_is_read_from_its_blob_and_a_large_result_goes_to_one(
    app: Services, azurite: AzuriteInfo
) -> None:
    instances = pairs(3000)  # ~100 KB of predictions: over a queue message's room
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = f"c{uuid.uuid4().hex[:12]}"
    service.create_container(container)
    try:
        blob = service.get_blob_client(container, "in.jsonl")
        blob.upload_blob(jobs.encode_instances(instances))
        result = _process(app, jobs.encode_claim_check("big-1", f"{container}/in.jsonl"))
        assert result.error is None
        doc = json.loads(result.text)
        assert jobs.fits_in_message(result.text) and "predictions" not in doc
        assert doc["predictions_blob"] == jobs.result_blob("pairs", "big-1")
        container_name, path = jobs.split_blob_ref(doc["predictions_blob"])
        stored = service.get_blob_client(container_name, path).download_blob().readall()
        written = json.loads(stored)
        assert written["id"] == "big-1" and written["model"] == doc["model"]
        assert [p["sum"] for p in written["predictions"]] == sums(instances)
    finally:
        service.delete_container(container)


def test_a_claim_check_over_the_endpoints_request_limit_is_refused_unread(
    model: Path, tmp_path: Path, azurite: AzuriteInfo
) -> None:
    from runtime.endpoint import Limits

    small = services(
        model,
        tmp_path,
        {"AzureWebJobsStorage": azurite.connection_string},
        limits=Limits(max_request_bytes=1024),
    )
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = f"c{uuid.uuid4().hex[:12]}"
    service.create_container(container)
    try:
        data = jobs.encode_instances(pairs(100))
        service.get_blob_client(container, "in.jsonl").upload_blob(data)
        result = _process(small, jobs.encode_claim_check("big-2", f"{container}/in.jsonl"))
    finally:
        service.delete_container(container)
    doc = json.loads(result.text)
    assert doc["id"] == "big-2" and doc["error"]["type"] == "PayloadTooLarge"
    assert str(len(data)) in doc["error"]["message"]


def test_a_columnar_endpoint_answers_many_instances_as_it_answers_a_few(
    model: Path, tmp_path: Path
) -> None:
    # From COLUMNS_FROM instances a message is scored as columns, fewer through the batcher:
    # the answer is the same either way.
    app = services(model, tmp_path, predict=by_columns, columnar=True)
    few, many = pairs(COLUMNS_FROM - 1), pairs(COLUMNS_FROM, start=1000)
    for job_id, instances in (("few", few), ("many", many)):
        result = _process(app, jobs.encode_request(job_id, instances))
        assert result.error is None
        doc = json.loads(result.text)
        assert doc["id"] == job_id and doc["model"]["name"] == "pairs"
        assert [p["sum"] for p in doc["predictions"]] == sums(instances)


def test_a_model_missing_from_the_store_is_raised_for_the_host_to_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The failed load's memory, shortened: a message arriving within it waits it out first.
    monkeypatch.setattr(registry, "FAILED_LOAD_MEMORY_S", 0.2)
    app = services("./adder.onnx", tmp_path)
    with pytest.raises(ModelNotInStore):
        _process(app, jobs.encode_request("early", pairs(1)))


def test_a_message_arriving_while_a_failed_load_is_remembered_waits_then_really_tries(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the wait the second message would be refused with the first one's error, and
    spend one of its deliveries on a load nobody tried."""
    monkeypatch.setattr(registry, "FAILED_LOAD_MEMORY_S", 1.0)
    app = services("./adder.onnx", tmp_path)
    with pytest.raises(ModelNotInStore):
        _process(app, jobs.encode_request("early", pairs(1)))
    shutil.copy(model, tmp_path / "adder.onnx")  # uploaded moments after the failure
    assert app.predict.retry_in("pairs") > 0  # the failure is still being repeated
    result = _process(app, jobs.encode_request("later", pairs(2)))
    assert result.error is None
    assert [p["sum"] for p in json.loads(result.text)["predictions"]] == sums(pairs(2))

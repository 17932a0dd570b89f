"""The one builder of Azure Storage clients, and the claim-check payloads built on it, against
real Azurite: connection settings named in errors, create-if-missing, bounded failures."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import pytest

from runtime.config import Connection, Settings, storage_account
from runtime.errors import (
    BadRequest,
    ConfigError,
    InputBlobMissing,
    PayloadTooLarge,
    StoreUnavailable,
)
from runtime.protocol import jobs
from runtime.storage import clients
from runtime.storage.payloads import Payloads
from tests.conftest import AzuriteInfo


def _account(connection_string: str) -> Connection:
    return storage_account("AzureWebJobsStorage", connection_string)


def test_a_missing_connection_setting_is_named() -> None:
    with pytest.raises(ConfigError, match="setting JobsAccount is not set") as caught:
        clients.connection("JobsAccount", {"Other": "x"})
    assert caught.value.key == "JobsAccount"
    assert clients.connection("JobsAccount", {"JobsAccount": " conn "}).connection_string == "conn"


def test_a_malformed_connection_string_is_a_config_error_that_hides_it() -> None:
    with pytest.raises(ConfigError) as caught:
        clients.container(_account("AccountKey=secret;no-account"), "c", Settings())
    assert caught.value.key == "AzureWebJobsStorage" and "secret" not in caught.value.message


def test_creating_what_exists_is_fine(azurite: AzuriteInfo) -> None:
    name = f"q{uuid.uuid4().hex[:20]}"
    queue = clients.queue(_account(azurite.connection_string), name, Settings())
    clients.create_if_missing(queue.create_queue)
    clients.create_if_missing(queue.create_queue)
    queue.send_message("hello")
    assert [m.content for m in queue.peek_messages()] == ["hello"]
    queue.delete_queue()


def test_an_unreachable_account_is_unavailable_within_the_configured_bounds() -> None:
    dead = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=eA==;"
        "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;"
    )
    settings = Settings(
        storage_connection=_account(dead), store_connect_timeout_s=0.5, store_retries=1
    )
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="cannot be reached"):
        Payloads(settings).read_instances("inputs/a.jsonl", 1024)
    assert time.monotonic() - started < 15  # the SDK's own policy would back off for minutes


def test_claim_checked_instances_and_large_results_round_trip(
    azurite: AzuriteInfo, container: str, tmp_path: Path
) -> None:
    payloads = Payloads(Settings(storage_connection=_account(azurite.connection_string)))
    blob = clients.container(_account(azurite.connection_string), container, Settings())
    blob.upload_blob("in.jsonl", jobs.encode_instances([{"x": 1}, {"x": 2}]))
    assert payloads.read_instances(f"{container}/in.jsonl", 1024) == [{"x": 1}, {"x": 2}]
    with pytest.raises(InputBlobMissing) as missing:
        payloads.read_instances(f"{container}/nothing.jsonl", 1024)
    assert missing.value.status == 404
    with pytest.raises(BadRequest):
        payloads.read_instances("no-path", 1024)

    ref = payloads.write_result("iris", "job-1", '{"id": "job-1"}')
    assert ref == jobs.result_blob("iris", "job-1")
    again = payloads.write_result("iris", "job-1", '{"id": "job-1", "again": true}')
    assert again == ref  # a redelivered message rewrites the same blob
    container_name, path = jobs.split_blob_ref(ref)
    results = clients.container(_account(azurite.connection_string), container_name, Settings())
    assert results.download_blob(path).readall() == b'{"id": "job-1", "again": true}'


@pytest.mark.parametrize(
    ("ref", "allowed", "why"),
    [
        ("azure-webjobs-secrets/host.json", (), "belongs to the Functions host"),
        ("azure-webjobs-hosts/locks/x", (), "belongs to the Functions host"),
        ("$logs/blob/x", (), "is not a valid container name"),
        ("Bad_Name/x.jsonl", (), "is not a valid container name"),
        ("other/x.jsonl", ("inputs",), "is not one of MLFN_CLAIM_CHECK_CONTAINERS (inputs)"),
    ],
)
def test_claim_checks_never_read_the_hosts_containers_or_outside_the_allow_list(
    ref: str, allowed: tuple[str, ...], why: str
) -> None:
    payloads = Payloads(Settings(storage_connection=_account("UseDevelopmentStorage=true"),
                                 claim_check_containers=allowed))  # fmt: skip
    with pytest.raises(BadRequest, match=re.escape(why)) as caught:
        payloads.read_instances(ref, 1024)  # refused before any storage call
    assert not caught.value.retryable


def test_a_claim_check_over_the_endpoints_limit_is_refused_from_its_size(
    azurite: AzuriteInfo, container: str
) -> None:
    payloads = Payloads(Settings(storage_connection=_account(azurite.connection_string)))
    blob = clients.container(_account(azurite.connection_string), container, Settings())
    blob.upload_blob("big.jsonl", b'{"x": 1}\n' * 1000)  # 9 KB
    with pytest.raises(PayloadTooLarge) as caught:
        payloads.read_instances(f"{container}/big.jsonl", 1024)
    assert caught.value.status == 413 and caught.value.detail == {"size": 9000, "limit": 1024}

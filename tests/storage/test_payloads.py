"""Claim-check payloads held to the endpoint's request limit at its very edge, against real
Azurite: a blob of exactly the limit is read, one byte more is refused, stored or inflated."""

from __future__ import annotations

import gzip

import pytest
from azure.storage.blob import ContainerClient, ContentSettings

from runtime.config import Settings, storage_account
from runtime.errors import PayloadTooLarge
from runtime.protocol import jobs
from runtime.storage.payloads import Payloads
from tests.conftest import AzuriteInfo

LIMIT = 1024


def _instances_of_size(size: int) -> tuple[list[object], bytes]:
    """Instances and their JSON Lines of exactly ``size`` bytes (the last string pads it)."""
    instances: list[object] = [{"x": 1}, {"x": 2.5}, {"note": ""}]
    short = len(jobs.encode_instances(instances))
    instances[-1] = {"note": "n" * (size - short)}
    data = jobs.encode_instances(instances)
    assert len(data) == size
    return instances, data


def _payloads(azurite: AzuriteInfo) -> Payloads:
    account = storage_account("AzureWebJobsStorage", azurite.connection_string)
    return Payloads(Settings(storage_connection=account))


@pytest.mark.parametrize("encoding", [None, "gzip"])
def test_a_claim_check_of_exactly_the_limit_is_read_and_one_byte_more_is_refused(
    azurite: AzuriteInfo, container: str, encoding: str | None
) -> None:
    client = ContainerClient.from_connection_string(azurite.connection_string, container)
    settings = ContentSettings(content_encoding=encoding)
    payloads = _payloads(azurite)
    for path, size in (("at.jsonl", LIMIT), ("over.jsonl", LIMIT + 1)):
        _, data = _instances_of_size(size)
        stored = gzip.compress(data) if encoding else data
        client.upload_blob(path, stored, content_settings=settings)
    at, _ = _instances_of_size(LIMIT)
    assert payloads.read_instances(f"{container}/at.jsonl", LIMIT) == at
    with pytest.raises(PayloadTooLarge) as caught:
        payloads.read_instances(f"{container}/over.jsonl", LIMIT)
    assert caught.value.status == 413
    if encoding is None:  # told from the blob's size, before a byte is read
        assert caught.value.detail == {"size": LIMIT + 1, "limit": LIMIT}
    else:  # told as it inflates: the stored size is all there is to say
        assert f"inflates to more than this endpoint's limit of {LIMIT} bytes" in (
            caught.value.message
        )

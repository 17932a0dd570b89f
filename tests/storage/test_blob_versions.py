"""The storage room's answers about blob versions, against Azurite: what the batch service asks
of it without touching the SDK (runtime.storage.blob_files)."""

from __future__ import annotations

import base64
import json

import pytest
from azure.storage.blob import ContainerClient

from runtime.errors import CommitSuperseded, VersionChanged
from runtime.storage import blob_files
from tests.conftest import AzuriteInfo


def _container(azurite: AzuriteInfo, name: str) -> ContainerClient:
    return ContainerClient.from_connection_string(azurite.connection_string, name)


def test_the_current_version_of_a_blob_and_none_for_a_missing_one(
    azurite: AzuriteInfo, container: str
) -> None:
    blobs = _container(azurite, container)
    made = blobs.upload_blob("in.csv", b"a,b\r\n1,2\r\n")
    version = blob_files.current_version(made)
    assert version is not None
    assert version.etag == made.get_blob_properties().etag and version.etag.startswith('"')
    assert (version.size, version.content_encoding) == (10, None)
    assert blob_files.current_version(blobs.get_blob_client("missing.csv")) is None


def test_a_version_overwritten_while_it_is_read_is_version_changed(
    azurite: AzuriteInfo, container: str
) -> None:
    blob = _container(azurite, container).upload_blob("in.csv", b"x" * 100)
    version = blob_files.current_version(blob)
    assert version is not None
    reader = blob_files.open_version(blob, version.size, version.etag)
    blob.upload_blob(b"y" * 100, overwrite=True)
    with pytest.raises(VersionChanged), blob_files.version_errors():
        reader.read()


def test_a_commit_after_another_writers_is_commit_superseded(
    azurite: AzuriteInfo, container: str
) -> None:
    from azure.storage.blob import BlobBlock

    target = _container(azurite, container).get_blob_client("out.csv")
    # Another writer's id: base64, of the length the writer's own ids have, as Azure requires.
    block_id = base64.b64encode(b"0123456789abcdef-00000000").decode()
    target.stage_block(block_id, b"second\r\n")  # a writer's block, staged, not committed
    first = blob_files.BlockWriter(target, "text/csv")
    first.write(b"first\r\n")
    first.commit()  # the service drops every block this commit does not list
    first.close()
    with pytest.raises(CommitSuperseded), blob_files.version_errors():
        target.commit_block_list([BlobBlock(block_id=block_id)])
    assert target.download_blob().readall() == b"first\r\n"


def test_other_storage_errors_are_left_as_the_sdk_raised_them(
    azurite: AzuriteInfo, container: str
) -> None:
    from azure.core.exceptions import ResourceNotFoundError

    from runtime.storage import clients

    missing = _container(azurite, container).get_blob_client("missing.csv")
    with pytest.raises(ResourceNotFoundError) as caught, blob_files.version_errors():
        missing.download_blob().readall()
    assert clients.is_storage_error(caught.value)
    assert not clients.is_storage_error(ValueError("a bug of mlfn's"))


def test_a_json_document_is_written_whole_with_its_content_type(
    azurite: AzuriteInfo, container: str
) -> None:
    blob = _container(azurite, container).get_blob_client("summary.json")
    blob_files.write_json(blob, b'{"rows": 1, "errors": 0, "padding": "' + b"x" * 100 + b'"}')
    blob_files.write_json(blob, b'{"rows": 2}')  # written again: replaced, not appended to
    assert json.loads(blob.download_blob().readall()) == {"rows": 2}
    assert blob.get_blob_properties().content_settings.content_type == "application/json"

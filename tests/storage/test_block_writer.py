"""Results written as staged blocks, uploaded beside the writing (against Azurite): the blob is
the bytes written, in order, and a failed upload is raised, never a blob with a gap."""

from __future__ import annotations

import threading

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobClient, ContainerClient

from runtime.storage import blob_files
from tests.conftest import AzuriteInfo


def test_blocks_uploaded_beside_the_writing_make_the_bytes_written_in_order(
    azurite: AzuriteInfo, container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blob_files, "BLOCK_BYTES", 64 * 1024)
    blob = ContainerClient.from_connection_string(azurite.connection_string, container)
    target = blob.get_blob_client("out.csv")
    sink = blob_files.BlockWriter(target, "text/csv")
    written = b"".join(b"%07d,row\r\n" % i for i in range(60_000))  # 660 KB: 11 blocks
    for at in range(0, len(written), 50_000):  # pieces that do not fall on block bounds
        sink.write(written[at : at + 50_000])
    sink.commit({"rows": "60000"})
    sink.close()
    assert target.download_blob().readall() == written
    assert not [t for t in threading.enumerate() if t.name.startswith("mlfn-blocks")]


def test_a_failed_upload_is_raised_and_nothing_is_committed(
    azurite: AzuriteInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blob_files, "BLOCK_BYTES", 1024)
    target = BlobClient.from_connection_string(
        azurite.connection_string, "no-such-container", "out.csv"
    )
    sink = blob_files.BlockWriter(target, "text/csv")
    with pytest.raises(ResourceNotFoundError):
        for _ in range(10):  # more blocks than are uploaded at once: a write waits, and raises
            sink.write(b"x" * 1024)
        sink.commit()
    sink.close()

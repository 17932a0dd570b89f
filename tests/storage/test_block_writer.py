"""Results written as staged blocks, uploaded beside the writing (against Azurite): the blob is
the bytes written, in order, and a failed upload is raised, never a blob with a gap."""

from __future__ import annotations

import threading

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobClient, ContainerClient

from runtime.storage import blob_files
from tests.conftest import AzuriteInfo


def _writer(
    azurite: AzuriteInfo, container: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[BlobClient, blob_files.BlockWriter]:
    """A blob of ``container`` and a block writer of 64 KiB blocks to it."""
    monkeypatch.setattr(blob_files, "BLOCK_BYTES", 64 * 1024)
    blob = ContainerClient.from_connection_string(azurite.connection_string, container)
    target = blob.get_blob_client("out.csv")
    return target, blob_files.BlockWriter(target, "text/csv")


def test_blocks_uploaded_beside_the_writing_make_the_bytes_written_in_order(
    azurite: AzuriteInfo, container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    target, sink = _writer(azurite, container, monkeypatch)
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


def test_a_write_running_when_the_writer_is_closed_uploads_nothing_more(
    azurite: AzuriteInfo, container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A delivery cancelled midway closes its writer while a write still runs on its thread:
    # no block is staged after close, and no uploader thread is left.
    target, sink = _writer(azurite, container, monkeypatch)
    staged: list[bool] = []  # for each block staged: whether the writer was closed by then
    stage = target.stage_block

    def staging(block_id: str, data: bytes) -> None:
        staged.append(sink.closed)
        stage(block_id, data)

    monkeypatch.setattr(target, "stage_block", staging)
    writing = threading.Thread(target=_write_until_closed, args=(sink,))
    writing.start()
    while len(staged) < 3:  # uploads under way
        threading.Event().wait(0.01)
    sink.close()
    writing.join(timeout=30)
    assert not writing.is_alive()
    assert staged and not any(staged)
    assert not [t for t in threading.enumerate() if t.name.startswith("mlfn-blocks")]


def _write_until_closed(sink: blob_files.BlockWriter) -> None:
    with pytest.raises(ValueError, match="closed"):
        for _ in range(10_000):
            sink.write(b"z" * 16 * 1024)

"""Large blobs as files: read one version of a blob by ranges (seekable, so Parquet can read
its footer), write one as staged blocks committed at the end. Neither holds more than a
block or two in memory, whatever the blob's size.
"""

from __future__ import annotations

import base64
import io
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azure.storage.blob import BlobClient

BLOCK_BYTES = 4 * 1024 * 1024
READ_BYTES = 4 * 1024 * 1024


class BlobVersionReader(io.RawIOBase):
    """One version (``etag``) of a blob, read in ranges. If the blob is overwritten while it is
    read, the next read fails (``ResourceModifiedError``) instead of mixing two versions."""

    def __init__(self, blob: BlobClient, size: int, etag: str) -> None:
        self._blob = blob
        self._size = size
        self._etag = etag
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        from azure.core import MatchConditions

        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        data = self._blob.download_blob(
            offset=self._pos,
            length=want,
            etag=self._etag,
            match_condition=MatchConditions.IfNotModified,
            max_concurrency=1,
        ).readall()
        n = len(data)
        buffer[:n] = data
        self._pos += n
        return n


def open_version(blob: BlobClient, size: int, etag: str) -> io.BufferedReader:
    return io.BufferedReader(BlobVersionReader(blob, size, etag), buffer_size=READ_BYTES)


class BlockWriter(io.RawIOBase):
    """Writes a block blob as it is produced: every ``BLOCK_BYTES`` become a staged block; the
    blob appears, whole, when ``commit`` lists them. Block ids are unique to this writer, so
    two deliveries writing the same output at once never mix blocks: the last commit wins,
    complete. Blocks never committed are dropped by the service."""

    def __init__(self, blob: BlobClient, content_type: str) -> None:
        self._blob = blob
        self._content_type = content_type
        self._attempt = uuid.uuid4().hex[:16]
        self._buffer = bytearray()
        self._blocks: list[str] = []
        self.bytes_written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._buffer += view
        self.bytes_written += len(view)
        while len(self._buffer) >= BLOCK_BYTES:
            with memoryview(self._buffer) as whole:
                block = bytes(whole[:BLOCK_BYTES])  # one copy, not a slice and then a copy
            del self._buffer[:BLOCK_BYTES]
            self._stage(block)
        return len(view)

    def tell(self) -> int:
        return self.bytes_written

    def commit(self, metadata: dict[str, str] | None = None) -> None:
        from azure.storage.blob import BlobBlock, ContentSettings

        if self._buffer:
            self._stage(bytes(self._buffer))
            self._buffer.clear()
        self._blob.commit_block_list(
            [BlobBlock(block_id=b) for b in self._blocks],
            content_settings=ContentSettings(content_type=self._content_type),
            metadata=metadata,
        )

    def _stage(self, data: bytes) -> None:
        # Ids are base64 of the same length within a blob, as the service requires.
        raw = f"{self._attempt}-{len(self._blocks):08d}".encode()
        block_id = base64.b64encode(raw).decode()
        self._blob.stage_block(block_id, data)
        self._blocks.append(block_id)

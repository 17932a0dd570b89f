"""Large blobs as files: read one version of a blob by ranges (seekable, so Parquet can read
its footer), write one as staged blocks committed at the end. Neither holds more than a
block or two in memory, whatever the blob's size.

A blob's stored bytes are read as stored: a blob with a ``Content-Encoding`` is inflated here,
a piece at a time (never by the SDK, which inflates a whole download in memory), so a small
gzip bomb costs no more memory than the file it inflates to would.
"""

from __future__ import annotations

import base64
import io
import threading
import uuid
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, TYPE_CHECKING, Any

from runtime.errors import BadRequest, MlfnError, PayloadTooLarge

if TYPE_CHECKING:
    from azure.storage.blob import BlobClient

BLOCK_BYTES = 4 * 1024 * 1024
STAGING = 2  # blocks being uploaded while the writer fills the next
READ_BYTES = 4 * 1024 * 1024
INFLATE_INPUT_BYTES = 64 * 1024  # compressed bytes handed to zlib at once

# Content-Encodings inflated as they are read; zlib tells gzip from zlib ("deflate") itself.
INFLATED = ("gzip", "x-gzip", "deflate")
_AUTO_HEADER = 32 + zlib.MAX_WBITS


class UnsupportedEncoding(MlfnError):
    """A blob stored with a ``Content-Encoding`` that cannot be read here: it never will be."""

    status = 415

    def __init__(self, what: str, encoding: str, why: str) -> None:
        super().__init__(
            f"{what} is stored with Content-Encoding {encoding!r}, {why}; upload it "
            "without a Content-Encoding",
            detail={"content_encoding": encoding},
        )


class InflatedTooLarge(PayloadTooLarge):
    """A compressed blob inflates past the limit: told as soon as the limit is passed, with
    the stored size beside it (the inflated size is never learnt)."""

    def __init__(self, stored: int, limit: int, encoding: str) -> None:
        MlfnError.__init__(
            self,
            f"the blob of {stored} bytes (Content-Encoding {encoding!r}) inflates to more than "
            f"this endpoint's limit of {limit} bytes",
            detail={"size": stored, "limit": limit, "content_encoding": encoding},
        )

    @property
    def type(self) -> str:
        return PayloadTooLarge.__name__


def encoding_of(content_encoding: str | None) -> str | None:
    """A blob's Content-Encoding, None for none (``identity`` is none)."""
    encoding = (content_encoding or "").strip().lower()
    return None if encoding in ("", "identity") else encoding


def inflating(source: IO[bytes], encoding: str, what: str) -> io.BufferedReader:
    """``source``'s bytes inflated as they are read (``encoding`` one of ``INFLATED``): no
    read returns more than it was asked for, so a reader's own bounds hold on the inflated
    bytes. Other encodings raise ``UnsupportedEncoding``."""
    if encoding not in INFLATED:
        known = ", ".join(INFLATED)
        raise UnsupportedEncoding(what, encoding, f"which cannot be read (only {known} can)")
    return io.BufferedReader(_Inflating(source, encoding, what), buffer_size=READ_BYTES)


def inflate_bounded(data: bytes, encoding: str, limit: int, what: str) -> bytes:
    """``data`` inflated, refused (``InflatedTooLarge``) as soon as it passes ``limit``."""
    inflated = inflating(io.BytesIO(data), encoding, what).read(limit + 1)
    if len(inflated) > limit:
        raise InflatedTooLarge(len(data), limit, encoding)
    return inflated


class _Inflating(io.RawIOBase):
    def __init__(self, source: IO[bytes], encoding: str, what: str) -> None:
        self._source = source
        self._encoding = encoding
        self._what = what
        self._inflater = zlib.decompressobj(_AUTO_HEADER)
        self._input = b""
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._done:
            if not self._input:
                self._input = self._source.read(INFLATE_INPUT_BYTES)
                if not self._input and not self._inflater.eof:
                    raise self._unreadable("it ends before its compressed data does")
            try:
                out = self._inflater.decompress(self._input, len(buffer))
            except zlib.error as exc:
                raise self._unreadable(str(exc)) from None
            self._input = self._inflater.unconsumed_tail
            if self._inflater.eof:
                self._next_member()
            if out:
                n = len(out)
                buffer[:n] = out
                return n
        return 0

    def _next_member(self) -> None:
        """After one gzip member, another may follow (concatenated gzip files are one)."""
        rest = self._inflater.unused_data or self._source.read(INFLATE_INPUT_BYTES)
        if not rest:
            self._done = True
            return
        self._inflater = zlib.decompressobj(_AUTO_HEADER)
        self._input = rest

    def _unreadable(self, why: str) -> BadRequest:
        return BadRequest(
            f"{self._what} cannot be inflated as its Content-Encoding {self._encoding!r} "
            f"says: {why}",
            detail={"content_encoding": self._encoding},
        )


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
            # The stored bytes: the SDK would inflate a Content-Encoding's range whole.
            decompress=False,
        ).readall()
        n = len(data)
        if n > want:  # never, for stored bytes; a short read is what a file may give
            raise OSError(f"asked the storage for {want} bytes, got {n}")
        buffer[:n] = data
        self._pos += n
        return n


def open_version(
    blob: BlobClient,
    size: int,
    etag: str,
    content_encoding: str | None = None,
    seekable: bool = False,
) -> IO[bytes]:
    """One version of a blob as a file of the bytes it holds: inflated when it is stored with
    a Content-Encoding, a piece at a time. ``seekable``: the reader must seek (Parquet), which
    an encoded blob cannot."""
    raw = io.BufferedReader(BlobVersionReader(blob, size, etag), buffer_size=READ_BYTES)
    encoding = encoding_of(content_encoding)
    if encoding is None:
        return raw
    what = f"blob {blob.blob_name!r}"
    if seekable:
        raise UnsupportedEncoding(
            what, encoding, "and this format is read by seeking, which a compressed blob "
            "cannot do (Parquet compresses its own columns)"
        )  # fmt: skip
    return inflating(raw, encoding, what)


class BlockWriter(io.RawIOBase):
    """Writes a block blob as it is produced: every ``BLOCK_BYTES`` become a staged block; the
    blob appears, whole, when ``commit`` lists them. Block ids are unique to this writer, so
    two deliveries writing the same output at once never mix blocks: the last commit wins,
    complete. Blocks never committed are dropped by the service.

    Blocks are uploaded on threads of the writer's own, up to ``STAGING`` at once, while the
    caller goes on writing (a write waits while that many are in flight); a failed upload
    raises from a later ``write`` or from ``commit``. Once ``close`` is called (a delivery
    cancelled midway, say) nothing more is uploaded, even by a write still running."""

    def __init__(self, blob: BlobClient, content_type: str) -> None:
        self._blob = blob
        self._content_type = content_type
        self._attempt = uuid.uuid4().hex[:16]
        self._buffer = bytearray()
        self._blocks: list[str] = []
        self._staging: deque[Future[Any]] = deque()
        self._uploader: ThreadPoolExecutor | None = None
        self._closing = threading.Lock()  # close() against a write on another thread
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
        while self._staging:
            self._staging.popleft().result()
        self._blob.commit_block_list(
            [BlobBlock(block_id=b) for b in self._blocks],
            content_settings=ContentSettings(content_type=self._content_type),
            metadata=metadata,
        )

    def close(self) -> None:
        """Stop uploading: blocks not yet staged are dropped (a committed blob is whole)."""
        with self._closing:
            uploader, self._uploader = self._uploader, None
            if uploader is not None:  # uploads not started are dropped before it is closed
                uploader.shutdown(wait=False, cancel_futures=True)
            super().close()
        if uploader is not None:
            uploader.shutdown(wait=True)

    def _stage(self, data: bytes) -> None:
        # Ids are base64 of the same length within a blob, as the service requires.
        raw = f"{self._attempt}-{len(self._blocks):08d}".encode()
        block_id = base64.b64encode(raw).decode()
        with self._closing:
            if self.closed:
                raise ValueError("the block writer is closed: nothing more is uploaded")
            if self._uploader is None:
                self._uploader = ThreadPoolExecutor(STAGING, thread_name_prefix="mlfn-blocks")
            self._staging.append(self._uploader.submit(self._blob.stage_block, block_id, data))
        self._blocks.append(block_id)
        while len(self._staging) > STAGING:
            self._staging.popleft().result()

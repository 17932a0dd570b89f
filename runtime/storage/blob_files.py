"""Large blobs as files: read one version of a blob by ranges (seekable, so Parquet can read
its footer), write one as staged blocks committed at the end. Neither holds more than a
block or two in memory, whatever the blob's size. ``version_errors`` says what went wrong with
either in mlfn's words; a small JSON document is written whole (``write_json``).

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
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from runtime.errors import (
    BadRequest,
    CommitSuperseded,
    InflatedTooLarge,
    StorageRefused,
    UnsupportedEncoding,
    VersionChanged,
)

if TYPE_CHECKING:
    from azure.storage.blob import BlobClient

BLOCK_BYTES = 4 * 1024 * 1024
STAGING = 2  # blocks being uploaded while the writer fills the next
READ_BYTES = 4 * 1024 * 1024
INFLATE_INPUT_BYTES = 64 * 1024  # compressed bytes handed to zlib at once

# Content-Encodings inflated as they are read; zlib tells gzip from zlib ("deflate") itself.
INFLATED = ("gzip", "x-gzip", "deflate")
_AUTO_HEADER = 32 + zlib.MAX_WBITS

# What the storage answers for the request itself (a name, a size, a header), so for every
# retry alike. Any other refusal (Md5Mismatch, Crc64Mismatch: bytes damaged on the way; a code
# not known here) may pass on a retry.
REFUSED_FOR_GOOD = frozenset(
    {
        "InvalidResourceName",  # a name Azure does not take
        "InvalidUri",  # a name too long, or of too many parts, for a URL of Azure's
        "OutOfRangeInput",  # a name, or another input, past Azure's limits
        "InvalidBlobOrBlock",  # a block over Azure's size
        "BlockListTooLong",
        "BlockCountExceedsLimit",  # over 50,000 blocks: past Azure's largest blob
        "RequestBodyTooLarge",
        "InvalidMetadata",
        "MetadataTooLarge",
        "InvalidHeaderValue",
    }
)


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


@dataclass(frozen=True)
class BlobVersion:
    """What reading one version of a blob needs to know of it."""

    etag: str  # as the service gives it, in quotes
    size: int
    content_encoding: str | None


def current_version(blob: BlobClient) -> BlobVersion | None:
    """The blob's current version; None when there is no such blob."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        props = blob.get_blob_properties()
    except ResourceNotFoundError:
        return None
    encoding = props.content_settings.content_encoding if props.content_settings else None
    return BlobVersion(str(props.etag), int(props.size), encoding)


@contextmanager
def version_errors() -> Iterator[None]:
    """What the storage answers a version read or a block write, in mlfn's words: the version
    overwritten meanwhile (``VersionChanged``), another writer's commit first
    (``CommitSuperseded``), a request no retry can pass (``StorageRefused``). Anything else
    the storage did is left as it is: a retry may cure it (``clients.is_storage_error``)."""
    from azure.core.exceptions import HttpResponseError, ResourceModifiedError

    try:
        yield
    except ResourceModifiedError:
        raise VersionChanged from None
    except HttpResponseError as exc:
        code = getattr(exc, "error_code", None)
        code = str(getattr(code, "value", code))  # the SDK may give its own enum
        if code == "InvalidBlockList":
            # A commit drops every block it does not list: another writer's commit did.
            raise CommitSuperseded from None
        if code in REFUSED_FOR_GOOD:
            raise StorageRefused(code) from exc
        raise


def upload(
    blob: BlobClient,
    source: IO[bytes],
    length: int,
    progress: Callable[[int, int | None], None],
    content_encoding: str | None = None,
) -> dict[str, Any]:
    """``source`` uploaded whole as ``blob`` (replacing it), ``progress`` told the bytes sent
    so far; ``content_encoding`` stored with it (``gzip``: inflated as it is read)."""
    from azure.storage.blob import ContentSettings

    settings = ContentSettings(content_encoding=content_encoding) if content_encoding else None
    made: dict[str, Any] = blob.upload_blob(
        source, overwrite=True, length=length, progress_hook=progress, content_settings=settings
    )
    return made


def write_json(blob: BlobClient, data: bytes) -> None:
    """A JSON document written whole as ``blob`` (replacing it: a document written again is
    written whole, never appended to)."""
    from azure.storage.blob import ContentSettings

    blob.upload_blob(
        data, overwrite=True, content_settings=ContentSettings(content_type="application/json")
    )

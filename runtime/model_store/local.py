"""Models that are files on this machine (plain paths and ``file://`` URIs)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from runtime.errors import ModelNotInStore, StoreConflict
from runtime.model_store.base import Progress, StoredObject


class LocalFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.uri = path.as_uri()

    def local_path(self) -> Path | None:
        return self.path

    def stat(self) -> StoredObject:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            raise ModelNotInStore(self.uri) from None
        return StoredObject(self.uri, st.st_size, _etag(st))

    def download(
        self, into: BinaryIO, if_none_match: str | None = None, progress: Progress | None = None
    ) -> StoredObject | None:
        info = self.stat()
        if if_none_match is not None and if_none_match == info.etag:
            return None
        with self.path.open("rb") as src:
            shutil.copyfileobj(src, into, 1024 * 1024)
        return info

    def upload(self, path: Path) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, self.path)

    def read(
        self, max_bytes: int, if_none_match: str | None = None
    ) -> tuple[bytes, StoredObject] | None:
        try:
            src = self.path.open("rb")
        except FileNotFoundError:
            raise ModelNotInStore(self.uri) from None
        with src:
            # The open file's own ETag: a write replaces the path, never these bytes.
            etag = _etag(os.fstat(src.fileno()))
            if if_none_match is not None and if_none_match == etag:
                return None
            data = src.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise ValueError(f"{self.uri} holds more than {max_bytes} bytes")
        return data, StoredObject(self.uri, len(data), etag)

    def write(self, data: bytes, if_match: str | None) -> StoredObject:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            try:
                old: os.stat_result | None = self.path.stat()
            except FileNotFoundError:
                old = None
            if if_match is None and old is not None:
                raise StoreConflict(self.uri, None)
            if if_match is not None and (old is None or _etag(old) != if_match):
                raise StoreConflict(self.uri, if_match)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
            try:
                # mkstemp's 0600 would hide the document from readers running as others.
                os.fchmod(fd, 0o644 if old is None else stat.S_IMODE(old.st_mode))
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                # The filesystem stamps mtimes from a coarse clock (a kernel tick) and a freed
                # inode number comes back at once, so versions two writes apart could share
                # (inode, mtime, size): a fine mtime past the last version's keeps ETags new.
                stamp = time.time_ns() if old is None else max(time.time_ns(), old.st_mtime_ns + 1)
                os.utime(tmp, ns=(stamp, stamp))
                os.replace(tmp, self.path)
                _sync_folder(self.path.parent)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            return StoredObject(self.uri, len(data), _etag(self.path.stat()))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive lock on a sibling ``NAME.lock`` across processes, held while a write
        compares ETags and replaces the file. The document itself cannot carry the lock: each
        write replaces it with a new file."""
        fd = os.open(self.path.with_name(f"{self.path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock


def _etag(st: os.stat_result) -> str:
    # The inode too: os.replace gives each written version a new file, and mtime alone is
    # only as fine as the filesystem's clock.
    return f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"


def _sync_folder(folder: Path) -> None:
    # The replace is a change to the folder: without this a crash could bring back the old
    # version after a writer was told its change was made.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

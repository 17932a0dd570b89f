"""Models that are files on this machine (plain paths and ``file://`` URIs)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import BinaryIO

from runtime.errors import ModelNotInStore
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
        return StoredObject(self.uri, st.st_size, f"{st.st_mtime_ns:x}-{st.st_size:x}")

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

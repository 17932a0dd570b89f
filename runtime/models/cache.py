"""The disk cache: model files downloaded once per machine, written atomically."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from runtime.digest import sha256_file
from runtime.errors import IntegrityError, StoreUnavailable
from runtime.store import ModelSource


@dataclass(frozen=True)
class CachedFile:
    """A model file on local disk and how it got there."""

    path: Path
    sha256: str
    size: int
    downloaded: bool
    seconds: float


class DiskCache:
    """Model files under ``root`` (``MLFN_CACHE_DIR``), one folder per source URI.

    A download goes to a temporary file in the target folder and is renamed into place only
    once its size (and pinned digest) check out, so readers never see a partial file.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def fetch(self, source: ModelSource, expected_sha256: str | None = None) -> CachedFile:
        started = time.perf_counter()
        local = source.local_path()
        if local is not None:
            size = source.stat().size
            digest = sha256_file(local)
            _check_digest(source.uri, expected_sha256, digest)
            return CachedFile(local, digest, size, False, time.perf_counter() - started)

        target = self._path_for(source.uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".part-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                info = source.download(out)
                out.flush()
                os.fsync(out.fileno())
            size = tmp.stat().st_size
            if size != info.size:
                raise StoreUnavailable(
                    f"download of {source.uri} was cut short: {size} of {info.size} bytes",
                    detail={"uri": source.uri},
                )
            digest = sha256_file(tmp)
            _check_digest(source.uri, expected_sha256, digest)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return CachedFile(target, digest, size, True, time.perf_counter() - started)

    def _path_for(self, uri: str) -> Path:
        key = hashlib.sha256(uri.encode()).hexdigest()[:32]
        return self.root / key / (uri.rsplit("/", 1)[-1] or "model.onnx")


def _check_digest(uri: str, expected: str | None, actual: str) -> None:
    if expected is not None and expected != actual:
        raise IntegrityError(uri, expected, actual)

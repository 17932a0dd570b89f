"""The disk cache: model files downloaded once per machine, verified, written atomically.

Layout under ``MLFN_CACHE_DIR``: ``blobs/<sha256>`` holds content (so two URIs with the same
bytes share one file), ``index/<key>.json`` maps a source URI to the ETag and digest last seen,
``locks/<key>.lock`` makes worker processes of one instance share a download.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime import telemetry
from runtime.digest import sha256_file
from runtime.errors import (
    CacheUnavailable,
    ConfigError,
    IntegrityError,
    ModelLoadTimeout,
    StoreUnavailable,
)
from runtime.model_store import ModelSource
from runtime.model_store.base import Progress

log = logging.getLogger("mlfn.cache")

SHA256 = re.compile(r"[0-9a-f]{64}")
# A temporary file older than this has no writer left (a download holds the model's file lock
# and is bounded by MLFN_LOAD_TIMEOUT_S); one from a killed process is swept at start.
STALE_AFTER_S = 3600.0

HIT_LOCAL = "local"  # the store is this machine's disk: nothing to cache
MISS = "miss"  # downloaded
REVALIDATED = "revalidated"  # the store confirmed the cached ETag: nothing downloaded
STALE = "stale"  # the store could not be reached; a verified cached copy was used


@dataclass(frozen=True)
class CachedFile:
    """A model file on local disk and how it got there."""

    path: Path
    sha256: str
    size: int
    outcome: str
    downloaded_bytes: int
    fetch_s: float
    verify_s: float
    etag: str | None = None  # the store's version of these bytes, for later revalidation


def not_private(status: os.stat_result) -> str | None:
    """Why a folder (by its ``stat``) is not this user's alone: another user owns it, or
    others may write to it; None when it is, or where the system has no owners (Windows).
    What is read from such a folder (a model, an app's code) is whatever someone else put
    there."""
    getuid = getattr(os, "getuid", None)
    if getuid is None:
        return None
    if status.st_uid != getuid():
        return f"it belongs to uid {status.st_uid}"
    if status.st_mode & 0o022:
        return f"others may write to it (mode {status.st_mode & 0o777:o})"
    return None


class DiskCache:
    def __init__(self, root: Path, lock_timeout_s: float = 600.0) -> None:
        self.root = root
        self._lock_timeout_s = lock_timeout_s
        self._prepared = False

    def fetch(
        self,
        source: ModelSource,
        expected_sha256: str | None = None,
        progress: Progress | None = None,
    ) -> CachedFile:
        local = source.local_path()
        if local is not None:
            started = time.perf_counter()
            info = source.stat()
            with telemetry.current().span("mlfn.model.verify"):
                digest = sha256_file(local)
            _check_digest(source.uri, expected_sha256, digest)
            verify_s = time.perf_counter() - started
            return CachedFile(local, digest, info.size, HIT_LOCAL, 0, 0.0, verify_s, info.etag)
        key = hashlib.sha256(source.uri.encode()).hexdigest()[:32]
        self._prepare()
        try:
            with self._locked(key, source.uri):
                return self._fetch_remote(source, key, expected_sha256, progress)
        except OSError as exc:  # the cache's own disk: full, read-only, gone
            raise CacheUnavailable(self.root, exc) from exc

    def _prepare(self) -> None:
        """Once per process: the cache folder made private (0700) or refused when someone
        else owns it (another user could plant or swap models there), and what killed
        processes left half-written swept away."""
        if self._prepared:
            return
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            status = self.root.stat()
        except OSError as exc:
            raise CacheUnavailable(self.root, exc) from exc
        getuid = getattr(os, "getuid", None)
        if getuid is not None and status.st_uid == getuid() and status.st_mode & 0o077:
            self.root.chmod(0o700)
            status = self.root.stat()
        reason = not_private(status)
        if reason is not None:
            raise ConfigError(
                "MLFN_CACHE_DIR", str(self.root), f"a folder this user owns ({reason})"
            )
        cutoff = time.time() - STALE_AFTER_S
        for pattern in ("tmp/download-*", "index/*.tmp"):
            for leftover in self.root.glob(pattern):
                with contextlib.suppress(OSError):
                    if leftover.stat().st_mtime < cutoff:
                        leftover.unlink()
        self._prepared = True

    def _fetch_remote(
        self, source: ModelSource, key: str, expected: str | None, progress: Progress | None
    ) -> CachedFile:
        started = time.perf_counter()
        tel = telemetry.current()
        entry = self._read_index(key)
        with tel.span("mlfn.model.verify") if entry else telemetry.NOOP_SPAN:  # cached copy
            cached = self._verified(entry, expected)
        verify_s = time.perf_counter() - started
        tmp_dir = self.root / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, prefix="download-")
        tmp = Path(tmp_name)
        try:
            fetch_started = time.perf_counter()
            try:
                with os.fdopen(fd, "wb") as out, tel.span("mlfn.model.download") as span:
                    etag = cached["etag"] if cached else None
                    info = source.download(out, if_none_match=etag, progress=progress)
                    out.flush()
                    os.fsync(out.fileno())
                    span.set("mlfn.model.unchanged", info is None)
            except StoreUnavailable as exc:
                if cached is None:
                    raise
                log.warning(
                    "store unavailable, serving the verified cached copy of %s: %s",
                    source.uri,
                    exc.message,
                )
                return self._hit(cached, STALE, time.perf_counter() - fetch_started, verify_s)
            fetch_s = time.perf_counter() - fetch_started
            if info is None:
                assert cached is not None
                return self._hit(cached, REVALIDATED, fetch_s, verify_s)
            size = tmp.stat().st_size
            if size != info.size:
                raise StoreUnavailable(
                    f"download of {source.uri} was cut short: {size} of {info.size} bytes",
                    detail={"uri": source.uri},
                )
            verify_started = time.perf_counter()
            with tel.span("mlfn.model.verify"):
                digest = sha256_file(tmp)
                _check_digest(source.uri, expected, digest)
            target = self._blob_path(digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
            self._write_index(
                key, {"uri": source.uri, "etag": info.etag, "sha256": digest, "size": size}
            )
            if cached and cached["sha256"] != digest:
                self._collect(cached["sha256"])
            verify_s += time.perf_counter() - verify_started
            return CachedFile(target, digest, size, MISS, size, fetch_s, verify_s, info.etag)
        finally:
            tmp.unlink(missing_ok=True)

    def _verified(
        self, entry: dict[str, Any] | None, expected: str | None
    ) -> dict[str, Any] | None:
        """The index entry if its content file is whole (size and digest), else None."""
        if entry is None:
            return None
        path = self._blob_path(entry["sha256"])
        try:
            if path.stat().st_size != entry["size"]:
                raise ValueError("size")
            if sha256_file(path) != entry["sha256"]:
                raise ValueError("digest")
        except (OSError, ValueError) as exc:
            log.warning("cached copy of %s is damaged (%s); fetching it again", entry["uri"], exc)
            path.unlink(missing_ok=True)
            return None
        if expected is not None and entry["sha256"] != expected:
            return None  # the pin changed: the cached bytes are not the ones wanted
        return entry

    def _hit(
        self, entry: dict[str, Any], outcome: str, fetch_s: float, verify_s: float
    ) -> CachedFile:
        path = self._blob_path(entry["sha256"])
        return CachedFile(
            path, entry["sha256"], entry["size"], outcome, 0, fetch_s, verify_s, entry["etag"]
        )

    def _blob_path(self, digest: str) -> Path:
        if not SHA256.fullmatch(digest):  # it becomes a file name: never a path of its own
            raise ValueError(f"not a sha256 digest: {digest[:80]!r}")
        return self.root / "blobs" / digest

    def _index_path(self, key: str) -> Path:
        return self.root / "index" / f"{key}.json"

    def _read_index(self, key: str) -> dict[str, Any] | None:
        try:
            entry: dict[str, Any] = json.loads(self._index_path(key).read_text())
        except (OSError, ValueError):
            return None
        return entry if _well_formed(entry) else None

    def _write_index(self, key: str, entry: dict[str, Any]) -> None:
        path = self._index_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entry))
        os.replace(tmp, path)

    def _collect(self, digest: str) -> None:
        """Delete content no index entry refers to any more (an old version of a model)."""
        for index in (self.root / "index").glob("*.json"):
            with contextlib.suppress(OSError, ValueError, AttributeError):
                if json.loads(index.read_text()).get("sha256") == digest:
                    return
        self._blob_path(digest).unlink(missing_ok=True)

    @contextlib.contextmanager
    def _locked(self, key: str, uri: str) -> Iterator[None]:
        from filelock import FileLock, Timeout

        lock_dir = self.root / "locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(str(lock_dir / f"{key}.lock"), timeout=self._lock_timeout_s):
                yield
        except Timeout:
            raise ModelLoadTimeout(uri, self._lock_timeout_s) from None


def _well_formed(entry: Any) -> bool:
    """An index entry as this module writes it; anything else (a crafted or damaged file) is
    ignored, and the model fetched again."""
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("uri"), str)
        and isinstance(entry.get("sha256"), str)
        and SHA256.fullmatch(entry["sha256"]) is not None
        and isinstance(entry.get("size"), int)
        and entry["size"] >= 0
        and isinstance(entry.get("etag"), str | None)
    )


def _check_digest(uri: str, expected: str | None, actual: str) -> None:
    if expected is not None and expected != actual:
        raise IntegrityError(uri, expected, actual)

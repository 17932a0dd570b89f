"""The model store interface: where the bytes of a model come from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes in all) as a transfer goes on."""


@dataclass(frozen=True)
class StoredObject:
    """What a store says about one object: enough to cache and revalidate it."""

    uri: str
    size: int
    etag: str | None


class ModelSource(Protocol):
    """One model object in one store. Implementations raise ``ModelNotInStore`` when it does
    not exist and ``StoreUnavailable`` when the store cannot be reached in time."""

    uri: str

    def local_path(self) -> Path | None:
        """The object as a file already on this machine, or None if it must be downloaded."""
        ...

    def stat(self) -> StoredObject: ...

    def download(
        self, into: BinaryIO, if_none_match: str | None = None, progress: Progress | None = None
    ) -> StoredObject | None:
        """Stream the object's bytes into ``into`` and describe them. With ``if_none_match``
        (an ETag), return None without writing anything when the object still has that ETag."""
        ...

    def read(
        self, max_bytes: int, if_none_match: str | None = None
    ) -> tuple[bytes, StoredObject] | None:
        """The whole object, a small document (a release), and its description (ETag); None
        when it still has ETag ``if_none_match`` (nothing is transferred). ``ModelNotInStore``
        when it does not exist; ``ValueError`` when it holds more than ``max_bytes`` (nothing
        past the limit is read into memory)."""
        ...

    def write(self, data: bytes, if_match: str | None) -> StoredObject:
        """Replace the object with ``data`` only if it still has ETag ``if_match`` (None: only
        if it does not exist yet), atomically; its new description. ``StoreConflict`` when
        the condition fails, so two writers cannot undo each other's change."""
        ...

"""Models in Azure Blob Storage (``az://CONTAINER/PATH``), Azurite included."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from runtime.azure_storage import NotFound, container_client, storage_errors
from runtime.config import Settings
from runtime.digest import sha256_file
from runtime.errors import ModelNotInStore
from runtime.store.base import StoredObject

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

T = TypeVar("T")
ProgressFn = Callable[[int, int], None]


class AzureBlob:
    def __init__(self, container: str, blob: str, settings: Settings) -> None:
        if not container or not blob:
            raise ValueError(f"az:// URIs need a container and a path: az://{container}/{blob}")
        self.container = container
        self.blob = blob
        self.uri = f"az://{container}/{blob}"
        self._settings = settings

    def local_path(self) -> Path | None:
        return None

    def stat(self) -> StoredObject:
        props = self._call(lambda c: c.get_blob_client(self.blob).get_blob_properties())
        return StoredObject(self.uri, int(props.size), str(props.etag))

    def download(self, into: BinaryIO) -> StoredObject:
        def run(container: ContainerClient) -> StoredObject:
            downloader = container.get_blob_client(self.blob).download_blob(max_concurrency=4)
            downloader.readinto(into)
            return StoredObject(self.uri, int(downloader.size), str(downloader.properties.etag))

        return self._call(run)

    def upload(self, path: Path, on_progress: ProgressFn | None = None) -> str:
        """Upload a file here, creating the container if needed; the file's sha256 is stored
        as blob metadata and returned."""
        digest = sha256_file(path)
        total = path.stat().st_size

        def run(container: ContainerClient) -> None:
            if not container.exists():
                container.create_container()
            with path.open("rb") as src:
                container.get_blob_client(self.blob).upload_blob(
                    src,
                    length=total,
                    overwrite=True,
                    metadata={"sha256": digest},
                    max_concurrency=4,
                    progress_hook=(lambda done, _: on_progress(done, total))
                    if on_progress
                    else None,
                )

        self._call(run)
        return digest

    def _call(self, fn: Callable[[ContainerClient], T]) -> T:
        client = container_client(
            self._settings.store_connection,
            self.container,
            self._settings,
            "MLFN_MODEL_STORE_CONNECTION",
        )
        try:
            with storage_errors(self.uri), client:
                return fn(client)
        except NotFound:
            raise ModelNotInStore(self.uri) from None

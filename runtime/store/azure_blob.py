"""Models in Azure Blob Storage (``az://CONTAINER/PATH``), Azurite included.

The SDK is imported on first use: importing the runtime must stay cheap for cold starts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from runtime.config import Settings
from runtime.digest import sha256_file
from runtime.errors import ConfigError, ModelNotInStore, StoreUnavailable
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

    def _container(self) -> ContainerClient:
        from azure.storage.blob import ContainerClient, LinearRetry

        conn = self._settings.store_connection
        if not conn:
            raise ConfigError(
                "MLFN_MODEL_STORE_CONNECTION",
                "",
                "a storage connection string (or AzureWebJobsStorage) for az:// models",
            )
        s = self._settings
        try:
            return ContainerClient.from_connection_string(
                conn,
                self.container,
                connection_timeout=s.store_connect_timeout_s,
                read_timeout=s.store_read_timeout_s,
                # The SDK's default policy backs off 15 s and more per try, so a caller hears
                # nothing for minutes. A short linear back-off says "unavailable" in seconds.
                retry_policy=LinearRetry(
                    backoff=1, random_jitter_range=1, retry_total=s.store_retries
                ),
            )
        except ValueError as exc:
            raise ConfigError(
                "MLFN_MODEL_STORE_CONNECTION", "<hidden>", f"a storage connection string ({exc})"
            ) from None

    def _call(self, fn: Callable[[ContainerClient], T]) -> T:
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ResourceNotFoundError,
            ServiceRequestError,
            ServiceResponseError,
        )

        try:
            with self._container() as container:
                return fn(container)
        except ResourceNotFoundError:
            raise ModelNotInStore(self.uri) from None
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise self._unavailable("cannot be reached", exc) from exc
        except ClientAuthenticationError as exc:
            raise self._unavailable("refused the credentials", exc) from exc
        except HttpResponseError as exc:
            raise self._unavailable(f"failed with HTTP {exc.status_code}", exc) from exc

    def _unavailable(self, what: str, exc: BaseException) -> StoreUnavailable:
        text = str(exc).strip().splitlines()
        reason = text[0] if text else type(exc).__name__
        return StoreUnavailable(
            f"blob store for {self.uri} {what}: {reason}", detail={"uri": self.uri}
        )

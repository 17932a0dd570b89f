"""Models in Azure Blob Storage: ``az://CONTAINER/PATH`` on the configured account, and blob
URLs (``https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH``, with a SAS or an identity)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar
from urllib.parse import urlsplit

from runtime.config import Settings
from runtime.errors import ModelNotInStore, NotFound, StoreConflict, StoreUnavailable
from runtime.model_store.base import Progress, StoredObject
from runtime.storage import clients

if TYPE_CHECKING:
    from azure.storage.blob import BlobClient

T = TypeVar("T")
SETTING = Settings.variable("store_connection")


class AzureBlob:
    """One blob. ``make_client`` builds a fresh ``BlobClient`` per operation."""

    def __init__(self, uri: str, make_client: Callable[[], BlobClient]) -> None:
        self.uri = uri
        self._make_client = make_client

    @classmethod
    def from_az_uri(cls, container: str, blob: str, settings: Settings) -> AzureBlob:
        """``az://CONTAINER/PATH``: the account is ``MLFN_MODEL_STORE_CONNECTION`` (else
        ``AzureWebJobsStorage``), a connection string or an identity-based connection."""
        if not container or not blob:
            raise ValueError(f"az:// URIs need a container and a path: az://{container}/{blob}")

        def make() -> BlobClient:
            conn = clients.require(settings.store_connection, SETTING)
            return clients.blob(conn, container, blob, settings)

        return cls(f"az://{container}/{blob}", make)

    @classmethod
    def from_url(cls, url: str, settings: Settings) -> AzureBlob:
        """A blob URL. A SAS in the query authorises it; without one, ``DefaultAzureCredential``
        (managed identity on Azure) does."""
        return cls(_redact(url), lambda: clients.blob_from_url(url, settings))

    def local_path(self) -> Path | None:
        return None

    def stat(self) -> StoredObject:
        props = self._call(lambda c: c.get_blob_properties())
        return StoredObject(self.uri, int(props.size), str(props.etag))

    def download(
        self, into: BinaryIO, if_none_match: str | None = None, progress: Progress | None = None
    ) -> StoredObject | None:
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError

        def run(client: BlobClient) -> StoredObject | None:
            condition: dict[str, Any] = {}
            if if_none_match:
                condition = {"etag": if_none_match, "match_condition": MatchConditions.IfModified}
            try:
                # The stored bytes, the size stat() gives and the digest is of: the SDK would
                # inflate a Content-Encoding (a range at a time, which fails past 32 MiB).
                downloader = client.download_blob(
                    max_concurrency=4, progress_hook=progress, decompress=False, **condition
                )
            except HttpResponseError as exc:
                # The SDK raises ResourceNotModifiedError for some operations and a bare
                # HttpResponseError for a conditional download; 304 is the answer either way.
                if exc.status_code == 304:
                    return None
                raise
            downloader.readinto(into)
            return StoredObject(self.uri, int(downloader.size), str(downloader.properties.etag))

        return self._call(run)

    def upload(
        self, path: Path, on_progress: Progress | None = None, sha256: str | None = None
    ) -> None:
        """Upload a file here, creating the container if needed; ``sha256`` is recorded as
        blob metadata."""
        total = path.stat().st_size

        def run(client: BlobClient) -> None:
            # The SDK has no public way from a blob to its container; this one is stable.
            clients.create_if_missing(client._get_container_client().create_container)
            with path.open("rb") as src:
                client.upload_blob(
                    src,
                    length=total,
                    overwrite=True,
                    metadata={"sha256": sha256} if sha256 else None,
                    max_concurrency=4,
                    progress_hook=(lambda done, _: on_progress(done, total))
                    if on_progress
                    else None,
                )

        self._call(run)

    def read(
        self, max_bytes: int, if_none_match: str | None = None
    ) -> tuple[bytes, StoredObject] | None:
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError

        def run(client: BlobClient) -> tuple[bytes, StoredObject] | None:
            condition: dict[str, Any] = {}
            if if_none_match:
                condition = {"etag": if_none_match, "match_condition": MatchConditions.IfModified}
            try:
                # One byte past the limit, asked as a range: the SDK reads its first range
                # into memory at once, and unranged that is up to 32 MiB.
                downloader = client.download_blob(
                    offset=0, length=max_bytes + 1, decompress=False, **condition
                )
            except HttpResponseError as exc:
                if exc.status_code == 304:
                    return None
                if exc.status_code == 416:  # no range of an empty blob can be satisfied
                    return self._empty(client, if_none_match)
                raise
            if downloader.size > max_bytes:
                raise ValueError(f"{self.uri} holds more than {max_bytes} bytes")
            data = downloader.readall()
            return data, StoredObject(self.uri, len(data), str(downloader.properties.etag))

        return self._call(run)

    def _empty(
        self, client: BlobClient, if_none_match: str | None
    ) -> tuple[bytes, StoredObject] | None:
        """``read``'s answer for a blob that was empty when its range was asked."""
        props = client.get_blob_properties()
        etag = str(props.etag)
        if int(props.size) != 0:
            raise StoreUnavailable(
                f"{self.uri} changed while it was read; try again", detail={"uri": self.uri}
            )
        return None if etag == if_none_match else (b"", StoredObject(self.uri, 0, etag))

    def write(self, data: bytes, if_match: str | None) -> StoredObject:
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        condition: dict[str, Any] = {"overwrite": False}  # If-None-Match: *
        if if_match is not None:
            condition = {
                "overwrite": True,
                "etag": if_match,
                "match_condition": MatchConditions.IfNotModified,
            }

        def put(client: BlobClient) -> StoredObject:
            try:
                done = client.upload_blob(data, length=len(data), **condition)
            except HttpResponseError as exc:
                # 412: If-Match failed; 409 BlobAlreadyExists: If-None-Match failed. Another
                # 409 (a lease on the blob) is no lost race: a retry would meet it again.
                code = getattr(exc, "error_code", None)  # set by the storage SDK, not azure.core
                if exc.status_code == 412 or code == "BlobAlreadyExists":
                    raise StoreConflict(self.uri, if_match) from None
                raise
            return StoredObject(self.uri, len(data), str(done["etag"]))

        def run(client: BlobClient) -> StoredObject:
            try:
                return put(client)
            except ResourceNotFoundError:
                if if_match is not None:  # the object it was read from is gone
                    raise StoreConflict(self.uri, if_match) from None
            # Only a missing container makes a create 404. Created on need, not before each
            # write: a SAS for one blob may not create containers.
            clients.create_if_missing(client._get_container_client().create_container)
            return put(client)

        return self._call(run)

    def _call(self, fn: Callable[[BlobClient], T]) -> T:
        try:
            with clients.storage_errors(self.uri), self._make_client() as client:
                return fn(client)
        except NotFound:
            raise ModelNotInStore(self.uri) from None


def _redact(url: str) -> str:
    """The URL without its query: a SAS is a secret and must not reach logs or responses."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"

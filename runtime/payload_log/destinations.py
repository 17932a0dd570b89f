"""Where the payload log's files go (``MLFN_PAYLOAD_LOG``): a container and prefix of the
app's storage account (``az://CONTAINER/PREFIX``), or a local folder (for ``mlfn serve`` and
tests). Each file is written once, whole, under a name no other writer uses: no appends, no
overwrites."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from runtime.errors import ConfigError
from runtime.protocol.jobs import is_container_name

if TYPE_CHECKING:
    from runtime.config import Settings
    from runtime.storage.clients import ContainerClient

SETTING = "MLFN_PAYLOAD_LOG"
DEFAULT = "az://payload-log"


class Destination(Protocol):
    def write(self, path: str, data: bytes) -> None:
        """Store ``data`` as ``path`` (``/``-separated, relative to the destination)."""

    def __str__(self) -> str: ...


class Folder:
    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, path: str, data: bytes) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        partial.write_bytes(data)
        os.replace(partial, target)  # a reader never sees half a file

    def __str__(self) -> str:
        return str(self.root)


class BlobPrefix:
    def __init__(self, container: str, prefix: str, settings: Settings) -> None:
        self.container, self.prefix = container, prefix
        self._settings = settings
        self._client: ContainerClient | None = None

    def write(self, path: str, data: bytes) -> None:
        from runtime.storage import clients

        name = f"{self.prefix}/{path}" if self.prefix else path
        with clients.storage_errors(f"writing payload log {self}/{path}"):
            if self._client is None:
                conn = clients.require(self._settings.storage_connection, "AzureWebJobsStorage")
                client = clients.container(conn, self.container, self._settings)
                clients.create_if_missing(client.create_container)
                self._client = client
            clients.upload_once(self._client, name, data)

    def __str__(self) -> str:
        return f"az://{self.container}/{self.prefix}".rstrip("/")


def destination(uri: str, settings: Settings) -> Destination:
    """The destination ``uri`` names, or a ``ConfigError`` naming the setting."""
    if uri.startswith("az://"):
        container, _, prefix = uri[len("az://") :].partition("/")
        if not is_container_name(container):
            raise ConfigError(
                SETTING, uri, "az://CONTAINER/PREFIX with a valid container name, or a folder"
            )
        return BlobPrefix(container, prefix.strip("/"), settings)
    if "://" in uri:
        raise ConfigError(SETTING, uri, "az://CONTAINER/PREFIX in the app's storage, or a folder")
    return Folder(Path(uri).expanduser())

"""The local host's own storage: one service client per connection setting, shared by the queue
and blob listeners and the queue outputs; the blob listener's receipts, taken and settled by
conditional writes; a blob version read whole. The one module of the host that imports the
storage SDKs; the rest of the host goes through here or ``runtime.storage``."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from runtime.config import Settings
from runtime.errors import ConfigError, ListenerError
from runtime.host.outages import StorageOutages
from runtime.storage import clients

if TYPE_CHECKING:
    # The listeners hold these clients; they name the types from here.
    from azure.storage.blob import BlobClient as BlobClient
    from azure.storage.blob import BlobProperties as BlobProperties
    from azure.storage.blob import BlobServiceClient as BlobServiceClient
    from azure.storage.blob import ContainerClient as ContainerClient
    from azure.storage.queue import QueueClient as QueueClient
    from azure.storage.queue import QueueMessage as QueueMessage
    from azure.storage.queue import QueueServiceClient as QueueServiceClient

T = TypeVar("T")

RUNNING, FAILED, DONE, POISONED = "running", "failed", "complete", "poisoned"  # a receipt's status


class StorageAccounts:
    """One service client per connection setting, shared by the listeners and outputs."""

    def __init__(self, env: Mapping[str, str], settings: Settings) -> None:
        self._env = env
        self._settings = settings
        # The listeners' own threads: polling, lease renewal and settling must not wait behind
        # model loads or claim checks in the shared default pool, or a slow store would let
        # leases lapse and messages run twice.
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="mlfn-queue-io")
        self._clients: dict[str, QueueServiceClient] = {}
        self._blob_clients: dict[str, BlobServiceClient] = {}
        self._created: set[tuple[str, ...]] = set()
        self.outages = StorageOutages()  # said once for all listeners, not once for each

    async def io(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking storage call of the listeners on their own threads."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, functools.partial(fn, *args)
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def queue(self, setting: str, name: str) -> QueueClient:
        if setting not in self._clients:
            with self._told(setting, "a queue trigger"):
                conn = clients.connection(setting, self._env)
                self._clients[setting] = clients.queue_service(conn, self._settings)
        return self._clients[setting].get_queue_client(name)

    def blobs(self, setting: str) -> BlobServiceClient:
        if setting not in self._blob_clients:
            with self._told(setting, "a blob trigger"):
                conn = clients.connection(setting, self._env)
                self._blob_clients[setting] = clients.blob_service(conn, self._settings)
        return self._blob_clients[setting]

    @staticmethod
    @contextlib.contextmanager
    def _told(setting: str, of: str) -> Iterator[None]:
        """A connection setting the trigger cannot use, said as the listener's error."""
        try:
            yield
        except ConfigError as exc:
            raise ListenerError(
                f"connection setting {setting!r} of {of}: {exc.message}; set it in "
                "local.settings.json Values, or serve HTTP only with --no-queues"
            ) from None

    def ensure_container(self, setting: str, name: str) -> None:
        if ("blob", setting, name) not in self._created:
            clients.create_if_missing(
                self.blobs(setting).get_container_client(name).create_container
            )
            self._created.add(("blob", setting, name))

    def ensure(self, setting: str, name: str) -> QueueClient:
        """The queue, created if missing (output bindings and poison queues do this)."""
        client = self.queue(setting, name)
        if (setting, name) not in self._created:
            clients.create_if_missing(client.create_queue)
            self._created.add((setting, name))
        return client


# --- the blob listener's receipts: one blob version run by one host -----------------------


class Receipt:
    """One blob version's receipt: who runs it, until when, how many attempts, and whether it
    is done. Every change is conditional on the receipt's ETag, so two hosts never both take
    it; this host's own changes (a renewal in flight while the run completes) take turns."""

    def __init__(self, blob: BlobClient, lease_s: float) -> None:
        self._blob = blob
        self._lease_s = lease_s
        self._etag: str | None = None
        self._attempts = 0
        self._owner = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._settled = False  # completed, failed or poisoned: a late renewal changes nothing
        self.name = blob.blob_name

    def claim(self) -> int | str | None:
        """The attempt this host now runs (1 for a new receipt), DONE when it is complete or
        poisoned, None when another host holds it or its retry is not due yet."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError

        with self._lock:
            with contextlib.suppress(ResourceExistsError):
                self._attempts = 1
                made = self._blob.upload_blob(b"", overwrite=False, metadata=self._doc(RUNNING))
                self._etag = str(made["etag"])
                return 1
            props = self._blob.get_blob_properties()
            meta = props.metadata or {}
            if meta.get("status") in (DONE, POISONED):
                return DONE
            if float(meta.get("until", "0")) > time.time():
                return None  # running elsewhere, or its retry is not due
            self._attempts = int(meta.get("attempts", "0")) + 1
            try:
                made = self._blob.set_blob_metadata(
                    self._doc(RUNNING),
                    etag=props.etag,
                    match_condition=MatchConditions.IfNotModified,
                )
            except ResourceModifiedError:
                return None  # another host took it first
            self._etag = str(made["etag"])
            return self._attempts

    def renew(self) -> None:
        self._set(RUNNING, self._lease_s)

    def fail(self, retry_in_s: float) -> None:
        self._set(FAILED, retry_in_s)

    def complete(self) -> None:
        self._set(DONE, 0)

    def poison(self) -> None:
        self._set(POISONED, 0)

    def _set(self, status: str, for_s: float) -> None:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError

        with self._lock:
            if self._settled:
                return
            self._settled = status != RUNNING
            for _ in range(2):
                try:
                    made = self._blob.set_blob_metadata(
                        self._doc(status, for_s),
                        etag=self._etag,
                        match_condition=MatchConditions.IfNotModified,
                    )
                    self._etag = str(made["etag"])
                    return
                except ResourceModifiedError:
                    # Changed since this host last wrote it: still ours (a renewal whose answer
                    # was lost) is written again; another host's now is left to it.
                    props = self._blob.get_blob_properties()
                    if (props.metadata or {}).get("owner") != self._owner:
                        raise
                    self._etag = str(props.etag)

    def _doc(self, status: str, for_s: float | None = None) -> dict[str, str]:
        until = time.time() + (self._lease_s if for_s is None else for_s)
        return {
            "status": status,
            "attempts": str(self._attempts),
            "until": f"{until:.3f}",
            "owner": self._owner,
        }


def read_version(blob: BlobClient, etag: str) -> bytes:
    """Version ``etag`` of ``blob`` whole, as stored (the SDK would inflate a Content-Encoding
    whole, a gzip bomb's gigabytes); an error if the blob changed since."""
    from azure.core import MatchConditions

    data: bytes = blob.download_blob(
        etag=etag, match_condition=MatchConditions.IfNotModified, decompress=False
    ).readall()
    return data

"""The blob side of the local host: run each blob-triggered function on every new blob version
of its container, once, as the Functions host does.

Azure delivers ``source=EventGrid`` triggers by event and polls the others (listing the
container, with receipts); this host scans the container on a short interval for both, so an
app behaves locally as it will on Azure, minus Event Grid's subscription. Receipts live in the
storage account, as the host's do (``azure-webjobs-hosts/blobreceipts/{hostId}/{functionId}/
{etag}/{container}/{blob}``): a restarted host skips what is done and takes over what a dead
one left running once its lease lapses. A failure is retried; the fifth goes to the queue
``webjobs-blobtrigger-poison`` with the blob's name and ETag, and the blob is not run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import re
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import azure.functions as func

from runtime.errors import ListenerError
from runtime.host import deferred
from runtime.host.invocation_log import InvocationLog
from runtime.host.invoke import Invoker
from runtime.host.metadata import FunctionInfo
from runtime.host.outages import first_line
from runtime.host.queue_listener import binding_value, write_outputs
from runtime.host.storage_accounts import DONE, Receipt, StorageAccounts, read_version
from runtime.protocol import batch, message_encoding

if TYPE_CHECKING:
    from runtime.host.storage_accounts import BlobClient, BlobProperties, ContainerClient

log = logging.getLogger("mlfn.host.blobs")

RECEIPTS_CONTAINER = "azure-webjobs-hosts"
POISON_QUEUE = "webjobs-blobtrigger-poison"
MAX_ATTEMPTS = 5  # the host's blob trigger: five tries, then the poison queue


@dataclass(frozen=True)
class BlobOptions:
    scan_s: float = 1.0  # how often each container is listed
    lease_s: float = 30.0  # a running receipt's lease; renewed while the function runs
    # A failed blob is retried after the queues' visibilityTimeout (host.json), as the host
    # retries through its own queue.
    retry_s: float = 0.0
    concurrency: int = 2  # blobs of one function run at once
    message_encoding: str = "base64"  # of the poison queue's messages (host.json)


class BlobPath:
    """A trigger's ``path``: ``container/pattern`` with ``{name}`` style parts."""

    def __init__(self, path: str) -> None:
        container, _, pattern = path.partition("/")
        if not container:
            raise ListenerError(f"blob trigger path {path!r} names no container")
        self.container = container
        literal = re.split(r"\{[^}]*\}", pattern)[0]
        self.prefix = literal or None
        parts = re.split(r"(\{[^}]*\})", pattern) if pattern else ["{name}"]
        regex = "".join(".+" if p.startswith("{") else re.escape(p) for p in parts)
        self._match = re.compile(regex + r"\Z", re.DOTALL)

    def matches(self, blob: str) -> bool:
        return self._match.match(blob) is not None


class BlobListener:
    """Runs one blob-triggered function on its container until ``stop`` is set."""

    def __init__(
        self,
        info: FunctionInfo,
        invoker: Invoker,
        options: BlobOptions,
        accounts: StorageAccounts,
        env: Mapping[str, str],
        host_id: str,
    ) -> None:
        self.info = info
        self._invoker = invoker
        self._options = options
        self._accounts = accounts
        self._env = env
        self.setting = info.trigger.connection
        self.path = BlobPath(binding_value(info, "path", env))
        self.source = str(info.trigger.raw.get("source") or "LogsAndContainerScan")
        self._receipts_prefix = f"blobreceipts/{host_id}/Host.Functions.{info.name}"
        # A parameter the worker binds by reference (an SDK type) gets the blob's name, as the
        # host sends it for one; any other, the blob's bytes.
        self._annotation = typing.get_type_hints(info.fn).get(info.trigger.name)
        self._by_reference = deferred.registry_for(self._annotation)
        self._done: set[tuple[str, str]] = set()  # (blob, etag) known complete: not asked again
        self._running: set[str] = set()
        self.outages = accounts.outages
        self.address = urlsplit(accounts.blobs(self.setting).url).netloc
        self.outages.watch(self.setting, "blob")

    @property
    def container(self) -> str:
        return self.path.container

    @property
    def watches(self) -> str:
        return f"container {self.container} ({self.source})"

    async def run(self, stop: asyncio.Event) -> None:
        io_ = self._accounts.io
        await io_(self._accounts.ensure_container, self.setting, self.container)
        await io_(self._accounts.ensure_container, self.setting, RECEIPTS_CONTAINER)
        slots = asyncio.Semaphore(self._options.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                found = await io_(self._scan)
                self.outages.worked(self.setting, self.address)
                for name, props in found:
                    if stop.is_set():
                        break
                    await slots.acquire()
                    task = asyncio.create_task(self._offer(name, props, slots))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._options.scan_s)
        finally:
            if tasks:
                await asyncio.wait(tasks)

    def _scan(self) -> list[tuple[str, BlobProperties]]:
        container = self._container_client()
        found = []
        for props in container.list_blobs(name_starts_with=self.path.prefix):
            name, etag = str(props.name), str(props.etag)
            if (name, etag) in self._done or name in self._running:
                continue
            if self.path.matches(name):
                found.append((name, props))
        return found

    async def _offer(self, name: str, props: BlobProperties, slots: asyncio.Semaphore) -> None:
        self._running.add(name)
        try:
            receipt = Receipt(self._receipt_blob(name, str(props.etag)), self._options.lease_s)
            claim = await self._accounts.io(receipt.claim)
            if claim == DONE:
                self._done.add((name, str(props.etag)))
            elif isinstance(claim, int):
                await self._attempt(name, props, receipt, claim)
        except Exception as exc:  # storage trouble: the next scan tries again
            if not self.outages.failed(self.setting, self.address, exc):
                log.warning("blob %s/%s: %s", self.container, name, first_line(exc))
        finally:
            self._running.discard(name)
            slots.release()

    async def _attempt(
        self, name: str, props: BlobProperties, receipt: Receipt, attempt: int
    ) -> None:
        etag = str(props.etag)
        if attempt > MAX_ATTEMPTS:
            await self._accounts.io(self._poison, name, etag, receipt)
            return
        run = InvocationLog(
            self.info.name, f"New blob detected({self.source}): {self.container}/{name}"
        )
        renewer = asyncio.create_task(self._keep(receipt))
        try:
            trigger = self._trigger_value(name, props)
            invocation = await self._invoker.call(self.info, trigger, run.id)
            await self._accounts.io(
                write_outputs,
                self.info,
                invocation.outputs,
                self._accounts,
                self._env,
                self._options.message_encoding,
            )
        except Exception as exc:
            renewer.cancel()
            run.failed(exc, traceback=True)
            if attempt >= MAX_ATTEMPTS:
                await self._accounts.io(self._poison, name, etag, receipt)
            else:
                await self._accounts.io(receipt.fail, self._options.retry_s)
            return
        renewer.cancel()
        await self._accounts.io(receipt.complete)
        self._done.add((name, etag))
        run.succeeded()

    def _trigger_value(self, name: str, props: BlobProperties) -> Any:
        if self._by_reference is None:
            return LazyBlob(self._blob(name), self.container, name, props)
        metadata = {
            "BlobTrigger": (f"{self.container}/{name}", "string"),
            "Uri": (self._blob(name).url, "string"),
            "Properties": (json.dumps(blob_properties(props)), "json"),
            "Metadata": (json.dumps(dict(props.metadata or {})), "json"),
        }
        return deferred.decode_blob(
            self._by_reference,
            self._annotation,
            self.info.trigger.type,
            self.setting,
            self.container,
            name,
            metadata,
        )

    async def _keep(self, receipt: Receipt) -> None:
        while True:
            await asyncio.sleep(self._options.lease_s / 3)
            try:
                await self._accounts.io(receipt.renew)
            except Exception as exc:
                log.warning("renewing the receipt of %s failed: %s", receipt.name, first_line(exc))

    def _poison(self, name: str, etag: str, receipt: Receipt) -> None:
        message = {
            "Type": "BlobTrigger",
            "FunctionId": f"Host.Functions.{self.info.name}",
            "BlobType": "BlockBlob",
            "ContainerName": self.container,
            "BlobName": name,
            "ETag": quoted(etag),
        }
        body = json.dumps(message).encode()
        queue = self._accounts.ensure(self.setting, POISON_QUEUE)
        queue.send_message(message_encoding.encode(body, self._options.message_encoding))
        receipt.poison()
        self._done.add((name, etag))
        log.error(
            "blob %s/%s failed %d times; moved to queue %s",
            self.container,
            name,
            MAX_ATTEMPTS,
            POISON_QUEUE,
        )

    def _container_client(self) -> ContainerClient:
        return self._accounts.blobs(self.setting).get_container_client(self.container)

    def _blob(self, name: str) -> BlobClient:
        return self._accounts.blobs(self.setting).get_blob_client(self.container, name)

    def _receipt_blob(self, name: str, etag: str) -> BlobClient:
        path = receipt_path(self._receipts_prefix, etag, self.container, name)
        return self._accounts.blobs(self.setting).get_blob_client(RECEIPTS_CONTAINER, path)


def receipt_path(prefix: str, etag: str, container: str, name: str) -> str:
    """Where one blob version's receipt lives, as the host names it: ``{prefix}/{etag}/
    {container}/{name}``. A name near Azure's limits leaves no room for the prefix (Azure
    refuses the receipt, every claim would fail, forever): its digest stands in for it, as
    for a batch file's results."""
    path = f"{prefix}/{batch.bare_etag(etag)}/{container}/{name}"
    if batch.fits(path):
        return path
    return f"{path[: len(path) - len(name)]}{batch.hashed_name(name)}"


class LazyBlob(func.blob.InputStream):
    """The trigger's blob as the worker gives it (name, uri, length, properties, metadata);
    its bytes, as stored (a Content-Encoding is not undone, on Azure either), are downloaded
    on the first ``read``, so a function that streams the blob itself, as mlfn's batch
    trigger does, never holds it whole."""

    def __init__(self, client: BlobClient, container: str, name: str, props: Any) -> None:
        properties = blob_properties(props)
        super().__init__(
            data=b"",
            name=f"{container}/{name}",
            uri=client.url,
            length=props.size,
            blob_properties=properties,
            metadata=dict(props.metadata or {}),
        )
        self._client = client
        self._etag = str(props.etag)
        self._loaded: io.BytesIO | None = None

    def read(self, size: int | None = -1) -> bytes:
        if self._loaded is None:
            # The stored bytes, as the Functions host gives them (and ``length`` counts).
            self._loaded = io.BytesIO(read_version(self._client, self._etag))
        return self._loaded.read(-1 if size is None else size)

    read1 = read


def blob_properties(props: Any) -> dict[str, Any]:
    """A blob's properties as the host's trigger metadata gives them (``Properties``)."""
    return {
        "ETag": quoted(str(props.etag)),
        "ContentLength": props.size,
        "Length": props.size,
        "LastModified": props.last_modified.isoformat() if props.last_modified else None,
        "ContentType": props.content_settings.content_type if props.content_settings else None,
    }


def quoted(etag: str) -> str:
    """An ETag as HTTP (and the Functions host's blob properties) give it: in quotes. The
    listing API gives it bare."""
    return etag if etag.startswith('"') else f'"{etag}"'


def host_id(app_dir: Path) -> str:
    """A stable id for this app's local host (receipts are kept per host, as on Azure)."""
    digest = hashlib.sha256(str(app_dir.resolve()).encode()).hexdigest()[:8]
    stem = re.sub(r"[^a-z0-9]", "", app_dir.resolve().name.lower())[:20] or "app"
    return f"local-{stem}-{digest}"


def listed(functions: list[FunctionInfo]) -> Iterator[FunctionInfo]:
    return (f for f in functions if f.trigger.type == "blobTrigger")

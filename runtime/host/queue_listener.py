"""The queue side of the local host: poll each queue-triggered function's queue, invoke the
function per message, and settle the message as the Functions host does.

Delete on success; on failure make it visible again after ``visibilityTimeout``; when its
dequeue count reaches ``maxDequeueCount``, copy the body to ``<queue>-poison`` and delete it.
A queue whose name leaves no room for ``-poison`` keeps such a message, hidden as long as the
service allows, rather than running it again every lease.
A fetched message is leased (made invisible) and the lease is renewed while the function runs,
so a host that dies mid-batch loses nothing: its messages reappear when their lease lapses.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import azure.functions as func

from runtime.config import Settings
from runtime.errors import ConfigError, ListenerError
from runtime.host.invocation_log import InvocationLog
from runtime.host.invoke import Invoker
from runtime.host.metadata import FunctionInfo
from runtime.host.outages import RETRY_S, StorageOutages, first_line
from runtime.host.queue_options import QueueOptions
from runtime.protocol import message_encoding
from runtime.storage import clients

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient
    from azure.storage.queue import QueueClient, QueueMessage, QueueServiceClient

log = logging.getLogger("mlfn.host.queues")

T = TypeVar("T")
IO = Callable[..., Awaitable[Any]]

MIN_POLLING_S = 0.1
POISON_SUFFIX = "-poison"
MAX_INVISIBLE_S = 7 * 24 * 3600.0  # the queue service's limit on a visibility timeout


def resolve(value: str, env: Mapping[str, str]) -> str:
    """Binding expressions ``%Setting%`` are read from app settings, as the host does."""

    def lookup(m: re.Match[str]) -> str:
        if m.group(1) not in env:
            raise ListenerError(f"binding expression %{m.group(1)}% names no app setting")
        return env[m.group(1)]

    return re.sub(r"%([^%]+)%", lookup, value)


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


class QueueListener:
    """Runs one queue-triggered function against its queue until ``stop`` is set."""

    def __init__(
        self,
        info: FunctionInfo,
        invoker: Invoker,
        options: QueueOptions,
        accounts: StorageAccounts,
        env: Mapping[str, str],
        lease_s: float,
    ) -> None:
        self.info = info
        self._invoker = invoker
        self._options = options
        self._accounts = accounts
        self._env = env
        self._lease_s = lease_s
        self.setting = info.trigger.connection
        self.queue_name = resolve(str(info.trigger.raw["queueName"]), env)
        self._binary = str(info.trigger.raw.get("dataType", "")).lower() == "binary"
        self._queue = accounts.queue(self.setting, self.queue_name)
        self.outages = accounts.outages
        self.address = urlsplit(self._queue.url).netloc
        self.outages.watch(self.setting, "queue")

    @property
    def watches(self) -> str:
        return f"queue {self.queue_name}"

    async def run(self, stop: asyncio.Event) -> None:
        await self._accounts.io(self._accounts.ensure, self.setting, self.queue_name)
        self.outages.worked(self.setting, self.address)
        in_flight: set[asyncio.Task[None]] = set()
        delay = MIN_POLLING_S
        outage = ""
        while not stop.is_set():
            if len(in_flight) > self._options.new_batch_threshold:
                await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                messages = await self._accounts.io(self._receive)
                self.outages.worked(self.setting, self.address)
                if outage:
                    log.info("polling queue %s works again", self.queue_name)
                    outage = ""
            except Exception as exc:  # storage down: keep polling, as the host does
                if self.outages.failed(self.setting, self.address, exc):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), RETRY_S)
                    continue
                reason = first_line(exc)
                if reason != outage:  # said once per outage, not once per poll
                    log.warning("polling queue %s failed: %s", self.queue_name, reason)
                outage = reason
                messages = []
            if messages:
                delay = MIN_POLLING_S
                for message in messages:
                    task = asyncio.create_task(self._process(message))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, self._options.max_polling_interval_s)
        if in_flight:
            await asyncio.wait(in_flight)

    def _receive(self) -> list[QueueMessage]:
        pages = self._queue.receive_messages(
            messages_per_page=self._options.batch_size,
            max_messages=self._options.batch_size,
            visibility_timeout=max(1, round(self._lease_s)),
        )
        return list(pages)

    async def _process(self, message: QueueMessage) -> None:
        name = self.info.name
        lease = _Lease(self._queue, message, self._lease_s)
        if (message.dequeue_count or 0) > self._options.max_dequeue_count:
            await self._settle(self._poison(lease), "moving it to the poison queue", message.id)
            return
        run = InvocationLog(name, f"New queue message detected on '{self.queue_name}'.")
        log.info(
            "Trigger Details: MessageId: %s, DequeueCount: %s, InsertedOn: %s",
            message.id,
            message.dequeue_count,
            message.inserted_on.isoformat() if message.inserted_on else None,
            extra={"function": name, "invocation_id": run.id},
        )
        renewer = asyncio.create_task(lease.keep(self._accounts.io))
        try:
            body = message_encoding.decode(message.content, self._options.message_encoding)
            trigger = func.queue.QueueMessage(  # type: ignore[no-untyped-call]
                id=message.id,
                body=body if self._binary else _text(body),
                dequeue_count=message.dequeue_count,
                expiration_time=message.expires_on,
                insertion_time=message.inserted_on,
                time_next_visible=message.next_visible_on,
                pop_receipt=message.pop_receipt,
            )
            invocation = await self._invoker.call(self.info, trigger, run.id)
            await self._accounts.io(self._write_outputs, invocation.outputs)
        except Exception as exc:
            renewer.cancel()
            run.failed(exc, traceback=not isinstance(exc, message_encoding.NotEncoded))
            if (message.dequeue_count or 0) >= self._options.max_dequeue_count:
                await self._settle(self._poison(lease), "moving it to the poison queue", message.id)
            else:
                release = self._accounts.io(lease.release, self._options.visibility_timeout_s)
                await self._settle(release, "releasing it for a retry", message.id)
            return
        renewer.cancel()
        await self._settle(self._accounts.io(lease.delete), "deleting it", message.id)
        run.succeeded()

    async def _settle(self, step: Awaitable[Any], doing: str, message_id: str) -> None:
        """Settle a message; a failure is logged with its id (the message comes back when its
        lease lapses, as after a crash), never raised into the listener."""
        try:
            await step
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.error(
                "message %s of queue %s: %s failed: %s", message_id, self.queue_name, doing, reason
            )

    async def _poison(self, lease: _Lease) -> None:
        if (
            self.queue_name.endswith(POISON_SUFFIX)
            or len(self.queue_name) + len(POISON_SUFFIX) > 63
        ):
            # Left alone it would come back every lease and fail again, forever; parked for
            # as long as storage allows, it stays in the queue for an operator to inspect.
            parked_s = await self._accounts.io(lease.park)
            log.error(
                "message %s failed %d times; queue %s cannot have a poison queue (name too "
                "long), so the message is left in it, invisible for %.0f s",
                lease.message.id,
                lease.message.dequeue_count,
                self.queue_name,
                parked_s,
            )
            return
        poison = self.queue_name + POISON_SUFFIX
        log.warning(
            "Message has reached MaxDequeueCount of %d. Moving message to queue '%s'.",
            self._options.max_dequeue_count,
            poison,
        )

        def move() -> None:
            # The body is copied as stored (still encoded), as the host does.
            self._accounts.ensure(self.setting, poison).send_message(lease.message.content)
            lease.delete()

        await self._accounts.io(move)

    def _write_outputs(self, outputs: Mapping[str, Any]) -> None:
        write_outputs(self.info, outputs, self._accounts, self._env, self._options.message_encoding)


def write_outputs(
    info: FunctionInfo,
    outputs: Mapping[str, Any],
    accounts: StorageAccounts,
    env: Mapping[str, str],
    encoding: str,
) -> None:
    """Send what a function set on its queue output bindings (the only outputs this host
    writes; others are dropped with a warning)."""
    for binding in info.outputs:
        value = outputs.get(binding.name)
        if value is None or binding.type != "queue":
            if value is not None:
                log.warning(
                    "output binding %s (%s) is not supported by this host; dropped",
                    binding.name,
                    binding.type,
                )
            continue
        queue = accounts.ensure(binding.connection, resolve(str(binding.raw["queueName"]), env))
        for item in value if isinstance(value, list) else [value]:
            queue.send_message(message_encoding.encode(_as_bytes(item), encoding))


class NotText(message_encoding.NotEncoded):
    """A message body that is not UTF-8, for a trigger that takes text."""


def _text(body: bytes) -> str:
    """The body as the Storage extension hands a queue trigger without ``dataType: binary`` to
    the worker: a string, decoded strictly; bytes that are not UTF-8 fail the binding, so the
    function is not called and the message is retried, then poisoned."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotText(
            f"message body is not UTF-8 ({exc.reason} at byte {exc.start}); a queue trigger "
            'without dataType "binary" takes text'
        ) from None


def _as_bytes(item: Any) -> bytes:
    if isinstance(item, func.QueueMessage):
        return item.get_body()
    if isinstance(item, str):
        return item.encode()
    if isinstance(item, bytes | bytearray):
        return bytes(item)
    raise TypeError(f"queue output takes str, bytes or QueueMessage, not {type(item).__name__}")


class _Lease:
    """A fetched message's invisibility, renewed while its function runs."""

    def __init__(self, queue: QueueClient, message: QueueMessage, lease_s: float) -> None:
        self._queue = queue
        self.message = message
        self._lease_s = lease_s
        self._receipt = message.pop_receipt
        # Renewal runs in a worker thread that cancelling its task does not stop; the lock
        # makes a release or delete wait for it and use the receipt it got back.
        self._lock = threading.Lock()

    async def keep(self, io: IO) -> None:
        while True:
            await asyncio.sleep(self._lease_s / 2)
            try:
                await io(self._update, self._lease_s)
            except Exception as exc:
                log.warning("renewing the lease of message %s failed: %s", self.message.id, exc)

    def _update(self, seconds: float) -> None:
        with self._lock:
            receipt = self._queue.update_message(
                self.message.id, self._receipt, visibility_timeout=max(0, round(seconds))
            )
            self._receipt = receipt.pop_receipt

    def release(self, after_s: float) -> None:
        self._update(after_s)

    def park(self) -> float:
        """Hide the message as long as the service allows: 7 days, or until it expires."""
        seconds = MAX_INVISIBLE_S
        if self.message.expires_on is not None:
            left = (self.message.expires_on - datetime.now(UTC)).total_seconds()
            seconds = max(1.0, min(seconds, left - 1))
        self._update(seconds)
        return seconds

    def delete(self) -> None:
        with self._lock:
            self._queue.delete_message(self.message.id, self._receipt)

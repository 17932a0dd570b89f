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
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import azure.functions as func

from runtime.config import binding_expressions
from runtime.errors import ConfigError, ListenerError, NotEncoded, NotText
from runtime.host.invocation_log import InvocationLog
from runtime.host.invoke import Invoker
from runtime.host.metadata import Binding, FunctionInfo
from runtime.host.outages import RETRY_S, first_line
from runtime.host.queue_options import MAX_INVISIBLE_S, QueueOptions
from runtime.host.storage_accounts import StorageAccounts
from runtime.protocol import message_encoding

if TYPE_CHECKING:
    from runtime.host.storage_accounts import QueueClient, QueueMessage

log = logging.getLogger("mlfn.host.queues")

IO = Callable[..., Awaitable[Any]]

MIN_POLLING_S = 0.1
POISON_SUFFIX = "-poison"


def binding_value(
    info: FunctionInfo, key: str, env: Mapping[str, str], of: Binding | None = None
) -> str:
    """A binding's ``queueName`` or ``path`` (of the trigger unless ``of`` says which) as Azure
    reads it (runtime.config.binding_expressions): ``%Setting%`` from the app settings, a queue
    name lowercased. A setting that is not set stops the listener, as on Azure the function
    fails to load."""
    binding = of or info.trigger
    raw = str(binding.raw[key])
    try:
        if key == "queueName":
            return binding_expressions.queue_name(raw, env)
        return binding_expressions.resolve(raw, env)
    except ConfigError as exc:
        raise ListenerError(
            f"binding {binding.name} of function {info.name}: {exc.message}; set it in "
            "local.settings.json Values"
        ) from None


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
        self.queue_name = binding_value(info, "queueName", env)
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
        return receive(self._queue, self._options.batch_size, self._lease_s)

    async def _process(self, message: QueueMessage) -> None:
        name = self.info.name
        lease = Lease(self._queue, message, self._lease_s)
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
            run.failed(exc, traceback=not isinstance(exc, NotEncoded))
            if (message.dequeue_count or 0) >= self._options.max_dequeue_count:
                await self._settle(self._poison(lease), "moving it to the poison queue", message.id)
            else:
                release = self._accounts.io(lease.release, self._options.visibility_timeout_s)
                await self._settle(release, "releasing it for a retry", message.id)
            return
        except BaseException:  # cancelled: the lease lapses and the message comes back
            renewer.cancel()
            raise
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

    async def _poison(self, lease: Lease) -> None:
        if self.queue_name.endswith(POISON_SUFFIX):
            why = "it is a poison queue itself"
        elif len(self.queue_name) + len(POISON_SUFFIX) > 63:
            why = "name too long"
        else:
            why = ""
        if why:
            # Left alone it would come back every lease and fail again, forever; parked for
            # as long as storage allows, it stays in the queue for an operator to inspect.
            parked_s = await self._accounts.io(lease.park)
            log.error(
                "message %s failed %d times; queue %s cannot have a poison queue (%s), so the "
                "message is left in it, invisible for %.0f s",
                lease.message.id,
                lease.message.dequeue_count,
                self.queue_name,
                why,
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


def receive(queue: QueueClient, batch_size: int, lease_s: float) -> list[QueueMessage]:
    """Up to ``batch_size`` messages of ``queue``, leased for ``lease_s``, in one request as the
    host makes. Read whole, the SDK's pager asks again after a page short of its maximum, and
    a failure of that second request would drop the first page's messages: leased and counted
    as dequeued, yet never run until the lease lapses."""
    pages = queue.receive_messages(
        messages_per_page=batch_size,
        max_messages=batch_size,
        visibility_timeout=max(1, round(lease_s)),
    )
    return list(next(pages.by_page(), []))


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
        name = binding_value(info, "queueName", env, of=binding)
        queue = accounts.ensure(binding.connection, name)
        for item in value if isinstance(value, list) else [value]:
            queue.send_message(message_encoding.encode(_as_bytes(item), encoding))


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


class Lease:
    """A fetched message's invisibility, renewed while its function runs."""

    def __init__(self, queue: QueueClient, message: QueueMessage, lease_s: float) -> None:
        self._queue = queue
        self.message = message
        self._lease_s = lease_s
        self._receipt = message.pop_receipt
        # Renewal runs in a worker thread that cancelling its task does not stop; the lock
        # makes a release or delete wait for it and use the receipt it got back, and a
        # renewal that comes after them finds the message settled and leaves it: renewed
        # then, a released message would stay hidden a whole lease instead of retrying.
        self._lock = threading.Lock()
        self._settled = False

    async def keep(self, io: IO) -> None:
        while True:
            await asyncio.sleep(self._lease_s / 2)
            try:
                await io(self.renew)
            except Exception as exc:
                log.warning("renewing the lease of message %s failed: %s", self.message.id, exc)

    def renew(self) -> None:
        with self._lock:
            if not self._settled:
                self._update(self._lease_s)

    def _update(self, seconds: float) -> None:
        receipt = self._queue.update_message(
            self.message.id, self._receipt, visibility_timeout=max(0, round(seconds))
        )
        self._receipt = receipt.pop_receipt

    def release(self, after_s: float) -> None:
        with self._lock:
            self._settled = True
            self._update(after_s)

    def park(self) -> float:
        """Hide the message as long as the service allows: 7 days, or until it expires."""
        seconds = MAX_INVISIBLE_S
        if self.message.expires_on is not None:
            left = (self.message.expires_on - datetime.now(UTC)).total_seconds()
            seconds = max(1.0, min(seconds, left - 1))
        with self._lock:
            self._settled = True
            self._update(seconds)
        return seconds

    def delete(self) -> None:
        with self._lock:
            self._settled = True
            self._queue.delete_message(self.message.id, self._receipt)

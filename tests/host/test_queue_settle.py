"""How the local host settles a queue message, in process: what storage is asked (delete,
release for a retry, copy to ``<queue>-poison``, park) for each outcome and each dequeue count
around ``maxDequeueCount``. The listener runs against a recording queue client; the end-to-end
behaviour against Azurite is tests/host/test_queue_listener.py."""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
from asyncio import sleep as pause  # the real one: a test below replaces asyncio.sleep
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest
from azure.storage.queue import QueueMessage

from runtime.host import queue_listener
from runtime.host.invoke import Invocation
from runtime.host.metadata import Binding, FunctionInfo
from runtime.host.outages import StorageOutages
from runtime.host.queue_listener import Lease, QueueListener, receive
from runtime.host.queue_options import MAX_INVISIBLE_S, QueueOptions

SETTING = "JobsStorage"
STORED = base64.b64encode(b"hello").decode()  # the body as the queue holds it
INSERTED = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@dataclass
class _Receipt:
    pop_receipt: str


@dataclass
class Storage:
    """One account's queues: every request the listener makes, in order, and the failures to
    answer with."""

    calls: list[tuple[Any, ...]] = field(default_factory=list)
    failures: dict[str, list[Exception]] = field(default_factory=dict)
    receipts: int = 0

    def ask(self, *call: Any) -> None:
        self.calls.append(call)
        if self.failures.get(call[0]):
            raise self.failures[call[0]].pop(0)

    def fail(self, what: str, *errors: Exception) -> None:
        self.failures[what] = list(errors)


class Queue:
    """A queue client that records what it is asked; each update hands out a new receipt."""

    def __init__(self, storage: Storage, name: str) -> None:
        self._storage = storage
        self.name = name
        self.url = f"http://127.0.0.1:10001/devstoreaccount1/{name}"

    def update_message(self, message_id: str, receipt: str, *, visibility_timeout: int) -> Any:
        self._storage.ask("update", self.name, message_id, receipt, visibility_timeout)
        self._storage.receipts += 1
        return _Receipt(f"r{self._storage.receipts}")

    def delete_message(self, message_id: str, receipt: str) -> None:
        self._storage.ask("delete", self.name, message_id, receipt)

    def send_message(self, content: str) -> None:
        self._storage.ask("send", self.name, content)


class Accounts:
    """StorageAccounts with its blocking calls run in place (no thread: the order of what is
    asked is the order of the code)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.outages = StorageOutages()

    async def io(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)

    def queue(self, setting: str, name: str) -> Queue:
        assert setting == SETTING
        return Queue(self.storage, name)

    def ensure(self, setting: str, name: str) -> Queue:
        self.storage.ask("ensure", setting, name)
        return self.queue(setting, name)


class Invoker:
    """Runs ``body`` (if any), then raises ``fails`` or returns ``outputs``; keeps what it was
    called with."""

    def __init__(
        self,
        fails: Exception | None = None,
        outputs: dict[str, Any] | None = None,
        body: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.fails = fails
        self.outputs = outputs or {}
        self.body = body
        self.calls: list[tuple[FunctionInfo, func.QueueMessage, str | None]] = []

    async def call(
        self, info: FunctionInfo, trigger: func.QueueMessage, invocation_id: str | None = None
    ) -> Invocation:
        self.calls.append((info, trigger, invocation_id))
        if self.body is not None:
            await self.body()
        if self.fails is not None:
            raise self.fails
        return Invocation(None, self.outputs)


def _info(queue: str, data_type: str | None = None) -> FunctionInfo:
    raw: dict[str, Any] = {"type": "queueTrigger", "queueName": queue, "connection": SETTING}
    if data_type:
        raw["dataType"] = data_type
    trigger = Binding("msg", "queueTrigger", "IN", raw)
    out = Binding("out", "queue", "OUT", {"queueName": "jobs-out", "connection": SETTING})
    return FunctionInfo("shout", trigger, (trigger, out), lambda: None, False, False, ".")


def _message(count: int | None, **fields: Any) -> QueueMessage:
    return QueueMessage(
        fields.pop("content", STORED), id="m1", pop_receipt="r0", dequeue_count=count, **fields
    )


@dataclass
class Run:
    storage: Storage
    invoker: Invoker
    listener: QueueListener


def _listener(
    invoker: Invoker | None = None,
    *,
    queue: str = "jobs",
    data_type: str | None = None,
    lease_s: float = 30,
    **options: Any,
) -> Run:
    storage = Storage()
    invoker = invoker or Invoker()
    settings = {"max_dequeue_count": 3, "visibility_timeout_s": 7.0, **options}
    listener = QueueListener(
        _info(queue, data_type),
        invoker,  # type: ignore[arg-type]
        QueueOptions(**settings),
        Accounts(storage),  # type: ignore[arg-type]
        {},
        lease_s,
    )
    return Run(storage, invoker, listener)


def _process(run: Run, message: QueueMessage) -> list[tuple[Any, ...]]:
    asyncio.run(run.listener._process(message))
    return run.storage.calls


def _said(caplog: pytest.LogCaptureFixture, logger: str = "mlfn.host.queues") -> list[str]:
    return [f"{r.levelname} {r.getMessage()}" for r in caplog.records if r.name == logger]


@pytest.fixture(autouse=True)
def _logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mlfn.host")


DELETED = [("delete", "jobs", "m1", "r0")]
RELEASED = [("update", "jobs", "m1", "r0", 7)]
POISONED = [
    ("ensure", SETTING, "jobs-poison"),
    ("send", "jobs-poison", STORED),  # as stored: still base64, not decoded
    ("delete", "jobs", "m1", "r0"),
]


@pytest.mark.parametrize(
    ("count", "fails", "asked", "runs"),
    [
        (1, False, DELETED, True),
        (1, True, RELEASED, True),
        (2, True, RELEASED, True),  # one below maxDequeueCount: retried
        (3, False, DELETED, True),  # at maxDequeueCount a success is still a success
        (3, True, POISONED, True),  # the last attempt failed
        (4, False, POISONED, False),  # already over it (a host that died before settling):
        (4, True, POISONED, False),  # not run again
    ],
)
def test_a_message_is_deleted_retried_or_poisoned_by_outcome_and_dequeue_count(
    count: int, fails: bool, asked: list[tuple[Any, ...]], runs: bool
) -> None:
    run = _listener(Invoker(fails=ValueError("no") if fails else None))
    assert _process(run, _message(count)) == asked
    assert len(run.invoker.calls) == (1 if runs else 0)


def test_a_message_without_a_dequeue_count_counts_as_never_dequeued() -> None:
    run = _listener(Invoker(fails=ValueError("no")), max_dequeue_count=1)
    assert _process(run, _message(None)) == RELEASED


def test_a_failed_message_is_released_after_the_visibility_timeout_rounded() -> None:
    run = _listener(Invoker(fails=ValueError("no")), visibility_timeout_s=0.0)
    assert _process(run, _message(1)) == [("update", "jobs", "m1", "r0", 0)]  # the host default
    run = _listener(Invoker(fails=ValueError("no")), visibility_timeout_s=12.6)
    assert _process(run, _message(1)) == [("update", "jobs", "m1", "r0", 13)]


def test_moving_to_the_poison_queue_is_logged_as_the_host_logs_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _process(_listener(Invoker(fails=ValueError("no"))), _message(3))
    assert (
        "WARNING Message has reached MaxDequeueCount of 3. Moving message to queue 'jobs-poison'."
        in _said(caplog)
    )


@pytest.mark.parametrize("count", [3, 4])
def test_a_queue_named_like_a_poison_queue_parks_the_message_instead(
    count: int, caplog: pytest.LogCaptureFixture
) -> None:
    run = _listener(Invoker(fails=ValueError("no")), queue="jobs-poison")
    assert _process(run, _message(count)) == [
        ("update", "jobs-poison", "m1", "r0", round(MAX_INVISIBLE_S))
    ]
    said = _said(caplog)[-1]
    assert said.startswith(
        f"ERROR message m1 failed {count} times; queue jobs-poison cannot have a poison queue "
        "(it is a poison queue itself)"
    )
    assert said.endswith(", so the message is left in it, invisible for 604800 s")


def test_a_queue_name_with_room_for_the_suffix_gets_a_poison_queue_and_one_without_parks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    longest = "q" * (63 - len("-poison"))
    run = _listener(queue=longest)
    assert _process(run, _message(4)) == [
        ("ensure", SETTING, f"{longest}-poison"),
        ("send", f"{longest}-poison", STORED),
        ("delete", longest, "m1", "r0"),
    ]
    run = _listener(queue=longest + "q")
    assert _process(run, _message(4)) == [
        ("update", longest + "q", "m1", "r0", round(MAX_INVISIBLE_S))
    ]
    assert _said(caplog)[-1] == (
        f"ERROR message m1 failed 4 times; queue {longest}q cannot have a poison queue "
        "(name too long), so the message is left in it, invisible for 604800 s"
    )


@pytest.mark.parametrize(
    ("expires_in", "parked_s"),
    [
        (timedelta(days=30), MAX_INVISIBLE_S),  # the service's 7 days at most
        # until a second before it expires (half a second more: the clock moves on a little
        # before the lease is set, and the seconds are rounded)
        (timedelta(hours=1, milliseconds=500), 3600 - 1),
        (timedelta(seconds=-5), 1),  # already expired: a second, not a negative time
    ],
)
def test_a_parked_message_stays_hidden_as_long_as_the_service_allows(
    expires_in: timedelta, parked_s: float
) -> None:
    run = _listener(queue="jobs-poison")
    asked = _process(run, _message(4, expires_on=datetime.now(UTC) + expires_in))
    [(what, queue, message_id, receipt, seconds)] = asked
    assert (what, queue, message_id, receipt) == ("update", "jobs-poison", "m1", "r0")
    assert seconds == parked_s


def test_the_function_gets_the_message_as_the_worker_gives_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fields = {
        "inserted_on": INSERTED,
        "expires_on": INSERTED + timedelta(days=7),
        "next_visible_on": INSERTED + timedelta(seconds=30),
    }
    caplog.set_level(logging.DEBUG, logger="mlfn.host.functions")
    run = _listener()
    _process(run, _message(2, **fields))
    [(info, trigger, invocation_id)] = run.invoker.calls
    assert info.name == "shout"
    assert (trigger.id, trigger.get_body(), trigger.dequeue_count) == ("m1", b"hello", 2)
    assert trigger.insertion_time == INSERTED
    assert trigger.expiration_time == fields["expires_on"]
    assert trigger.time_next_visible == fields["next_visible_on"]
    assert trigger.pop_receipt == "r0"
    [detected] = [r for r in caplog.records if r.getMessage().startswith("Trigger Details")]
    assert detected.getMessage() == (
        "Trigger Details: MessageId: m1, DequeueCount: 2, InsertedOn: 2024-05-01T12:00:00+00:00"
    )
    assert (detected.function, detected.invocation_id) == ("shout", invocation_id)  # type: ignore[attr-defined]
    executing, executed = _said(caplog, "mlfn.host.functions")
    assert executing == (
        "DEBUG Executing 'Functions.shout' (Reason='New queue message detected on 'jobs'.', "
        f"Id={invocation_id})"
    )
    assert executed.startswith(f"INFO Executed 'Functions.shout' (Succeeded, Id={invocation_id},")


def test_a_message_without_an_insertion_time_is_logged_without_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _process(_listener(), _message(1))
    assert "INFO Trigger Details: MessageId: m1, DequeueCount: 1, InsertedOn: None" in _said(caplog)


def test_a_failure_is_logged_with_its_traceback_and_a_body_in_the_wrong_encoding_without(
    caplog: pytest.LogCaptureFixture,
) -> None:
    run = _listener(Invoker(fails=ValueError("no")))
    _process(run, _message(1))
    [failed] = [r for r in caplog.records if r.name == "mlfn.host.functions"]
    [(_, _, invocation_id)] = run.invoker.calls
    assert failed.getMessage().startswith(f"Executed 'Functions.shout' (Failed, Id={invocation_id}")
    assert failed.exc_info is not None and failed.exc_info[0] is ValueError
    caplog.clear()
    run = _listener()
    assert _process(run, _message(1, content="not base64!")) == RELEASED
    assert run.invoker.calls == []  # the binding failed: the function is not called
    [failed] = [r for r in caplog.records if r.name == "mlfn.host.functions"]
    assert "message is not base64" in failed.getMessage() and not failed.exc_info


def test_a_body_in_the_none_encoding_is_read_and_poisoned_as_is() -> None:
    run = _listener(Invoker(fails=ValueError("no")), message_encoding="none")
    assert _process(run, _message(3, content="hello")) == [
        ("ensure", SETTING, "jobs-poison"),
        ("send", "jobs-poison", "hello"),
        ("delete", "jobs", "m1", "r0"),
    ]
    assert run.invoker.calls[0][1].get_body() == b"hello"


def test_a_body_that_is_not_utf8_fails_a_text_trigger_and_reaches_a_binary_one() -> None:
    stored = base64.b64encode(b"\xff\xfe").decode()
    run = _listener()
    assert _process(run, _message(1, content=stored)) == RELEASED
    assert run.invoker.calls == []
    run = _listener(data_type="binary")
    assert _process(run, _message(1, content=stored)) == DELETED
    assert run.invoker.calls[0][1].get_body() == b"\xff\xfe"


def test_outputs_are_written_before_the_message_is_deleted() -> None:
    run = _listener(Invoker(outputs={"out": "HELLO"}))
    assert _process(run, _message(1)) == [
        ("ensure", SETTING, "jobs-out"),
        ("send", "jobs-out", base64.b64encode(b"HELLO").decode()),
        *DELETED,
    ]


def test_a_message_whose_outputs_cannot_be_written_is_retried() -> None:
    run = _listener(Invoker(outputs={"out": "HELLO"}))
    run.storage.fail("send", OSError("storage down"))
    assert _process(run, _message(1))[-1] == RELEASED[0]


@pytest.mark.parametrize(
    ("count", "fails", "step", "doing"),
    [
        (1, False, "delete", "deleting it"),
        (1, True, "update", "releasing it for a retry"),
        (3, True, "send", "moving it to the poison queue"),
        (4, False, "send", "moving it to the poison queue"),
    ],
)
def test_a_settlement_that_fails_is_logged_and_the_message_left_to_come_back(
    count: int, fails: bool, step: str, doing: str, caplog: pytest.LogCaptureFixture
) -> None:
    run = _listener(Invoker(fails=ValueError("no") if fails else None))
    run.storage.fail(step, OSError("storage down\nsecond line"))
    asked = _process(run, _message(count))  # no raise into the listener
    assert asked[-1][0] == step  # nothing asked after it: a copy not made is not deleted
    assert _said(caplog)[-1] == (f"ERROR message m1 of queue jobs: {doing} failed: storage down")


def test_a_settlement_failure_without_words_is_named_by_its_type(
    caplog: pytest.LogCaptureFixture,
) -> None:
    run = _listener()
    run.storage.fail("delete", ConnectionError())
    _process(run, _message(1))
    assert (
        _said(caplog)[-1] == "ERROR message m1 of queue jobs: deleting it failed: ConnectionError"
    )


def _until(condition: Callable[[], bool]) -> Callable[[], Awaitable[None]]:
    """A function body that runs until ``condition`` holds (a few turns of the loop)."""

    async def body() -> None:
        for _ in range(100):
            if condition():
                return
            await pause(0)
        raise AssertionError("not met: the lease keeper did not renew")

    return body


@pytest.fixture
def naps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """How long the lease keeper waits each time; it does not wait at all."""
    asked: list[float] = []

    async def nap(seconds: float) -> None:
        asked.append(seconds)
        await pause(0)

    monkeypatch.setattr(queue_listener.asyncio, "sleep", nap)
    return asked


def test_the_lease_is_renewed_every_half_lease_while_the_function_runs(
    naps: list[float],
) -> None:
    invoker = Invoker()
    run = _listener(invoker, lease_s=30)
    invoker.body = _until(lambda: len(run.storage.calls) == 2)
    assert _process(run, _message(1)) == [
        ("update", "jobs", "m1", "r0", 30),
        ("update", "jobs", "m1", "r1", 30),
        ("delete", "jobs", "m1", "r2"),  # with the receipt the last renewal gave
    ]
    assert naps and set(naps) == {15.0}


def test_a_failed_message_is_released_with_the_receipt_of_its_last_renewal(
    naps: list[float],
) -> None:
    invoker = Invoker(fails=ValueError("no"))
    run = _listener(invoker, lease_s=30)
    invoker.body = _until(lambda: len(run.storage.calls) == 1)
    assert _process(run, _message(1)) == [
        ("update", "jobs", "m1", "r0", 30),
        ("update", "jobs", "m1", "r1", 7),
    ]


def test_a_renewal_that_fails_is_logged_and_tried_again(
    naps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    invoker = Invoker()
    run = _listener(invoker, lease_s=30)
    run.storage.fail("update", OSError("storage down"))
    invoker.body = _until(lambda: len(run.storage.calls) == 2)
    assert _process(run, _message(1)) == [
        ("update", "jobs", "m1", "r0", 30),  # failed: the receipt stays
        ("update", "jobs", "m1", "r0", 30),
        ("delete", "jobs", "m1", "r1"),
    ]
    assert "WARNING renewing the lease of message m1 failed: storage down" in _said(caplog)


@pytest.mark.parametrize("fails", [False, True])
def test_no_lease_keeper_is_left_running_once_the_message_is_settled(
    fails: bool, naps: list[float]
) -> None:
    invoker = Invoker(fails=ValueError("no") if fails else None)
    run = _listener(invoker, lease_s=30)
    invoker.body = _until(lambda: len(run.storage.calls) == 1)

    async def process() -> set[asyncio.Task[Any]]:
        await run.listener._process(_message(1))
        for _ in range(5):
            await pause(0)
        return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]

    assert asyncio.run(process()) == set()
    assert len(run.storage.calls) == 2  # one renewal, then the settlement


def test_no_lease_keeper_is_left_running_when_the_processing_is_cancelled(
    naps: list[float],
) -> None:
    """Cancelled (the host stopping), the message is left to its lease; its keeper must not
    go on renewing it, or it would stay hidden as long as the process lives."""
    invoker = Invoker()
    run = _listener(invoker, lease_s=30)
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    invoker.body = hang

    async def process() -> set[asyncio.Task[Any]]:
        task = asyncio.create_task(run.listener._process(_message(1)))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(5):
            await pause(0)
        return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]

    assert asyncio.run(process()) == set()


@pytest.mark.parametrize("settle", ["release", "delete", "park"])
def test_a_renewal_after_the_message_is_settled_leaves_it_alone(settle: str) -> None:
    storage = Storage()
    lease = Lease(Queue(storage, "jobs"), _message(1), lease_s=30)  # type: ignore[arg-type]
    lease.renew()
    {"release": lambda: lease.release(0), "delete": lease.delete, "park": lease.park}[settle]()
    # The renewal was sent to its thread before the failure cancelled it, and ran late.
    late = threading.Thread(target=lease.renew)
    late.start()
    late.join()
    assert storage.calls[0] == ("update", "jobs", "m1", "r0", 30)
    assert len(storage.calls) == 2, storage.calls  # released (visible now) stays released
    assert storage.calls[1][0] == ("delete" if settle == "delete" else "update")


class _Pager:
    """The SDK's ItemPaged: pages made as they are asked for."""

    def __init__(self, pages: list[list[str]]) -> None:
        self._pages = pages
        self.asked = 0

    def by_page(self) -> Iterator[Iterator[str]]:
        for page in self._pages:
            self.asked += 1
            yield iter(page)


@dataclass
class _PolledQueue:
    pager: _Pager
    asked: list[dict[str, Any]] = field(default_factory=list)

    def receive_messages(self, **options: Any) -> _Pager:
        self.asked.append(options)
        return self.pager


@pytest.mark.parametrize(("lease_s", "visibility"), [(30, 30), (2.6, 3), (0.4, 1)])
def test_a_poll_asks_once_for_a_batch_leased_for_the_lease_in_whole_seconds(
    lease_s: float, visibility: int
) -> None:
    queue = _PolledQueue(_Pager([["a", "b"], ["c"]]))
    assert receive(queue, batch_size=16, lease_s=lease_s) == ["a", "b"]  # type: ignore[arg-type]
    assert queue.asked == [
        {"messages_per_page": 16, "max_messages": 16, "visibility_timeout": visibility}
    ]
    assert queue.pager.asked == 1  # the second page is never requested


def test_a_poll_of_an_empty_queue_gets_nothing() -> None:
    assert receive(_PolledQueue(_Pager([])), batch_size=4, lease_s=30) == []  # type: ignore[arg-type]

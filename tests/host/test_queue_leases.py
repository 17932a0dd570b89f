"""A fetched queue message is never stranded by the local host: a poll that fails after
storage handed messages over cannot drop them, and a lease renewal that lands after the message
was settled cannot hide it again."""

from __future__ import annotations

import base64
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from runtime.host.queue_listener import Lease, receive
from tests.conftest import AzuriteInfo


def test_a_poll_is_one_request_so_a_failing_second_one_cannot_drop_leased_messages(
    azurite: AzuriteInfo,
) -> None:
    from azure.core.exceptions import ServiceResponseError
    from azure.storage.queue import QueueClient

    name = f"leases{uuid.uuid4().hex[:12]}"
    responses = 0

    def second_fails(_: Any) -> None:
        # The storage answered; the connection breaks on whatever the poll asks next.
        nonlocal responses
        responses += 1
        if responses == 3:  # create_queue, send_message, then the poll's first GET
            return
        if responses > 3:
            raise ServiceResponseError("connection reset on the second request")

    queue = QueueClient.from_connection_string(
        azurite.connection_string, name, raw_response_hook=second_fails, retry_total=0
    )
    try:
        queue.create_queue()
        queue.send_message(base64.b64encode(b"one").decode())
        got = receive(queue, batch_size=16, lease_s=30)
        assert [base64.b64decode(m.content) for m in got] == [b"one"]
        assert got[0].dequeue_count == 1
    finally:
        QueueClient.from_connection_string(azurite.connection_string, name).delete_queue()


@dataclass
class _Receipt:
    pop_receipt: str


@dataclass
class _Queue:
    """Records what a lease asks of storage."""

    calls: list[tuple[str, float | None]] = field(default_factory=list)

    def update_message(self, _id: str, _receipt: str, *, visibility_timeout: int) -> _Receipt:
        self.calls.append(("update", visibility_timeout))
        return _Receipt(uuid.uuid4().hex)

    def delete_message(self, _id: str, _receipt: str) -> None:
        self.calls.append(("delete", None))


@dataclass
class _Message:
    id: str = "m1"
    pop_receipt: str = "r0"
    dequeue_count: int = 1
    expires_on: Any = None


@pytest.mark.parametrize("settle", ["release", "delete", "park"])
def test_a_renewal_after_the_message_is_settled_leaves_it_alone(settle: str) -> None:
    queue = _Queue()
    lease = Lease(queue, _Message(), lease_s=30)  # type: ignore[arg-type]
    lease.renew()
    {"release": lambda: lease.release(0), "delete": lease.delete, "park": lease.park}[settle]()
    # The renewal was sent to its thread before the failure cancelled it, and ran late.
    late = threading.Thread(target=lease.renew)
    late.start()
    late.join()
    assert queue.calls[0] == ("update", 30)
    assert len(queue.calls) == 2, queue.calls  # released (visible now) stays released
    assert queue.calls[1][0] == ("delete" if settle == "delete" else "update")

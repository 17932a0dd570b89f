"""A fetched queue message is never stranded by the local host: a poll that fails after
storage handed messages over cannot drop them (against Azurite; a renewal landing after the
message was settled is tests/host/test_queue_settle.py's)."""

from __future__ import annotations

import base64
import uuid
from typing import Any

from runtime.host.queue_listener import receive
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

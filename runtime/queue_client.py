"""Producing requests for, and collecting results from, an app's endpoint queues (what
``mlfn enqueue`` and ``mlfn results`` do, usable from Python)."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runtime import message_encoding

if TYPE_CHECKING:
    from azure.storage.queue import QueueClient

MESSAGE_LIMIT = 64 * 1024
REQUESTS_CONTAINER = "requests"


@dataclass(frozen=True)
class Sent:
    id: str
    queue: str
    instances_blob: str | None


class EndpointQueues:
    """The request and result queues of one endpoint, on one storage account.

    encoding: the app's host.json ``messageEncoding``; ``base64`` (the default) or ``none``.
    """

    def __init__(
        self, connection: str, requests: str, results: str, encoding: str = "base64"
    ) -> None:
        self._connection = connection
        self.requests = requests
        self.results = results
        self._encoding = encoding
        self._queues: dict[str, QueueClient] = {}

    def send(self, name: str, instances: list[Any], job_id: str | None = None) -> Sent:
        """Queue ``instances`` under ``job_id``; inputs too large for a message go to blob
        ``requests/NAME/<id>.jsonl`` and the message carries that path (claim check)."""
        job_id = job_id or uuid.uuid4().hex
        body = json.dumps({"id": job_id, "instances": instances}, separators=(",", ":"))
        blob = None
        if len(self._encode(body)) > MESSAGE_LIMIT:
            blob = f"{REQUESTS_CONTAINER}/{name}/{job_id}.jsonl"
            self._upload(blob, "\n".join(json.dumps(i, separators=(",", ":")) for i in instances))
            body = json.dumps({"id": job_id, "instances_blob": blob})
        queue = self._queue(self.requests)
        queue.send_message(self._encode(body))
        return Sent(job_id, self.requests, blob)

    def send_raw(self, body: str) -> None:
        """Queue a message body as given (encoded as the app expects)."""
        self._queue(self.requests).send_message(self._encode(body))

    def receive(self, wait_s: float = 0.0, delete: bool = True) -> Iterator[dict[str, Any]]:
        """Result documents from the results queue; waits up to ``wait_s`` for the first."""
        queue = self._queue(self.results)
        deadline = time.monotonic() + wait_s
        while True:
            batch = list(queue.receive_messages(max_messages=32, visibility_timeout=30))
            for message in batch:
                yield json.loads(self._decode(message.content))
                if delete:
                    queue.delete_message(message)
            if batch:
                deadline = time.monotonic()  # got some: drain what is there, then stop
                continue
            if time.monotonic() >= deadline:
                return
            time.sleep(0.2)

    def read_blob(self, path: str) -> dict[str, Any]:
        """A result written to blob (``predictions_blob``)."""
        from azure.storage.blob import BlobClient

        container, _, blob = path.partition("/")
        client = BlobClient.from_connection_string(self._connection, container, blob)
        with client:
            doc: dict[str, Any] = json.loads(client.download_blob().readall())
        return doc

    def _queue(self, name: str) -> QueueClient:
        """The queue's client, created (with the queue, if missing) once per queue."""
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.queue import QueueClient

        if name not in self._queues:
            client = QueueClient.from_connection_string(self._connection, name)
            with contextlib.suppress(ResourceExistsError):
                client.create_queue()
            self._queues[name] = client
        return self._queues[name]

    def _upload(self, path: str, text: str) -> None:
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob import ContainerClient

        container, _, blob = path.partition("/")
        client = ContainerClient.from_connection_string(self._connection, container)
        with client:
            with contextlib.suppress(ResourceExistsError):
                client.create_container()
            client.upload_blob(blob, text.encode(), overwrite=True)

    def _encode(self, text: str) -> str:
        return message_encoding.encode(text.encode(), self._encoding)

    def _decode(self, content: str) -> str:
        return message_encoding.decode(content, self._encoding).decode()

"""Producing requests for, and collecting results from, an app's endpoint queues (what
``mlfn enqueue`` and ``mlfn results`` do, usable from Python)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runtime.config import STORAGE_SETTING, Connection, Settings, storage_account
from runtime.errors import UnsupportedEncoding
from runtime.protocol import jobs, message_encoding
from runtime.storage import blob_files, clients
from runtime.telemetry import traceparent as current_traceparent

if TYPE_CHECKING:
    from azure.storage.queue import QueueClient


@dataclass(frozen=True)
class Sent:
    id: str
    queue: str
    instances_blob: str | None
    traceparent: str | None = None  # the trace the job's scoring continues


class EndpointQueues:
    """The request and result queues of one endpoint, on one storage account.

    connection: the account, as ``clients.connection`` reads an app setting, or a connection
        string; ``setting`` names the app setting a string came from, for errors.
    encoding: the app's host.json ``messageEncoding``; ``base64`` (the default) or ``none``.
    """

    def __init__(
        self,
        connection: Connection | str,
        requests: str,
        results: str,
        encoding: str = "base64",
        *,
        setting: str = STORAGE_SETTING,
        settings: Settings | None = None,
    ) -> None:
        if isinstance(connection, str):
            connection = storage_account(setting, connection)
        self._connection = connection
        self._settings = settings or Settings()
        self.requests = requests
        self.results = results
        self._encoding = encoding
        self._queues: dict[str, QueueClient] = {}

    def send(
        self,
        name: str,
        instances: list[Any],
        job_id: str | None = None,
        traceparent: str | None = None,
    ) -> Sent:
        """Queue ``instances`` under ``job_id``; inputs too large for a message go to blob
        (claim check) and the message carries that path. The message carries ``traceparent``
        (default: the current span's, when this process is in a trace, else a new trace's), so
        the job's scoring continues the producer's trace."""
        job_id = job_id or uuid.uuid4().hex
        traceparent = traceparent or current_traceparent()
        body = jobs.encode_request(job_id, instances, traceparent)
        blob = None
        if len(self._encode(body)) > jobs.MESSAGE_LIMIT:
            blob = jobs.request_blob(name, job_id)
            self._upload(blob, jobs.encode_instances(instances))
            body = jobs.encode_claim_check(job_id, blob, traceparent)
        self._queue(self.requests).send_message(self._encode(body))
        return Sent(job_id, self.requests, blob, traceparent)

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

    def read_blob(self, ref: str) -> dict[str, Any]:
        """A result written to blob (``predictions_blob``). The app writes it as is: one
        stored with a Content-Encoding is not the app's, and is refused, never inflated."""
        container, path = jobs.split_blob_ref(ref, "predictions_blob")
        client = clients.blob(self._connection, container, path, self._settings)
        with client:
            downloader = client.download_blob(decompress=False)
            encoding = blob_files.encoding_of(
                downloader.properties.content_settings.content_encoding
            )
            if encoding is not None:
                raise UnsupportedEncoding(
                    f"result {ref!r}", encoding, "which mlfn never writes a result with"
                )
            doc: dict[str, Any] = json.loads(downloader.readall())
        return doc

    def _queue(self, name: str) -> QueueClient:
        """The queue's client, created (with the queue, if missing) once per queue."""
        if name not in self._queues:
            client = clients.queue(self._connection, name, self._settings)
            clients.create_if_missing(client.create_queue)
            self._queues[name] = client
        return self._queues[name]

    def _upload(self, ref: str, data: bytes) -> None:
        container, path = jobs.split_blob_ref(ref)
        client = clients.container(self._connection, container, self._settings)
        with client:
            clients.create_if_missing(client.create_container)
            client.upload_blob(path, data, overwrite=True)

    def _encode(self, text: str) -> str:
        return message_encoding.encode(text.encode(), self._encoding)

    def _decode(self, content: str) -> str:
        return message_encoding.decode(content, self._encoding).decode()

"""A storage account that is down is said once by the local host, however many listeners wait
for it and however often they retry, and once when it is back (issue 21, item 9)."""

from __future__ import annotations

import base64
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import AzuriteInfo
from tests.support import LocalHost, queue_client, wait_for

APP = """
import azure.functions as func

app = func.FunctionApp()


@app.queue_trigger(arg_name="msg", queue_name="%JOBS_QUEUE%", connection="AzureWebJobsStorage")
def shout(msg: func.QueueMessage) -> None:
    pass


@app.queue_trigger(arg_name="msg", queue_name="%JOBS_QUEUE%-b", connection="AzureWebJobsStorage")
def whisper(msg: func.QueueMessage) -> None:
    pass


@app.blob_trigger(arg_name="blob", path="%JOBS_QUEUE%-in/{name}", connection="AzureWebJobsStorage")
def files(blob: func.InputStream) -> None:
    pass


@app.blob_trigger(arg_name="blob", path="%JOBS_QUEUE%-in2/{name}", connection="AzureWebJobsStorage")
def more_files(blob: func.InputStream) -> None:
    pass
"""


class SwitchProxy:
    """A TCP proxy to ``upstream`` that, until ``up()``, drops every connection unanswered:
    a storage account that is down, then back."""

    def __init__(self, upstream: int) -> None:
        self._upstream = upstream
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(64)
        self.port = self._server.getsockname()[1]
        self.dropped = 0
        self._forward = False
        threading.Thread(target=self._accept, daemon=True).start()

    def up(self) -> None:
        self._forward = True

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            if not self._forward:
                self.dropped += 1
                conn.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self._upstream))
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                s.close()

    def close(self) -> None:
        self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()


def _said(output: str) -> list[str]:
    """The host's warnings and errors."""
    return [line for line in output.splitlines() if " WARNING mlfn." in line or " ERROR " in line]


@pytest.fixture
def proxies(azurite: AzuriteInfo) -> Iterator[tuple[SwitchProxy, SwitchProxy]]:
    blob, queue = SwitchProxy(azurite.blob_port), SwitchProxy(azurite.queue_port)
    yield blob, queue
    blob.close()
    queue.close()


def test_an_account_that_is_down_is_said_once_for_every_listener_and_once_when_back(
    tmp_path: Path, azurite: AzuriteInfo, proxies: tuple[SwitchProxy, SwitchProxy]
) -> None:
    blob, queue = proxies
    name = f"out{uuid.uuid4().hex[:12]}"
    (tmp_path / "function_app.py").write_text(APP)
    host_json = {"version": "2.0", "extensions": {"queues": {"maxPollingInterval": "00:00:01"}}}
    (tmp_path / "host.json").write_text(json.dumps(host_json))
    key = next(p for p in azurite.connection_string.split(";") if p.startswith("AccountKey="))
    connection = (
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;{key};"
        f"BlobEndpoint=http://127.0.0.1:{blob.port}/devstoreaccount1;"
        f"QueueEndpoint=http://127.0.0.1:{queue.port}/devstoreaccount1;"
    )
    env = {"AzureWebJobsStorage": connection, "JOBS_QUEUE": name, "MLFN_STORE_RETRIES": "0"}
    host = LocalHost(tmp_path, env).start()
    try:
        # Each of the four listeners tried, and some tried again.
        wait_for(lambda: blob.dropped > 2 and queue.dropped > 2, 60, "listeners to retry")
        down = _said(host.output())
        assert len(down) == 1, down  # one line, not one for each listener and retry
        assert "(AzureWebJobsStorage) unreachable" in down[0]
        assert "blob and queue triggers wait for it" in down[0]
        assert "npx azurite" in down[0] and "Traceback" not in host.output()
        blob.up()
        queue.up()
        wait_for(lambda: "answers again" in host.output(), 60, "the account to be back")
        queue_client(azurite.connection_string, name).send_message(
            base64.b64encode(b"hello").decode()
        )
        wait_for(
            lambda: "Executed 'Functions.shout' (Succeeded" in host.output(), 60, "a message run"
        )
    finally:
        host.stop()
    output = host.output()
    assert output.count("answers again") == 1
    assert len(_said(output)) == 1

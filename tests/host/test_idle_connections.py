"""The local host closes connections that hold a slot without sending a whole request: idle
ones, and half-sent request heads (slowloris), on a new connection or a kept-alive one."""

from __future__ import annotations

import socket
from pathlib import Path

from runtime.host.http_server import HEAD_TIMEOUT_S
from tests.support import LocalHost

APP = """
import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="hello")
def hello(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("hello-body")
"""
HEAD = b"GET /api/hello HTTP/1.1\r\nHost: 127.0.0.1\r\n"


def _closed_by_host(conn: socket.socket) -> bool:
    """Read until the host closes the connection; False if it is still open after the
    bound (the timeout and a wide margin)."""
    conn.settimeout(HEAD_TIMEOUT_S + 15)
    try:
        while conn.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def test_idle_and_half_sent_connections_are_closed_while_others_are_served(
    tmp_path: Path,
) -> None:
    (tmp_path / "function_app.py").write_text(APP)
    (tmp_path / "host.json").write_text('{"version": "2.0"}')
    host = LocalHost(tmp_path, {}, ("--no-queues",)).start()
    address = ("127.0.0.1", host.port)
    conns = [socket.create_connection(address) for _ in range(3)]
    try:
        _silent, partial, kept = conns  # the first sends nothing at all
        partial.sendall(HEAD)  # and never the blank line that ends it
        kept.sendall(HEAD + b"\r\n")
        answer = b""
        while b"hello-body" not in answer:
            answer += kept.recv(65536)
        kept.sendall(b"GET /api/hello HTTP/1.1\r\n")  # a second request, begun and left
        with host.client() as http:
            assert http.get("/api/hello").text == "hello-body"  # others are served meanwhile
        assert [_closed_by_host(c) for c in conns] == [True, True, True]
    finally:
        for conn in conns:
            conn.close()
        host.stop()

"""The local host closes connections that hold a slot without sending a whole request: idle
ones, half-sent request heads (slowloris), on a new connection or a kept-alive one, and bodies
sent slower than the Functions host's server accepts."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import pytest

from runtime.host.http_server import (
    BODY_GRACE_S,
    HEAD_TIMEOUT_S,
    MIN_BODY_RATE,
    _BodyRefused,
    _read_body,
)
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
        kept.settimeout(60)
        answer = b""
        while b"hello-body" not in answer and (chunk := kept.recv(65536)):
            answer += chunk
        assert b"hello-body" in answer, answer  # not closed before its answer
        kept.sendall(b"GET /api/hello HTTP/1.1\r\n")  # a second request, begun and left
        with host.client() as http:
            assert http.get("/api/hello").text == "hello-body"  # others are served meanwhile
        assert [_closed_by_host(c) for c in conns] == [True, True, True]
    finally:
        for conn in conns:
            conn.close()
        host.stop()


def test_a_body_sent_a_byte_at_a_time_is_refused_and_its_connection_closed(
    tmp_path: Path,
) -> None:
    (tmp_path / "function_app.py").write_text(APP)
    (tmp_path / "host.json").write_text('{"version": "2.0"}')
    host = LocalHost(tmp_path, {}, ("--no-queues",)).start()
    head = b"POST /api/hello HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000000\r\n\r\n"
    # A byte a second, far below the rate, for at most the grace and a wide margin.
    bound = int(BODY_GRACE_S + 15)
    assert bound < MIN_BODY_RATE  # the bytes sent are no excuse
    answer, sent = b"", 0
    try:
        with socket.create_connection(("127.0.0.1", host.port)) as slow:
            slow.sendall(head)
            slow.settimeout(1)  # each wait for an answer paces the next byte
            while sent < bound:
                try:
                    chunk = slow.recv(65536)
                except TimeoutError:
                    try:
                        slow.sendall(b"x")
                    except OSError:  # closed as the wait ended: its answer is read below
                        break
                    sent += 1
                    continue
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                answer += chunk
            else:
                raise AssertionError(f"still open after {sent} bytes over {bound} s")
            with contextlib.suppress(OSError):
                while chunk := slow.recv(65536):
                    answer += chunk
    finally:
        host.stop()
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"RequestTimeout" in answer and b"bytes/s" in answer


def test_a_body_cut_short_by_a_disconnect_is_refused_not_run_on_a_part() -> None:
    messages = iter(
        [{"type": "http.request", "body": b'{"instances": [', "more_body": True},
         {"type": "http.disconnect"}]
    )  # fmt: skip

    async def receive() -> dict[str, object]:
        return next(messages)

    with pytest.raises(_BodyRefused, match="client left after 15 bytes"):
        asyncio.run(_read_body(receive, limit=1 << 20))  # type: ignore[arg-type]

"""A loopback HTTP proxy that forwards to a real server but cuts blob downloads short: the
client gets the full Content-Length and only part of the body, as a dropped connection would."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager


def _read_message(sock: socket.socket) -> tuple[bytes, bytes]:
    """Headers (through the blank line) and body (by Content-Length) of one HTTP message."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data, b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n", body


@contextmanager
def truncating_proxy(upstream_port: int, keep_fraction: float = 0.5) -> Iterator[int]:
    """Yield the proxy's port. GET responses with a body lose the rest after ``keep_fraction``;
    everything else passes through. One request per connection."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(32)
    server.settimeout(0.2)
    stop = threading.Event()

    def handle(client: socket.socket) -> None:
        with client, socket.create_connection(("127.0.0.1", upstream_port), timeout=10) as upstream:
            head, body = _read_message(client)
            if not head:
                return
            # One exchange per connection keeps the proxy simple.
            request = head.replace(b"Connection: keep-alive", b"Connection: close")
            upstream.sendall(request + body)
            response_head, response_body = _read_message(upstream)
            if head.startswith(b"GET ") and response_body:
                response_body = response_body[: int(len(response_body) * keep_fraction)]
            client.sendall(response_head + response_body)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        server.close()

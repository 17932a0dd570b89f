"""The local host starts a request's deadline when its first bytes were read, not when its
function is called: a request that waited behind a busy event loop has that much less left,
and one whose deadline passed while it waited is answered 504 without a run. And a function's
answer reaches the host without a turn of the loop in between."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest

from runtime.host.http_server import ARRIVED, HttpHost, http_protocol
from runtime.host.invoke import Invoker
from runtime.host.metadata import index_app
from tests.support import FLOWER_MODELS, make_app

COUNTED = (
    FLOWER_MODELS
    + """
from pathlib import Path
from runtime import Endpoint, Limits

endpoint = Endpoint(Flower, Out, model=MODEL, limits=Limits(timeout_ms=5000))

@endpoint.predict
def predict(instances, model):
    with Path(RUNS).open("a") as runs:
        runs.write("run\\n")
    return [Out(label=0, probabilities=[1.0, 0.0, 0.0]) for _ in instances]
"""
)
FLOWER = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
BODY = json.dumps({"instances": [FLOWER]}).encode()


def _post(host: HttpHost, arrived: float | None) -> tuple[int, dict[str, Any]]:
    """POST the body to the endpoint through the host's ASGI side, its first bytes read at
    ``arrived`` (as the host's HTTP protocol notes it in the scope)."""
    scope: dict[str, Any] = {
        "type": "http", "method": "POST", "path": "/api/counted/predict",
        "raw_path": b"/api/counted/predict", "query_string": b"",
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(BODY)).encode())],
    }  # fmt: skip
    if arrived is not None:
        scope[ARRIVED] = arrived
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    asyncio.run(host(scope, receive, send))
    return sent[0]["status"], json.loads(sent[1]["body"])


def test_a_request_whose_deadline_passed_while_it_waited_is_answered_504_unrun(
    tmp_path: Path,
    example_models: dict[str, Path],
    isolated_imports: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs = tmp_path / "runs.txt"
    source = COUNTED.replace("MODEL", repr(str(example_models["iris"])))
    app = make_app(tmp_path / "app", {"counted": source.replace("RUNS", repr(str(runs)))})
    monkeypatch.setenv("MLFN_CACHE_DIR", str(tmp_path / "cache"))
    invoker = Invoker()
    host = HttpHost(index_app(app), "api", invoker)
    try:
        assert _post(host, None)[0] == 200  # no stamp: from the host's own reading
        assert _post(host, time.monotonic() - 1)[0] == 200  # 4 of its 5 s left
        status, body = _post(host, time.monotonic() - 10)  # waited past its 5 s
    finally:
        invoker.close()
    assert status == 504 and body["error"]["type"] == "DeadlineExceeded"
    assert runs.read_text().count("run") == 2  # the late one never ran


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 7071)}.get(
            name, default
        )

    def write(self, data: Any) -> None:
        self.written += bytes(data)

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_the_host_s_http_protocol_notes_when_a_request_s_first_bytes_were_read() -> None:
    import uvicorn
    from uvicorn.server import ServerState

    async def main() -> list[tuple[float, float, float]]:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            while (await receive()).get("more_body"):
                pass
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        config = uvicorn.Config(app, lifespan="off", log_level="warning")
        config.load()
        protocol = http_protocol()(config=config, server_state=ServerState(), app_state={})
        protocol.connection_made(_Transport())
        seen = []
        for path in (b"/a", b"/b"):  # a second request on the same connection: its own time
            head = b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n"
            began = time.monotonic()
            protocol.data_received(head[:10])  # half the head: no request yet
            await asyncio.sleep(0.02)
            protocol.data_received(head[10:] + b"ab")  # the rest of it, half the body
            headed = time.monotonic()
            await asyncio.sleep(0.02)
            protocol.data_received(b"cd")  # the rest of the body, later: the same request
            seen.append((began, protocol.cycle.scope[ARRIVED], headed))
            for _ in range(100):  # answered: the connection is free for the next
                await asyncio.sleep(0.001)
                if protocol.cycle.response_complete:
                    break
        protocol.connection_lost(None)
        return seen

    for began, stamped, headed in asyncio.run(main()):
        # Its first bytes (read at once after ``began``), not its head's end (20 ms later), nor
        # its body's.
        assert began <= stamped < began + (headed - began) / 2


def test_the_rest_of_a_body_answered_from_its_head_is_no_next_request_s_arrival() -> None:
    # A 401 (or 404, 413) is answered from the head; the body's rest comes after, on the
    # kept-alive connection. Those bytes are the old request's: the next request's deadline
    # starts when its own bytes come, not then.
    import uvicorn
    from uvicorn.server import ServerState

    async def main() -> tuple[float, float]:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            status = 401 if scope["path"] == "/early" else 200
            await send({"type": "http.response.start", "status": status, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        config = uvicorn.Config(app, lifespan="off", log_level="warning")
        config.load()
        protocol = http_protocol()(config=config, server_state=ServerState(), app_state={})
        transport = _Transport()
        protocol.connection_made(transport)
        protocol.data_received(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        for _ in range(100):  # answered from the head
            await asyncio.sleep(0.001)
            if protocol.cycle.response_complete:
                break
        protocol.data_received(b"0123456789")  # the body's rest, after the answer
        await asyncio.sleep(0.05)
        began = time.monotonic()
        protocol.data_received(b"GET /probe HTTP/1.1\r\nHost: x\r\n\r\n")
        for _ in range(100):
            await asyncio.sleep(0.001)
            if protocol.cycle.scope["path"] == "/probe":
                break
        stamped = protocol.cycle.scope[ARRIVED]
        protocol.connection_lost(None)
        assert b"401" in transport.written
        return began, stamped

    began, stamped = asyncio.run(main())
    assert stamped >= began


def test_an_async_function_with_a_timeout_runs_in_the_host_s_own_task() -> None:
    # Not in a task of its own (asyncio.wait_for's on Python 3.11; 3.12's has none): resuming
    # the host's task once that one ended took a turn of the loop, which under overload made
    # answers late.
    from runtime.host.metadata import Binding, FunctionInfo

    async def function(req: object) -> object:
        return asyncio.current_task()

    trigger = Binding("req", "httpTrigger", "IN", {})
    out = Binding("$return", "http", "OUT", {})
    info = FunctionInfo("f", trigger, (trigger, out), function, True, False, ".")
    invoker = Invoker(timeout_s=30.0)

    async def main() -> tuple[object, object]:
        invocation = await invoker.call(info, object())
        return invocation.returned, asyncio.current_task()

    try:
        ran_in, caller = asyncio.run(main())
    finally:
        invoker.close()
    assert ran_in is caller


@pytest.mark.parametrize("timeout_s", [30.0, None])
def test_a_function_s_own_timeout_error_is_its_failure_not_the_host_s_timeout(
    timeout_s: float | None,
) -> None:
    # A socket's or an SDK's TimeoutError inside the function fails the invocation as it is;
    # only the host's functionTimeout says "Timeout value ... exceeded".
    from runtime.host.metadata import Binding, FunctionInfo

    async def function(req: object) -> object:
        raise TimeoutError("the socket's")

    trigger = Binding("req", "httpTrigger", "IN", {})
    out = Binding("$return", "http", "OUT", {})
    info = FunctionInfo("f", trigger, (trigger, out), function, True, False, ".")
    invoker = Invoker(timeout_s=timeout_s)
    try:
        with pytest.raises(TimeoutError, match="the socket's"):
            asyncio.run(invoker.call(info, object()))
    finally:
        invoker.close()

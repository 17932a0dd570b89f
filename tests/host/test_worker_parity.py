"""The local host hands a function what the Functions host and Python worker hand it, and
answers what they answer (tests/worker shows the worker's side with its own code; the
differences found are in docs/decisions.md, entry 18)."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import AzuriteInfo
from tests.support import LocalHost, queue_client, wait_for
from tests.worker.apps import EXTRA_PACKAGE, reporting_app


@pytest.fixture
def reporting(tmp_path: Path, isolated_imports: None) -> Iterator[Path]:
    """The reporting app, imported in this process."""
    app = reporting_app(tmp_path / "app")
    yield app
    for name in list(sys.modules):
        if name.split(".")[0] == EXTRA_PACKAGE:
            del sys.modules[name]


def _requests(app: Path, *requests: tuple[str, str]) -> list[httpx.Response]:
    """Send ``(method, path)`` requests at once to the local host's HTTP side, in process."""
    from runtime.host.http_server import HttpHost
    from runtime.host.invoke import Invoker
    from runtime.host.metadata import index_app

    invoker = Invoker()
    host = HttpHost(index_app(app), "api", invoker)

    async def send() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=host)
        async with httpx.AsyncClient(transport=transport, base_url="http://local") as client:
            return await asyncio.gather(*(client.request(m, p) for m, p in requests))

    try:
        return asyncio.run(send())
    finally:
        invoker.close()


def test_the_invocation_id_is_on_the_thread_that_runs_the_function(reporting: Path) -> None:
    first, second, on_loop = (
        r.json()
        for r in _requests(
            reporting,
            ("GET", "/api/sync/a?sleep=0.2"),
            ("GET", "/api/sync/b?sleep=0.2"),
            ("GET", "/api/async/c"),
        )
    )
    assert first["thread"] != second["thread"]
    for seen in (first, second, on_loop):
        assert seen["thread_local_invocation_id"] == seen["invocation_id"]
    assert (first["on_event_loop"], on_loop["on_event_loop"]) == (False, True)
    assert first["retry_count"] == 0


def test_each_invocation_has_its_own_id_and_trace_as_the_host_writes_them() -> None:
    """A version-4 UUID an invocation, as the Functions host's, and a W3C trace parent of
    random ids (never all zeros, which the W3C spec makes invalid)."""
    from runtime.host.invoke import Context, new_invocation_id

    ids = {new_invocation_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(uuid.UUID(i).version == 4 and str(uuid.UUID(i)) == i for i in ids)
    parents = [Context("f", ".", "i").trace_context.trace_parent for _ in range(1000)]
    assert len(set(parents)) == 1000
    for parent in parents:
        version, trace, span, flags = parent.split("-")
        assert (version, flags, len(trace), len(span)) == ("00", "01", 32, 16)
        assert int(trace, 16) and int(span, 16)


def test_function_directory_is_the_folder_of_the_functions_source(reporting: Path) -> None:
    (elsewhere,) = _requests(reporting, ("GET", "/api/elsewhere"))
    assert elsewhere.text == str(reporting / EXTRA_PACKAGE)


def test_returning_none_or_bytes_from_an_http_function_is_a_failed_invocation(
    reporting: Path,
) -> None:
    nothing, raw = _requests(reporting, ("GET", "/api/nothing"), ("GET", "/api/raw"))
    assert (nothing.status_code, nothing.content) == (500, b"")
    assert (raw.status_code, raw.content) == (500, b"")


def test_query_values_arrive_as_the_host_sends_them(reporting: Path) -> None:
    (seen,) = _requests(reporting, ("GET", "/api/sync/a?x=1&empty=&x=2&Key=3&key=4&flag"))
    assert seen.json()["params"] == {"x": "1,2", "Key": "3,4"}


def test_response_header_names_keep_the_case_the_function_gave(reporting: Path) -> None:
    (answer,) = _requests(reporting, ("GET", "/api/headers"))
    names = [name for name, _ in answer.headers.raw]
    assert b"Retry-After" in names and b"X-Mixed-Case" in names
    assert answer.headers["content-type"] == "text/plain; charset=utf-8"


def test_a_queue_message_that_is_not_utf8_fails_before_the_function_runs(
    tmp_path: Path, azurite: AzuriteInfo
) -> None:
    name = f"reports{uuid.uuid4().hex[:12]}"
    env = {"AzureWebJobsStorage": azurite.connection_string, "REPORT_QUEUE": name}
    host = LocalHost(reporting_app(tmp_path / "app"), env).start()
    try:
        jobs = queue_client(azurite.connection_string, name)
        jobs.send_message(base64.b64encode(b'{"text": "caf\xe9"}').decode())  # latin-1
        jobs.send_message(base64.b64encode('{"text": "caf\u00e9"}'.encode()).decode())
        poison = queue_client(azurite.connection_string, f"{name}-poison")
        out = queue_client(azurite.connection_string, f"{name}-out")
        outputs: list[dict[str, Any]] = []

        def settled() -> bool:
            outputs.extend(json.loads(base64.b64decode(m.content)) for m in out.receive_messages())
            return len(outputs) == 2 or bool(outputs and poison.peek_messages())

        wait_for(settled, 30, "both messages to be settled")
    finally:
        host.stop()
    assert [bytes.fromhex(o["body"]).decode() for o in outputs] == ['{"text": "caf\u00e9"}']
    assert outputs[0]["same_invocation"] is True
    assert "message body is not UTF-8" in host.output()


def test_an_app_that_seeds_random_does_not_repeat_the_hosts_ids() -> None:
    import random

    from runtime.host.invoke import new_invocation_id

    random.seed(0)
    first = new_invocation_id()
    random.seed(0)
    assert new_invocation_id() != first

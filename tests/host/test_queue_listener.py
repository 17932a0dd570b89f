"""The local host's queue listener is generic: a hand-written v2 app with a queue trigger and a
queue output runs under it, against Azurite, with the Functions host's delivery semantics."""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import AzuriteInfo
from tests.support import LocalHost, queue_client, wait_for

if TYPE_CHECKING:
    from azure.storage.queue import QueueClient

PLAIN_QUEUE_APP = """
import azure.functions as func

app = func.FunctionApp()


@app.queue_trigger(arg_name="msg", queue_name="%JOBS_QUEUE%", connection="AzureWebJobsStorage")
@app.queue_output(arg_name="out", queue_name="%JOBS_QUEUE%-out", connection="AzureWebJobsStorage")
def shout(msg: func.QueueMessage, out: func.Out[str]) -> None:
    text = msg.get_body().decode()
    if text == "fail":
        raise ValueError("this message always fails")
    out.set([text.upper(), f"dequeue_count={msg.dequeue_count} id={msg.id}"])
"""


@pytest.fixture
def queue_app(tmp_path: Path, azurite: AzuriteInfo) -> Iterator[tuple[LocalHost, str]]:
    name = f"jobs{uuid.uuid4().hex[:12]}"
    (tmp_path / "function_app.py").write_text(PLAIN_QUEUE_APP)
    host_json = {
        "version": "2.0",
        "extensions": {"queues": {"maxPollingInterval": "00:00:01", "maxDequeueCount": 2}},
    }
    (tmp_path / "host.json").write_text(json.dumps(host_json))
    env = {"AzureWebJobsStorage": azurite.connection_string, "JOBS_QUEUE": name}
    host = LocalHost(tmp_path, env).start()
    yield host, name
    host.stop()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _lease_updates(azurite: AzuriteInfo, queue: str) -> list[int]:
    """The visibility timeouts the host set on messages of ``queue`` (a lease renewed, a
    message released or parked), in order, from Azurite's access log."""
    pattern = re.compile(
        rf'"PUT /devstoreaccount1/{queue}/messages/[^ ?]+\?[^ ]*visibilitytimeout=(\d+)[^ ]* '
        r'HTTP/1\.1" 204'
    )
    return [int(m) for m in pattern.findall(azurite.log_path.read_text(errors="replace"))]


def _empty(queue: QueueClient) -> bool:
    """No message in ``queue``, visible or not: the queue's count includes the messages a
    lease hides, which ``peek_messages`` never shows."""
    return queue.get_queue_properties().approximate_message_count == 0


def test_messages_run_the_function_and_outputs_are_written_base64(
    queue_app: tuple[LocalHost, str], azurite: AzuriteInfo
) -> None:
    host, name = queue_app
    queue_client(azurite.connection_string, name).send_message(_b64("hello"))
    out = queue_client(azurite.connection_string, f"{name}-out")
    got: list[str] = []
    wait_for(
        lambda: bool(
            got.extend(base64.b64decode(m.content).decode() for m in out.receive_messages())
            or len(got) >= 2
        ),
        30,
        "two outputs",
        log=host.output,
    )
    assert got[0] == "HELLO"
    assert got[1].startswith("dequeue_count=1 id=")
    # Deleted, not just leased: a message left after success would run again once its
    # lease lapsed (30 s here, past this wait).
    wait_for(lambda: _empty(queue_client(azurite.connection_string, name)), 10, "the deletion")


def test_a_failing_message_goes_to_poison_after_max_dequeue_count(
    queue_app: tuple[LocalHost, str], azurite: AzuriteInfo
) -> None:
    host, name = queue_app
    queue_client(azurite.connection_string, name).send_message(_b64("fail"))
    poison = queue_client(azurite.connection_string, f"{name}-poison")
    seen: list[str] = []
    wait_for(
        lambda: bool(seen.extend(m.content for m in poison.receive_messages())) or bool(seen),
        60,
        "the poison message",
        log=host.output,
    )
    assert [base64.b64decode(c).decode() for c in seen] == ["fail"]  # the body, copied as stored
    assert host.output().count("Executed 'Functions.shout' (Failed") == 2
    assert "Moving message to queue" in host.output()
    # Moved, not copied: the original is deleted, not left invisible to come back later.
    wait_for(lambda: _empty(queue_client(azurite.connection_string, name)), 10, "the deletion")


def test_a_message_that_is_not_base64_fails_like_on_azure(
    queue_app: tuple[LocalHost, str], azurite: AzuriteInfo
) -> None:
    host, name = queue_app
    queue_client(azurite.connection_string, name).send_message("plain text, not base64!")
    poison = queue_client(azurite.connection_string, f"{name}-poison")
    wait_for(lambda: bool(poison.peek_messages()), 60, "the poison message", log=host.output)
    assert "not base64" in host.output()


def test_a_queue_trigger_without_its_connection_setting_stops_the_host_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_imports: None
) -> None:
    import uvicorn
    from click.testing import CliRunner

    from runtime import config
    from runtime.cli import main

    (tmp_path / "function_app.py").write_text(PLAIN_QUEUE_APP)
    (tmp_path / "host.json").write_text('{"version": "2.0"}')
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):  # as in a fresh shell: no storage account, no mlfn settings
        if key.startswith(("MLFN_", "AzureWebJobs")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("JOBS_QUEUE", "jobs")
    monkeypatch.setattr(config, "_current", None)  # process-wide state a subprocess starts without
    monkeypatch.setattr(config, "_warned", False)

    def listening(*args: object, **kwargs: object) -> None:
        raise AssertionError("the host started serving")

    monkeypatch.setattr(uvicorn, "run", listening)
    azure_log = logging.getLogger("azure")  # `mlfn serve` quietens it, for the whole process
    level = azure_log.level
    try:
        result = CliRunner().invoke(main, ["serve"])
    finally:
        azure_log.setLevel(level)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exc_info  # a message, not a crash
    assert "'AzureWebJobsStorage'" in result.stderr and "--no-queues" in result.stderr
    assert "Traceback" not in result.stderr


HANGING_APP = """
import asyncio
import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.queue_trigger(arg_name="msg", queue_name="%JOBS_QUEUE%", connection="AzureWebJobsStorage")
async def hang(msg: func.QueueMessage) -> None:
    await asyncio.sleep(3600)


@app.route(route="hang")
async def hang_http(req: func.HttpRequest) -> func.HttpResponse:
    await asyncio.sleep(3600)
    return func.HttpResponse("never")
"""


def test_function_timeout_fails_a_hung_invocation_so_its_message_is_retried_then_poisoned(
    tmp_path: Path, azurite: AzuriteInfo
) -> None:
    name = f"hang{uuid.uuid4().hex[:12]}"
    (tmp_path / "function_app.py").write_text(HANGING_APP)
    host_json = {
        "version": "2.0",
        "functionTimeout": "00:00:01",
        "extensions": {"queues": {"maxPollingInterval": "00:00:01", "maxDequeueCount": 2}},
    }
    (tmp_path / "host.json").write_text(json.dumps(host_json))
    env = {"AzureWebJobsStorage": azurite.connection_string, "JOBS_QUEUE": name}
    host = LocalHost(tmp_path, env).start()
    try:
        queue_client(azurite.connection_string, name).send_message(_b64("stuck"))
        poison = queue_client(azurite.connection_string, f"{name}-poison")
        wait_for(lambda: bool(poison.peek_messages()), 60, "the hung message in the poison queue")
        with host.client() as http:
            assert http.get("/api/hang").status_code == 500  # after the timeout, not never
    finally:
        host.stop()
    output = host.output()
    assert output.count("Executed 'Functions.hang' (Failed") == 2  # maxDequeueCount
    assert "Timeout value of 1s exceeded by function 'Functions.hang'" in output


def test_a_message_that_cannot_have_a_poison_queue_is_parked_not_redelivered_forever(
    tmp_path: Path, azurite: AzuriteInfo
) -> None:
    # 57 characters: a valid queue name, but "-poison" takes it past the 63 the service allows.
    name = f"long{uuid.uuid4().hex}{'x' * 21}"
    assert len(name) == 57
    (tmp_path / "function_app.py").write_text(PLAIN_QUEUE_APP)
    host_json = {
        "version": "2.0",
        "extensions": {"queues": {"maxPollingInterval": "00:00:01", "maxDequeueCount": 1}},
    }
    (tmp_path / "host.json").write_text(json.dumps(host_json))
    env = {
        "AzureWebJobsStorage": azurite.connection_string,
        "JOBS_QUEUE": name,
        "MLFN_HOST_QUEUE_LEASE_S": "1",
    }
    host = LocalHost(tmp_path, env).start()
    try:
        queue = queue_client(azurite.connection_string, name)
        queue.send_message(_b64("fail"))
        wait_for(lambda: "cannot have a poison queue" in host.output(), 30, "the failure")
        # Unparked, the message would be back after its 1 s lease and fail again each second:
        # parked, it is hidden for days (the week the service allows, or until it expires).
        wait_for(lambda: bool(_lease_updates(azurite, name)), 10, "the message to be parked")
        (hidden_s,) = _lease_updates(azurite, name)
        assert hidden_s > 6 * 24 * 3600
        assert queue.get_queue_properties().approximate_message_count == 1  # kept, not lost
        assert list(queue.receive_messages(visibility_timeout=1)) == []  # and not redelivered
    finally:
        host.stop()
    output = host.output()
    assert output.count("Executed 'Functions.shout' (Failed") == 1
    assert output.count("cannot have a poison queue") == 1


STARVING_APP = """
import asyncio
import time

import azure.functions as func

app = func.FunctionApp()


@app.queue_trigger(arg_name="msg", queue_name="%JOBS_QUEUE%", connection="AzureWebJobsStorage")
async def starve(msg: func.QueueMessage) -> None:
    # What a store outage does to the app: every thread of the loop's default executor is
    # stuck in blocking work (model loads, claim-check reads) for longer than a lease.
    loop = asyncio.get_running_loop()
    for _ in range(32):  # the most threads a default executor has
        loop.run_in_executor(None, time.sleep, 10)
    await asyncio.sleep(10)
"""


def test_lease_renewal_goes_on_while_the_apps_thread_pool_is_starved(
    tmp_path: Path, azurite: AzuriteInfo
) -> None:
    name = f"starve{uuid.uuid4().hex[:12]}"
    (tmp_path / "function_app.py").write_text(STARVING_APP)
    host_json = {"version": "2.0", "extensions": {"queues": {"maxPollingInterval": "00:00:01"}}}
    (tmp_path / "host.json").write_text(json.dumps(host_json))
    env = {
        "AzureWebJobsStorage": azurite.connection_string,
        "JOBS_QUEUE": name,
        "MLFN_HOST_QUEUE_LEASE_S": "3",
    }
    host = LocalHost(tmp_path, env).start()
    try:
        queue = queue_client(azurite.connection_string, name)
        queue.send_message(_b64("work"))
        wait_for(lambda: not queue.peek_messages(), 30, "the host to take the message")
        # Renewed every half lease (1.5 s) on the listener's own threads: three renewals, a
        # lease and a half in, well within the 10 s the pool is starved. Were renewals queued
        # behind the stuck threads, none would come before those 10 s are over.
        wait_for(lambda: len(_lease_updates(azurite, name)) >= 3, 8, "three lease renewals")
        assert set(_lease_updates(azurite, name)) == {3}
        # Another instance polling the queue (this test) must not get the message.
        assert list(queue.receive_messages(visibility_timeout=30)) == []
        wait_for(
            lambda: "Executed 'Functions.starve' (Succeeded" in host.output(), 30, "the function"
        )
    finally:
        host.stop()
    assert host.output().count("Executed 'Functions.starve'") == 1


def test_unreachable_storage_is_one_line_with_a_hint_not_a_traceback_per_retry(
    tmp_path: Path,
) -> None:
    (tmp_path / "function_app.py").write_text(PLAIN_QUEUE_APP)
    (tmp_path / "host.json").write_text(json.dumps({"version": "2.0"}))
    nobody = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=eA==;"
        "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;"
        "QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;"
    )
    env = {"AzureWebJobsStorage": nobody, "JOBS_QUEUE": "jobs", "MLFN_STORE_RETRIES": "0"}
    host = LocalHost(tmp_path, env).start()
    try:
        wait_for(lambda: "unreachable" in host.output(), 30, "the account said to be down")
    finally:
        host.stop()
    output = host.output()
    assert "Traceback" not in output
    assert "npx azurite --skipApiVersionCheck" in output and "--no-queues" in output
    lines = [line for line in output.splitlines() if "unreachable" in line]
    # Retries are not said again (tests/host/test_storage_outage.py waits for them).
    assert len(lines) == 1 and "retrying every 5s" in lines[0]

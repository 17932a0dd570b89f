"""Queue names as Azure reads them: the queue extension lowercases a trigger's or an output's
queue name (written out, or read from an app setting through %Setting%) before it uses it, so an
app that names ``Orders`` listens to ``orders``. ``mlfn serve`` must do the same, or the app
behaves differently under it and on Azure."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import AzuriteInfo
from tests.support import LocalHost, queue_client, wait_for

UPPER_CASE_APP = """
import azure.functions as func

app = func.FunctionApp()


@app.function_name("literal")
@app.queue_trigger(arg_name="msg", queue_name="Literal{tag}", connection="AzureWebJobsStorage")
@app.queue_output(arg_name="out", queue_name="%OUT_QUEUE%", connection="AzureWebJobsStorage")
def literal(msg: func.QueueMessage, out: func.Out[str]) -> None:
    out.set("literal:" + msg.get_body().decode().upper())


@app.function_name("from_setting")
@app.queue_trigger(arg_name="msg", queue_name="%IN_QUEUE%", connection="AzureWebJobsStorage")
@app.queue_output(arg_name="out", queue_name="%OUT_QUEUE%", connection="AzureWebJobsStorage")
def from_setting(msg: func.QueueMessage, out: func.Out[str]) -> None:
    out.set("setting:" + msg.get_body().decode().upper())
"""


@pytest.fixture
def upper_case_app(tmp_path: Path, azurite: AzuriteInfo) -> Iterator[tuple[LocalHost, str]]:
    tag = uuid.uuid4().hex[:12]
    (tmp_path / "function_app.py").write_text(UPPER_CASE_APP.replace("{tag}", tag))
    host_json = {"version": "2.0", "extensions": {"queues": {"maxPollingInterval": "00:00:01"}}}
    (tmp_path / "host.json").write_text(json.dumps(host_json))
    env = {
        "AzureWebJobsStorage": azurite.connection_string,
        "IN_QUEUE": f"FromSetting{tag}",
        "OUT_QUEUE": f"Scored{tag}",
    }
    host = LocalHost(tmp_path, env).start()
    yield host, tag
    host.stop()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_upper_case_queue_names_are_the_lowercase_queues_as_on_azure(
    upper_case_app: tuple[LocalHost, str], azurite: AzuriteInfo
) -> None:
    host, tag = upper_case_app
    # Enqueued where Azure's extension would look: the names lowercased.
    queue_client(azurite.connection_string, f"literal{tag}").send_message(_b64("one"))
    queue_client(azurite.connection_string, f"fromsetting{tag}").send_message(_b64("two"))
    out = queue_client(azurite.connection_string, f"scored{tag}")
    got: list[str] = []

    def both_scored() -> bool:
        got.extend(base64.b64decode(m.content).decode() for m in out.receive_messages())
        return len(got) >= 2

    try:
        wait_for(both_scored, 30, "both messages scored into the lowercase output queue")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{host.output()}") from None
    assert sorted(got) == ["literal:ONE", "setting:TWO"]

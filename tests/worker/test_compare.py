"""The same requests through the Functions worker's own code and through `mlfn serve` give the
same status, headers and body bytes; the same queue messages, the same result messages.

What may differ, and is left out of the comparison:
- transport headers the local host's HTTP server writes (content-length, date, server); on
  Azure the host's own server writes its own;
- the cold-start breakdown in V2 model metadata (``parameters.load``: timings of this process);
- ids the queue service assigns (an error result's ``message_id``), invocation ids and thread
  idents (the reporting app's report: only whether the id on the thread is the invocation's;
  mlfn's ``x-mlfn-invocation-id`` header: only that it names the invocation).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from runtime.triggers.invocation import INVOCATION_ID_HEADER
from tests.conftest import AzuriteInfo
from tests.support import LocalHost, queue_client, wait_for
from tests.worker.conftest import (
    DEAD_STORE_CALLS,
    FLOWER,
    JSON,
    PATIENT,
    VIRGINICA,
    app_settings,
    dead_store_settings,
    example_settings,
    needs_worker_code,
    predict_body,
)
from tests.worker.harness import (
    Call,
    HttpAnswer,
    HttpCall,
    InvocationResponse,
    QueueCall,
    Worker,
    failure,
    http_answer,
    output,
    run_in_fresh_worker,
    value_of,
)

pytestmark = needs_worker_code

TRANSPORT = {"content-length", "date", "server"}
INVOCATION_ID = INVOCATION_ID_HEADER


def _without_invocation_id(answer: HttpAnswer, invocation_id: str | None) -> HttpAnswer:
    """``answer`` without the invocation id header mlfn's routes add, once it is checked: the
    invocation's own id (``invocation_id``, when known), or at least an id the host made."""
    headers = dict(answer.headers)
    found = headers.pop(INVOCATION_ID, None)
    assert found is not None and (found == invocation_id or invocation_id is None)
    uuid.UUID(found)
    return HttpAnswer(answer.status, headers, answer.body)


def served(response: httpx.Response, mlfn: bool = True) -> HttpAnswer:
    """What `mlfn serve` answered, header names as sent, transport headers left out (and,
    from mlfn's routes, the invocation id)."""
    headers = {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in response.headers.raw
        if name.decode("latin-1").lower() not in TRANSPORT
    }
    answer = HttpAnswer(response.status_code, headers, response.content)
    return _without_invocation_id(answer, None) if mlfn else answer


def answered(response: InvocationResponse) -> HttpAnswer:
    """What the worker answered for one of mlfn's routes, its invocation id header checked
    against the invocation's and left out."""
    return _without_invocation_id(http_answer(response), response.invocation_id)


def send(client: httpx.Client, call: HttpCall) -> httpx.Response:
    return client.request(call.method, call.path, headers=list(call.headers), content=call.content)


def _v2_binary() -> tuple[tuple[tuple[str, str], ...], bytes]:
    x = np.array([list(FLOWER.values()), list(VIRGINICA.values())], dtype=np.float32)
    head = json.dumps(
        {
            "inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}}],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}, {"name": "label"}],
        }
    ).encode()  # fmt: skip
    headers = (
        ("content-type", "application/octet-stream"),
        ("inference-header-content-length", str(len(head))),
    )
    return headers, head + x.tobytes()


V2_JSON = json.dumps(
    {"id": "r-1", "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}
).encode()  # fmt: skip

EXAMPLE_CALLS = {
    "live": HttpCall("GET", "/api/v2/health/live"),
    "ready": HttpCall("GET", "/api/v2/health/ready"),
    "server": HttpCall("GET", "/api/v2"),
    "openapi": HttpCall("GET", "/api/openapi.json"),
    "docs": HttpCall("GET", "/api/docs"),
    "iris": HttpCall("POST", "/api/iris/predict", JSON, predict_body(FLOWER, VIRGINICA)),
    "iris not JSON": HttpCall("POST", "/api/iris/predict", JSON, b"{nope"),
    "iris empty": HttpCall("POST", "/api/iris/predict"),
    "iris too large": HttpCall("POST", "/api/iris/predict", JSON, b" " * (16 * 1024 * 1024 + 1)),
    "iris invalid": HttpCall("POST", "/api/iris/predict", JSON, predict_body({"sepal_length": -1})),
    "diabetes": HttpCall("POST", "/api/diabetes/predict", JSON, predict_body(PATIENT)),
    "diabetes invalid": HttpCall("POST", "/api/diabetes/predict", JSON, predict_body({"sex": 3})),
    "v2 json": HttpCall("POST", "/api/v2/models/iris/infer", JSON, V2_JSON),
    "v2 binary": HttpCall("POST", "/api/v2/models/iris/infer", *_v2_binary()),
    "v2 bad": HttpCall("POST", "/api/v2/models/iris/infer", JSON, b'{"inputs": 1}'),
    "v2 unknown version": HttpCall("POST", "/api/v2/models/iris/versions/nope/infer", JSON, V2_JSON),
    "v2 unknown model": HttpCall("POST", "/api/v2/models/tulips/infer", JSON, V2_JSON),
    "model ready": HttpCall("GET", "/api/v2/models/diabetes/ready"),
    "model metadata": HttpCall("GET", "/api/v2/models/iris"),
}  # fmt: skip


def _comparable(name: str, answer: HttpAnswer) -> HttpAnswer:
    if name != "model metadata":
        return answer
    doc = answer.json()
    del doc["parameters"]["load"]  # timings of the process that loaded it
    return HttpAnswer(answer.status, answer.headers, json.dumps(doc).encode())


@pytest.fixture(scope="module")
def example_host(example_worker: Worker, azurite: AzuriteInfo, store: str) -> Iterator[LocalHost]:
    """`mlfn serve` of the worker's own app folder, with the same settings and a cache of its
    own."""
    app = example_worker.app_dir
    host = LocalHost(app, example_settings(azurite, store, app.parent / "serve-cache")).start()
    yield host
    host.stop()


def test_the_example_app_answers_the_same_through_the_worker_and_mlfn_serve(
    example_worker: Worker, example_host: LocalHost
) -> None:
    futures = {name: example_worker.http_call(call) for name, call in EXAMPLE_CALLS.items()}
    with example_host.client() as client:
        local = {name: served(send(client, call)) for name, call in EXAMPLE_CALLS.items()}
    for name, future in futures.items():
        worker = _comparable(name, answered(future.result()))
        assert _comparable(name, local[name]) == worker, name
    statuses = {name: local[name].status for name in EXAMPLE_CALLS}
    assert statuses["iris too large"] == 413 and statuses["diabetes invalid"] == 422
    assert local["v2 binary"].headers["Inference-Header-Content-Length"].isdigit()


def _results(connection: str, queue: str, count: int) -> list[str]:
    results = queue_client(connection, queue)
    got: list[str] = []

    def arrived() -> bool:
        got.extend(base64.b64decode(m.content).decode() for m in results.receive_messages())
        return len(got) >= count

    wait_for(arrived, 30, f"{count} result messages on {queue}")
    return got


def test_queue_results_are_the_same_through_the_worker_and_mlfn_serve(
    example_worker: Worker, example_host: LocalHost, azurite: AzuriteInfo
) -> None:
    jobs = {
        "job-q1": json.dumps({"id": "job-q1", "instances": [FLOWER, VIRGINICA]}),
        "job-q2": json.dumps({"id": "job-q2", "instances": [{"sepal_length": "x"}]}),
    }
    requests = queue_client(azurite.connection_string, "iris-requests")
    for body in jobs.values():
        requests.send_message(base64.b64encode(body.encode()).decode())
    local = {
        json.loads(r)["id"]: json.loads(r)
        for r in _results(azurite.connection_string, "iris-results", 2)
    }
    for job_id, body in jobs.items():
        response = example_worker.queue("iris_queue", body)
        assert failure(response) is None
        result = json.loads(value_of(output(response, "out")))
        for doc in (result, local[job_id]):
            doc.pop("message_id", None)  # the queue service's id of the message
        assert local[job_id] == result, job_id
    assert local["job-q2"]["error"]["type"] == "ValidationFailed"


def test_an_unreachable_store_answers_the_same_through_the_worker_and_mlfn_serve(
    dead_store: dict[str, InvocationResponse],
    dead_store_app: Path,
    azurite: AzuriteInfo,
    store: str,
) -> None:
    settings = dead_store_settings(azurite, store, dead_store_app.parent / "serve-cache")
    host = LocalHost(dead_store_app, settings, ("--no-queues",)).start()
    try:
        with host.client() as client:
            for name, call in DEAD_STORE_CALLS.items():
                if isinstance(call, HttpCall):
                    assert served(send(client, call)) == answered(dead_store[name]), name
    finally:
        host.stop()
    assert http_answer(dead_store["iris"]).headers["Retry-After"] == "5"


# --- a hand-written app: what functions are handed, and what the worker refuses -----------

REPORT_CALLS: dict[str, Call] = {
    "query and headers": HttpCall(
        "GET",
        "/api/sync/a?x=1&empty=&x=2&Key=3&key=4&flag",
        (("X-Custom", "v"), ("X-Empty", ""), ("X-Twice", "1"), ("X-Twice", "2")),
    ),
    "raw body": HttpCall("POST", "/api/async/b", (("content-type", "application/octet-stream"),), b"\xff\x00\xfe raw"),
    "elsewhere": HttpCall("GET", "/api/elsewhere"),
    "headers": HttpCall("GET", "/api/headers"),
    "text": HttpCall("GET", "/api/text"),
    "none": HttpCall("GET", "/api/nothing"),
    "bytes": HttpCall("GET", "/api/raw"),
    "message": QueueCall("report_message", '{"text": "caf\u00e9"}'),
}  # fmt: skip


def _report(answer: HttpAnswer) -> HttpAnswer:
    """The report without what differs by nature: invocation ids and thread idents."""
    if answer.headers.get("content-type") != "application/json":
        return answer
    doc: dict[str, Any] = answer.json()
    doc["thread_local_invocation_id"] = doc["thread_local_invocation_id"] == doc["invocation_id"]
    del doc["invocation_id"], doc["thread"]
    # Keys sorted: the worker reads headers, query and route values from protobuf maps, whose
    # order is a process's own (on Azure too), not the request's.
    return HttpAnswer(answer.status, answer.headers, json.dumps(doc, sort_keys=True).encode())


@pytest.fixture(scope="module")
def reports(reporting: Path, reporting_settings: dict[str, str]) -> dict[str, InvocationResponse]:
    responses = run_in_fresh_worker(reporting, list(REPORT_CALLS.values()), reporting_settings)
    return dict(zip(REPORT_CALLS, responses, strict=True))


def test_a_plain_app_is_handed_and_answers_the_same_through_the_worker_and_mlfn_serve(
    reports: dict[str, InvocationResponse],
    reporting: Path,
    reporting_settings: dict[str, str],
    azurite: AzuriteInfo,
) -> None:
    host = LocalHost(reporting, app_settings(**reporting_settings)).start()
    try:
        with host.client() as client:
            local = {
                name: served(send(client, call), mlfn=False)
                for name, call in REPORT_CALLS.items()
                if isinstance(call, HttpCall)
            }
            message = REPORT_CALLS["message"]
            assert isinstance(message, QueueCall) and isinstance(message.body, str)
            queue = reporting_settings["REPORT_QUEUE"]
            queue_client(azurite.connection_string, queue).send_message(
                base64.b64encode(message.body.encode()).decode()
            )
            (local_message,) = _results(azurite.connection_string, f"{queue}-out", 1)
    finally:
        host.stop()
    for name in ("query and headers", "raw body", "elsewhere", "headers"):
        assert _report(local[name]) == _report(http_answer(reports[name])), name
    seen = local["query and headers"].json()
    assert seen["params"] == {"x": "1,2", "Key": "3,4"}
    assert seen["headers"] == {"x-custom": "v", "x-empty": "", "x-twice": "1,2"}
    # The worker refuses None and bytes for an HTTP $return: a failed invocation, a 500.
    for name in ("none", "bytes"):
        assert "unable to encode outgoing TypedData" in (failure(reports[name]) or ""), name
        assert (local[name].status, local[name].body) == (500, b""), name
    # A str $return reaches the host as a string; the host answers 200 with it, UTF-8.
    assert value_of(reports["text"].return_value) == "h\u00e9llo"
    assert (local["text"].status, local["text"].body) == (200, "h\u00e9llo".encode())
    # The message, as converted for the function: body, types, UTC times, the invocation id.
    assert json.loads(local_message) == json.loads(value_of(output(reports["message"], "out")))

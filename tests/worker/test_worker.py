"""Every function of the repository's app invoked through the Functions worker's own code
(azure-functions-runtime): HTTP requests as the host sends them (RpcHttp, raw body bytes),
queue messages with their trigger metadata; assertions on the runtime's InvocationResponse."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from runtime.triggers.invocation import INVOCATION_ID_HEADER
from tests.conftest import AzuriteInfo
from tests.support import ROOT, declared_functions, make_app
from tests.worker.conftest import (
    FLOWER,
    PATIENT,
    VIRGINICA,
    app_settings,
    example_settings,
    needs_worker_code,
)
from tests.worker.harness import (
    Call,
    HttpCall,
    InvocationResponse,
    QueueCall,
    StatusResult,
    Worker,
    failure,
    http_answer,
    output,
    run_in_fresh_worker,
    value_of,
)

pytestmark = needs_worker_code

INSTANCES = {"iris": FLOWER, "diabetes": PATIENT}
JSON = {"content-type": "application/json"}
INVOCATION_ID = INVOCATION_ID_HEADER


def _predict(worker: Worker, name: str, body: bytes) -> InvocationResponse:
    return worker.request("POST", f"/api/{name}/predict", headers=JSON, content=body)


def test_the_worker_indexes_and_loads_every_function_of_the_app(
    example_worker: Worker, isolated_imports: None
) -> None:
    assert set(example_worker.functions) == declared_functions(ROOT)
    assert {"iris_predict", "diabetes_queue", "iris_batch", "v2_model_infer", "openapi"} <= set(
        example_worker.functions
    )
    # What the host reads to decide how to send HTTP bodies: raw bytes, body only.
    assert example_worker.capabilities["RawHttpBodyBytes"] == "true"
    assert example_worker.capabilities["RpcHttpBodyOnly"] == "true"


def test_iris_predict_through_the_worker(example_worker: Worker) -> None:
    body = json.dumps({"instances": [FLOWER, VIRGINICA]}).encode()
    response = _predict(example_worker, "iris", body)
    answer = http_answer(response)
    assert answer.status == 200
    assert answer.headers == {
        "content-type": "application/json",
        INVOCATION_ID: response.invocation_id,  # every response names its invocation
    }
    doc = answer.json()
    assert [p["label"] for p in doc["predictions"]] == ["setosa", "virginica"]
    assert doc["model"]["name"] == "iris" and len(doc["model"]["sha256"]) == 64


def test_diabetes_predict_equals_onnxruntime(
    example_worker: Worker, example_models: dict[str, Path]
) -> None:
    answer = http_answer(
        _predict(example_worker, "diabetes", json.dumps({"instances": [PATIENT]}).encode())
    )
    assert answer.status == 200
    x = np.array([list(PATIENT.values())], dtype=np.float32)  # in the endpoint's column order
    (expected,) = ort.InferenceSession(str(example_models["diabetes"])).run(None, {"input": x})
    assert answer.json()["predictions"][0]["progression"] == pytest.approx(
        float(expected[0][0]), rel=1e-6
    )


@pytest.mark.parametrize("name", ["iris", "diabetes"])
def test_client_errors_through_the_workers_http_conversion(
    example_worker: Worker, name: str
) -> None:
    bad_json = http_answer(_predict(example_worker, name, b"{nope"))
    too_big = http_answer(_predict(example_worker, name, b" " * (16 * 1024 * 1024 + 1)))
    invalid = http_answer(
        _predict(example_worker, name, json.dumps({"instances": [{"nope": 1}]}).encode())
    )
    for answer, status, kind in (
        (bad_json, 400, "BadRequest"),
        (too_big, 413, "PayloadTooLarge"),
        (invalid, 422, "ValidationFailed"),
    ):
        assert answer.status == status, answer
        assert answer.headers.keys() == {"content-type", INVOCATION_ID}
        assert answer.json()["error"]["type"] == kind
    assert too_big.json()["error"]["detail"] == {"size": 16 * 1024 * 1024 + 1, "limit": 16 << 20}
    assert {d["field"] for d in invalid.json()["error"]["detail"]} >= {
        f"instances[0].{field}" for field in INSTANCES[name]
    }


def _v2_binary_request(x: np.ndarray) -> tuple[bytes, dict[str, str]]:
    head = {
        "inputs": [
            {
                "name": "input",
                "shape": list(x.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": x.nbytes},
            }
        ],
        "outputs": [
            {"name": "label", "parameters": {"binary_data": True}},
            {"name": "probabilities", "parameters": {"binary_data": True}},
        ],
    }
    header = json.dumps(head).encode()
    headers = {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }
    return header + x.tobytes(), headers


def _binary_outputs(body: bytes, header_length: int) -> dict[str, np.ndarray]:
    head = json.loads(body[:header_length])
    kinds = {"INT64": np.int64, "FP32": np.float32}
    tensors, offset = {}, header_length
    for out in head["outputs"]:
        size = out["parameters"]["binary_data_size"]
        raw = body[offset : offset + size]
        tensors[out["name"]] = np.frombuffer(raw, kinds[out["datatype"]]).reshape(out["shape"])
        offset += size
    assert offset == len(body)
    return tensors


def test_v2_infer_with_binary_tensors_keeps_raw_bytes_intact(
    example_worker: Worker, example_models: dict[str, Path]
) -> None:
    x = np.array([list(FLOWER.values()), list(VIRGINICA.values())], dtype=np.float32)
    body, headers = _v2_binary_request(x)
    with pytest.raises(UnicodeDecodeError):
        body.decode()  # a body the host must not turn into text on the way
    answer = http_answer(
        example_worker.request("POST", "/api/v2/models/iris/infer", headers=headers, content=body)
    )
    assert answer.status == 200, answer.body[:300]
    assert answer.headers["Content-Type"] == "application/octet-stream"
    got = _binary_outputs(answer.body, int(answer.headers["Inference-Header-Content-Length"]))
    label, probabilities = ort.InferenceSession(str(example_models["iris"])).run(None, {"input": x})
    np.testing.assert_array_equal(got["label"], label)
    np.testing.assert_array_equal(got["probabilities"], probabilities)


def test_v2_infer_with_json_tensors(example_worker: Worker) -> None:
    body = {
        "inputs": [
            {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}
        ]
    }
    answer = http_answer(
        example_worker.request(
            "POST", "/api/v2/models/iris/infer", headers=JSON, content=json.dumps(body).encode()
        )
    )
    assert answer.status == 200 and answer.headers["Content-Type"] == "application/json"
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    assert outputs["label"]["data"] == [0]
    assert struct.pack("<f", outputs["probabilities"]["data"][0])  # a float32 value
    broken = http_answer(
        example_worker.request(
            "POST", "/api/v2/models/iris/infer", headers=JSON, content=b'{"inputs": 1}'
        )
    )
    assert broken.status == 400 and set(broken.json()) == {"error"}


def test_openapi_health_and_server_metadata_routes(example_worker: Worker) -> None:
    response = example_worker.request("GET", "/api/openapi.json")
    openapi = http_answer(response)
    assert openapi.status == 200 and openapi.headers == {
        "content-type": "application/json",
        INVOCATION_ID: response.invocation_id,
    }
    assert {"/api/iris/predict", "/api/diabetes/predict"} <= set(openapi.json()["paths"])
    for path, doc in (
        ("/api/v2/health/live", {"live": True}),
        ("/api/v2/health/ready", {"ready": True}),
        ("/api/v2/models/iris/ready", {"name": "iris", "ready": True}),
    ):
        answer = http_answer(example_worker.request("GET", path))
        assert (answer.status, answer.json()) == (200, doc), path
    server = http_answer(example_worker.request("GET", "/api/v2")).json()
    assert server["extensions"] == ["binary_tensor_data"]
    docs = http_answer(example_worker.request("GET", "/api/docs"))
    assert (
        docs.header("content-type") == "text/html; charset=utf-8" and b"openapi.json" in docs.body
    )


def test_a_queue_message_scores_onto_the_output_binding(example_worker: Worker) -> None:
    job = json.dumps({"id": "job-1", "instances": [FLOWER]})
    response = example_worker.queue("iris_queue", job, message_id="m-1", dequeue_count=2)
    assert failure(response) is None
    assert response.return_value.WhichOneof("data") is None  # no $return: nothing returned
    result = output(response, "out")
    assert result is not None and result.WhichOneof("data") == "string"
    doc = json.loads(value_of(result))
    assert doc["id"] == "job-1" and doc["predictions"][0]["label"] == "setosa"


def test_a_bad_queue_message_gets_an_error_result_not_a_retry(example_worker: Worker) -> None:
    response = example_worker.queue(
        "diabetes_queue", json.dumps({"id": "job-2", "instances": "nope"}), message_id="m-2"
    )
    assert failure(response) is None  # retrying cannot help: the invocation succeeds
    doc = json.loads(value_of(output(response, "out")))
    assert doc["id"] == "job-2" and doc["message_id"] == "m-2"
    assert doc["error"]["type"] == "BadRequest"
    unreadable = example_worker.queue("diabetes_queue", "{nope", message_id="m-3")
    assert json.loads(value_of(output(unreadable, "out")))["id"] is None


# --- a model store that cannot be reached: a fresh worker with other app settings ------------


@pytest.mark.parametrize("name", ["iris", "diabetes"])
def test_an_unreachable_store_is_503_with_retry_after(
    dead_store: dict[str, InvocationResponse], name: str
) -> None:
    answer = http_answer(dead_store[name])
    assert answer.status == 503
    assert answer.headers == {
        "Retry-After": "5",
        "content-type": "application/json",
        INVOCATION_ID: dead_store[name].invocation_id,
    }
    assert answer.json()["error"]["type"] == "StoreUnavailable"
    ready = http_answer(dead_store["ready"])
    assert (ready.status, ready.header("retry-after")) == (503, "5")


def test_a_transient_failure_fails_the_invocation_so_the_host_retries(
    dead_store: dict[str, InvocationResponse],
) -> None:
    response = dead_store["queue"]
    assert response.result.status == StatusResult.Failure
    assert (failure(response) or "").startswith("StoreUnavailable: ")
    assert response.output_data == []  # no result message: the host retries, then poisons


# --- sync and async functions, and the invocation id on the threads that run them -----------


def test_sync_functions_run_on_pool_threads_with_their_invocation_id(
    concurrent_reports: list[InvocationResponse],
) -> None:
    reports = concurrent_reports
    first, second = (http_answer(r).json() for r in reports[:2])
    for response, seen in zip(reports[:2], (first, second), strict=True):
        assert seen["on_event_loop"] is False
        assert seen["invocation_id"] == response.invocation_id
        assert seen["thread_local_invocation_id"] == response.invocation_id
    assert first["thread"] != second["thread"]  # they ran at once, each on its own thread


def test_async_functions_run_on_the_event_loop_with_the_invocation_id_set_there(
    concurrent_reports: list[InvocationResponse],
) -> None:
    reports = concurrent_reports
    for response in reports[2:]:
        seen = http_answer(response).json()
        assert seen["on_event_loop"] is True
        assert seen["invocation_id"] == response.invocation_id
    threads = {http_answer(r).json()["thread"] for r in reports[2:]}
    assert len(threads) == 1  # one loop, one thread
    # The worker sets it on the loop's thread before each call: two async invocations that
    # overlap see the later one's (the loop thread is shared).
    assert {http_answer(r).json()["thread_local_invocation_id"] for r in reports[2:]} <= {
        r.invocation_id for r in reports[2:]
    }


# An endpoint whose predict reports the invocation id on its thread where the worker's log
# handler reads it (its thread-local storage), and which thread it ran on.
WHOSE = """
import threading

from pydantic import BaseModel

from runtime import Endpoint, Limits, OnnxModel


class Anything(BaseModel):
    x: float


class Seen(BaseModel):
    invocation_id: str | None
    thread: str


endpoint = Endpoint(Anything, Seen, model="iris.onnx", limits=Limits(inline_fast_runs=False))


@endpoint.predict
def predict(rows: list[Anything], model: OnnxModel) -> list[Seen]:
    from azure_functions_runtime.bindings.context import _invocation_id_local

    found = getattr(_invocation_id_local, "invocation_id", None)
    return [Seen(invocation_id=found, thread=threading.current_thread().name) for _ in rows]
"""


def test_predict_runs_with_its_invocation_id_on_its_thread_for_log_lines(
    tmp_path: Path, azurite: AzuriteInfo, store: str
) -> None:
    app = make_app(tmp_path / "app", {"whose": WHOSE})
    settings = app_settings(**example_settings(azurite, store, tmp_path / "cache"))
    body = json.dumps({"instances": [{"x": 1}]})
    calls: list[Call] = [
        HttpCall(
            "POST", "/api/whose/predict", (("content-type", "application/json"),), body.encode()
        ),
        QueueCall("whose_queue", json.dumps({"id": "job-whose", "instances": [{"x": 1}]})),
    ]
    http, queued = run_in_fresh_worker(app, calls, settings)
    answer = http_answer(http)
    (seen,) = answer.json()["predictions"]
    assert seen["invocation_id"] == http.invocation_id == answer.header(INVOCATION_ID)
    assert not seen["thread"].startswith("MainThread")  # a thread of mlfn's, not the loop's
    (seen,) = json.loads(value_of(output(queued, "out")))["predictions"]
    assert seen["invocation_id"] == queued.invocation_id


def test_a_deadline_is_answered_504_with_retry_after_and_a_bad_one_400(
    example_worker: Worker,
) -> None:
    body = json.dumps({"instances": [FLOWER]}).encode()
    late = http_answer(example_worker.request(
        "POST", "/api/iris/predict", headers={**JSON, "x-mlfn-timeout-ms": "0.001"}, content=body
    ))  # fmt: skip
    bad = http_answer(example_worker.request(
        "POST", "/api/iris/predict", headers={**JSON, "x-mlfn-timeout-ms": "soon"}, content=body
    ))  # fmt: skip
    roomy = http_answer(example_worker.request(
        "POST", "/api/iris/predict", headers={**JSON, "x-mlfn-timeout-ms": "60000"}, content=body
    ))  # fmt: skip
    tensor = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                          "data": list(FLOWER.values())}], "parameters": {"timeout": 1}}  # fmt: skip
    v2_late = http_answer(example_worker.request(
        "POST", "/api/v2/models/iris/infer", headers=JSON, content=json.dumps(tensor).encode()
    ))  # fmt: skip

    assert late.status == 504 and late.header("retry-after") == "1", late
    assert late.json()["error"]["type"] == "DeadlineExceeded"
    assert bad.status == 400 and "x-mlfn-timeout-ms" in bad.json()["error"]["message"]
    assert roomy.status == 200
    assert v2_late.status == 504 and v2_late.header("retry-after") == "1", v2_late


def test_a_v2_timeout_too_large_to_be_a_number_is_a_400_not_a_500(example_worker: Worker) -> None:
    tensor = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                          "data": list(FLOWER.values())}]}  # fmt: skip
    body = json.dumps(tensor).encode()[:-1] + b', "parameters": {"timeout": ' + b"9" * 401 + b"}}"
    answer = http_answer(example_worker.request(
        "POST", "/api/v2/models/iris/infer", headers=JSON, content=body
    ))  # fmt: skip
    assert answer.status == 400 and "parameters.timeout" in answer.json()["error"]

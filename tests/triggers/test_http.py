"""The HTTP adapter, called the way the worker calls it: real func.HttpRequest in, real
func.HttpResponse out. One test per error status of the contract."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import azure.functions as func
import onnxruntime as ort
import pytest

from runtime.config import Settings, storage_account
from runtime.registration import build_app
from tests.support import FLOWER_MODELS, make_app

IRIS = (
    FLOWER_MODELS
    + """
from runtime import Endpoint, Limits, OnnxModel

endpoint = Endpoint(Flower, Out, model=MODEL, limits=Limits(max_batch_size=2, max_request_bytes=2048))

@endpoint.predict
def predict(flowers, model: OnnxModel):
    BEHAVIOUR
    out = model.run({"input": [[f.sepal_length, f.sepal_width, f.petal_length, f.petal_width] for f in flowers]})
    return [Out(label=l, probabilities=p) for l, p in zip(out["label"].tolist(), out["probabilities"].tolist())]
"""
)

ROW = {"sepal_length": 5.9, "sepal_width": 3.0, "petal_length": 5.1, "petal_width": 1.8}

Call = Callable[..., func.HttpResponse]


def _app(
    tmp_path: Path, model: str, settings: Settings, behaviour: str = "pass"
) -> dict[str, Call]:
    source = IRIS.replace("MODEL", repr(model)).replace("BEHAVIOUR", behaviour)
    app_dir = make_app(tmp_path / "app", {"iris": source})
    app = build_app(app_dir / "functions", settings=settings)
    return {f.get_function_name(): f.get_user_function() for f in app.get_functions()}


def _post(fn: Call, body: bytes | str) -> tuple[int, dict[str, Any], func.HttpResponse]:
    raw = body.encode() if isinstance(body, str) else body
    resp = asyncio.run(
        fn(req=func.HttpRequest("POST", "http://localhost/api/iris/predict", body=raw))
    )
    return resp.status_code, json.loads(resp.get_body()), resp


@pytest.fixture
def iris(tmp_path: Path, example_models: dict[str, Path], isolated_imports: None) -> Call:
    settings = Settings(cache_dir=tmp_path / "cache")
    return _app(tmp_path, str(example_models["iris"]), settings)["iris_predict"]


def test_predictions_equal_onnxruntime_and_requests_over_max_batch_size_are_chunked(
    iris: Call, example_models: dict[str, Path]
) -> None:
    rows = [ROW, {**ROW, "petal_length": 1.2, "petal_width": 0.2}, {**ROW, "sepal_length": 6.5}]
    status, body, resp = _post(iris, json.dumps({"instances": rows}))
    assert status == 200 and resp.mimetype == "application/json"
    session = ort.InferenceSession(str(example_models["iris"]))
    import numpy as np

    x = np.array(
        [[r["sepal_length"], r["sepal_width"], r["petal_length"], r["petal_width"]] for r in rows],
        dtype=np.float32,
    )
    labels, probs = session.run(None, {"input": x})
    assert [p["label"] for p in body["predictions"]] == labels.tolist()
    assert [p["probabilities"] for p in body["predictions"]] == probs.tolist()
    assert body["model"]["name"] == "iris" and len(body["model"]["sha256"]) == 64


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "empty"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"inputs": []}', '"instances"'),
        (b'{"instances": {"a": 1}}', "must be a list"),
    ],
)
def test_malformed_body_is_400_naming_the_problem(iris: Call, body: bytes, needle: str) -> None:
    status, doc, _ = _post(iris, body)
    assert status == 400
    assert doc["error"]["type"] == "BadRequest" and needle in doc["error"]["message"]


def test_body_over_the_endpoint_limit_is_413_before_parsing(iris: Call) -> None:
    status, doc, _ = _post(iris, b"x" * 2049)  # not JSON either: size is checked first
    assert status == 413
    assert doc["error"]["detail"] == {"size": 2049, "limit": 2048}


def _valid_body(size: int) -> bytes:
    """A valid V1 body of exactly ``size`` bytes (white space after the JSON pads it)."""
    body = json.dumps({"instances": [ROW] * 10}).encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


def test_a_valid_body_is_held_to_the_limit_as_an_invalid_one_is(iris: Call) -> None:
    # A valid body is read by the fast path (pydantic in one pass), which must refuse it
    # by size as the careful path refuses an invalid one.
    status, doc, resp = _post(iris, _valid_body(2049))
    assert (status, resp.mimetype) == (413, "application/json")
    assert doc["error"]["type"] == "PayloadTooLarge"
    assert doc["error"]["detail"] == {"size": 2049, "limit": 2048}
    status, doc, _ = _post(iris, _valid_body(2048))  # at the limit: served
    assert status == 200 and len(doc["predictions"]) == 10
    status, doc, _ = _post(iris, b"x" * 2048)  # at the limit but invalid: read, and refused
    assert status == 400 and doc["error"]["type"] == "BadRequest"


def test_validation_errors_are_422_with_every_failing_field_path(iris: Call) -> None:
    bad = [ROW, {**ROW, "petal_width": -1}, {"sepal_length": "long"}]
    status, doc, _ = _post(iris, json.dumps({"instances": bad}))
    assert status == 422
    fields = {d["field"] for d in doc["error"]["detail"]}
    assert "instances[1].petal_width" in fields
    assert "instances[2].sepal_length" in fields
    assert "instances[2].petal_width" in fields  # missing
    assert "instances[0].sepal_length" not in fields


def test_empty_instances_is_422(iris: Call) -> None:
    status, doc, _ = _post(iris, b'{"instances": []}')
    assert status == 422 and doc["error"]["detail"][0]["field"] == "instances"


def test_unreachable_model_store_is_503_with_retry_after(
    tmp_path: Path, isolated_imports: None
) -> None:
    dead = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=eA==;BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;"
    settings = Settings(
        store_connection=storage_account("AzureWebJobsStorage", dead),
        cache_dir=tmp_path / "cache",
        store_retries=0,
        store_connect_timeout_s=1,
    )
    fn = _app(tmp_path, "az://models/iris.onnx", settings)["iris_predict"]
    status, doc, resp = _post(fn, json.dumps({"instances": [ROW]}))
    assert status == 503
    assert resp.headers["Retry-After"].isdigit()
    assert (
        doc["error"]["type"] == "StoreUnavailable"
        and "az://models/iris.onnx" in doc["error"]["message"]
    )


def test_missing_model_file_is_503_naming_the_uri(tmp_path: Path, isolated_imports: None) -> None:
    fn = _app(tmp_path, str(tmp_path / "nowhere.onnx"), Settings(cache_dir=tmp_path / "c"))[
        "iris_predict"
    ]
    status, doc, _ = _post(fn, json.dumps({"instances": [ROW]}))
    assert status == 503 and "nowhere.onnx" in doc["error"]["message"]


def test_a_bug_in_predict_is_500_without_traceback(
    tmp_path: Path, example_models: dict[str, Path], isolated_imports: None
) -> None:
    fn = _app(
        tmp_path,
        str(example_models["iris"]),
        Settings(cache_dir=tmp_path / "c"),
        "raise ZeroDivisionError('oops')",
    )["iris_predict"]
    status, doc, resp = _post(fn, json.dumps({"instances": [ROW]}))
    assert status == 500
    assert (
        doc["error"]["type"] == "PredictFailed" and "ZeroDivisionError" in doc["error"]["message"]
    )
    assert b"Traceback" not in resp.get_body()


def test_predict_returning_the_wrong_count_is_a_contract_error(
    tmp_path: Path, example_models: dict[str, Path], isolated_imports: None
) -> None:
    fn = _app(
        tmp_path, str(example_models["iris"]), Settings(cache_dir=tmp_path / "c"), "return []"
    )["iris_predict"]
    status, doc, _ = _post(fn, json.dumps({"instances": [ROW]}))
    assert status == 500
    assert (
        doc["error"]["type"] == "PredictContractError"
        and "0 outputs for 1 instances" in doc["error"]["message"]
    )


def test_corrupt_model_file_is_a_load_error(tmp_path: Path, isolated_imports: None) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not an onnx model")
    fn = _app(tmp_path, str(broken), Settings(cache_dir=tmp_path / "c"))["iris_predict"]
    status, doc, _ = _post(fn, json.dumps({"instances": [ROW]}))
    assert status == 500 and doc["error"]["type"] == "ModelLoadFailed"


def test_health_routes_answer_without_loading_anything(
    tmp_path: Path, isolated_imports: None
) -> None:
    fns = _app(tmp_path, str(tmp_path / "nowhere.onnx"), Settings(cache_dir=tmp_path / "c"))
    live = fns["health_live"](
        req=func.HttpRequest("GET", "http://localhost/api/v2/health/live", body=b"")
    )
    ready = fns["health_ready"](
        req=func.HttpRequest("GET", "http://localhost/api/v2/health/ready", body=b"")
    )
    assert (live.status_code, json.loads(live.get_body())) == (200, {"live": True})
    assert (ready.status_code, json.loads(ready.get_body())) == (200, {"ready": True})


def test_registered_functions_carry_the_contracts_routes_queues_and_auth_levels(
    tmp_path: Path, example_models: dict[str, Path], isolated_imports: None
) -> None:
    source = IRIS.replace("MODEL", repr(str(example_models["iris"]))).replace("BEHAVIOUR", "pass")
    app = build_app(make_app(tmp_path / "app", {"iris": source}) / "functions", settings=Settings())
    bindings = {
        f.get_function_name(): {(b := json.loads(raw))["type"]: b for raw in f.get_raw_bindings()}
        for f in app.get_functions()
    }
    assert sorted(bindings) == [
        "docs", "health_live", "health_ready", "iris_batch", "iris_predict", "iris_queue", "openapi",
        "v2_model_infer", "v2_model_metadata", "v2_model_ready", "v2_model_version_infer",
        "v2_model_version_metadata", "v2_model_version_ready", "v2_server_metadata",
    ]  # fmt: skip
    infer = bindings["v2_model_version_infer"]["httpTrigger"]
    assert infer["route"] == "v2/models/{model_name}/versions/{model_version}/infer"
    assert infer["authLevel"] == "FUNCTION"
    # Metadata loads the model, so it needs the key (docs/decisions.md); readiness does not.
    assert bindings["v2_model_metadata"]["httpTrigger"]["authLevel"] == "FUNCTION"
    assert bindings["v2_model_ready"]["httpTrigger"]["authLevel"] == "ANONYMOUS"
    predict = bindings["iris_predict"]["httpTrigger"]
    assert (predict["route"], predict["methods"], predict["authLevel"]) == (
        "iris/predict",
        ["POST"],
        "FUNCTION",
    )
    assert bindings["health_live"]["httpTrigger"]["authLevel"] == "ANONYMOUS"
    assert bindings["health_ready"]["httpTrigger"]["route"] == "v2/health/ready"
    queue = bindings["iris_queue"]
    assert queue["queueTrigger"]["queueName"] == "iris-requests"
    assert queue["queue"]["queueName"] == "iris-results" and queue["queue"]["direction"] == "OUT"
    assert queue["queueTrigger"]["connection"] == "AzureWebJobsStorage"
    files = bindings["iris_batch"]["blobTrigger"]
    assert (files["path"], files["source"], files["connection"]) == (
        "iris-batch/{name}",
        "EventGrid",
        "AzureWebJobsStorage",
    )

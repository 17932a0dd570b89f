"""The repository's own app under `mlfn serve` (a subprocess), models in Azurite, real HTTP."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from sklearn.datasets import load_diabetes, load_iris

from functions.diabetes.endpoint import FEATURES
from functions.iris.endpoint import SPECIES
from tests.conftest import AzuriteInfo
from tests.support import ROOT, LocalHost, app_env, copy_examples, count_blob_gets

IRIS_FIELDS = ("sepal_length", "sepal_width", "petal_length", "petal_width")


@pytest.fixture
def host(tmp_path: Path, azurite: AzuriteInfo, models_in_blob: str) -> Iterator[LocalHost]:
    app = copy_examples(tmp_path / "app")
    env = app_env(azurite.connection_string, models_in_blob, tmp_path)
    # No queue listeners: the run's one Azurite is shared, and a host stopped after each test
    # could take another test's iris message (tests/test_cli.py) and leave it invisible.
    server = LocalHost(app, env, ("--no-queues",)).start()
    yield server
    server.stop()


def test_iris_predictions_equal_onnxruntime_on_the_whole_data_set(
    host: LocalHost, example_models: dict[str, Path]
) -> None:
    x = load_iris().data.astype(np.float32)
    instances = [dict(zip(IRIS_FIELDS, map(float, row), strict=True)) for row in x]
    with host.client() as http:
        r = http.post("/api/iris/predict", json={"instances": instances})
    assert r.status_code == 200, r.text
    labels, probs = ort.InferenceSession(str(example_models["iris"])).run(None, {"input": x})
    predictions = r.json()["predictions"]
    assert [p["label"] for p in predictions] == [SPECIES[i] for i in labels]
    got = np.array(
        [[p["probabilities"][s] for s in SPECIES] for p in predictions], dtype=np.float32
    )
    np.testing.assert_array_equal(got, probs)


def test_diabetes_predictions_equal_onnxruntime(
    host: LocalHost, example_models: dict[str, Path]
) -> None:
    x = load_diabetes(scaled=False).data.astype(np.float32)
    instances = [
        {**dict(zip(FEATURES, map(float, row), strict=True)), "sex": int(row[1])} for row in x
    ]
    with host.client() as http:
        r = http.post("/api/diabetes/predict", json={"instances": instances})
    assert r.status_code == 200, r.text
    (expected,) = ort.InferenceSession(str(example_models["diabetes"])).run(None, {"input": x})
    got = np.array([[p["progression"]] for p in r.json()["predictions"]], dtype=np.float32)
    np.testing.assert_array_equal(got, expected)
    assert r.json()["model"]["name"] == "diabetes"


def test_the_readme_request_answers_with_onnxruntimes_own_output(
    host: LocalHost, example_models: dict[str, Path]
) -> None:
    readme = (ROOT / "README.md").read_text()
    body = re.search(r"-d '(\{\"instances\".*?\})'", readme)
    assert body, "README should show a curl line with a predict body"
    with host.client() as http:
        r = http.post(
            "/api/iris/predict", content=body.group(1), headers={"Content-Type": "application/json"}
        )
    assert r.status_code == 200, r.text
    rows = json.loads(body.group(1))["instances"]
    x = np.array([[row[f] for f in IRIS_FIELDS] for row in rows], dtype=np.float32)
    labels, probs = ort.InferenceSession(str(example_models["iris"])).run(None, {"input": x})
    (prediction,) = r.json()["predictions"]
    assert prediction["label"] == SPECIES[labels[0]]
    assert [prediction["probabilities"][s] for s in SPECIES] == probs[0].tolist()


def test_64_concurrent_first_requests_cause_one_download_and_one_session(
    host: LocalHost, azurite: AzuriteInfo, models_in_blob: str
) -> None:
    body = {
        "instances": [
            {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
        ]
    }
    with (
        httpx.Client(
            base_url=host.url, timeout=60, limits=httpx.Limits(max_connections=64)
        ) as http,
        ThreadPoolExecutor(64) as pool,
    ):
        statuses = list(
            pool.map(lambda _: http.post("/api/iris/predict", json=body).status_code, range(64))
        )
    assert statuses == [200] * 64
    assert count_blob_gets(azurite, models_in_blob, "iris.onnx") == 1
    assert host.output().count("model loaded name=iris") == 1


def test_error_statuses_over_http(host: LocalHost) -> None:
    with host.client() as http:
        bad_json = http.post("/api/iris/predict", content=b"{nope")
        too_big = http.post("/api/iris/predict", content=b" " * (16 * 1024 * 1024 + 1))
        invalid = http.post("/api/iris/predict", json={"instances": [{"sepal_length": 0}]})
        unknown = http.post("/api/tulips/predict", json={"instances": []})
    assert bad_json.status_code == 400 and bad_json.json()["error"]["type"] == "BadRequest"
    assert too_big.status_code == 413 and too_big.json()["error"]["type"] == "PayloadTooLarge"
    assert invalid.status_code == 422
    assert {d["field"] for d in invalid.json()["error"]["detail"]} >= {
        "instances[0].sepal_length",
        "instances[0].petal_width",
    }
    assert unknown.status_code == 404 and "error" in unknown.json()
    for response in (bad_json, too_big, invalid, unknown):
        assert "Traceback" not in response.text


def test_unreachable_store_is_503_then_served_once_it_is_back(
    tmp_path: Path, azurite: AzuriteInfo, models_in_blob: str
) -> None:
    app = copy_examples(tmp_path / "app")
    # A store URL that nothing listens on: the host must answer 503 quickly, not hang.
    dead = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:9", azurite.connection_string)
    env = {
        "AzureWebJobsStorage": dead,
        "MLFN_MODEL_STORE": f"az://{models_in_blob}",
        "MLFN_CACHE_DIR": str(tmp_path / "c"),
    }
    server = LocalHost(app, env).start()
    try:
        with server.client() as http:
            r = http.post(
                "/api/iris/predict",
                json=json.loads(
                    '{"instances": [{"sepal_length": 5, "sepal_width": 3, "petal_length": 1, "petal_width": 0.2}]}'
                ),
            )
        assert r.status_code == 503 and r.headers["retry-after"].isdigit()
        assert r.json()["error"]["type"] == "StoreUnavailable"
    finally:
        server.stop()

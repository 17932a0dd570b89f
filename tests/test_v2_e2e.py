"""Standard protocols over real HTTP: the real tritonclient against `mlfn serve`, the OpenAPI
document through a real validator, a bounded fuzz of the predict routes, function keys."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.models.onnx_builders import multi_io, strings
from tests.support import ROOT, LocalHost, make_app

TENSOR_ENDPOINT = "from runtime import Endpoint\n\nendpoint = Endpoint(model={path!r})\n"
KEY = "local-test-key"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, example_models: dict[str, Path]) -> Path:
    root = tmp_path_factory.mktemp("v2")
    models = {"tensors": multi_io(root / "multi.onnx"), "words": strings(root / "strings.onnx")}
    endpoints = {name: TENSOR_ENDPOINT.format(path=str(path)) for name, path in models.items()}
    for name in ("iris", "diabetes"):
        source = (ROOT / "functions" / name / "endpoint.py").read_text()
        endpoints[name] = source.replace(
            f'model="{name}.onnx"', f"model={str(example_models[name])!r}"
        )
    endpoints["absent"] = TENSOR_ENDPOINT.format(path=str(root / "not-uploaded.onnx"))
    return make_app(root / "app", endpoints)


@pytest.fixture(scope="module")
def host(app: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHost]:
    env = {"MLFN_CACHE_DIR": str(tmp_path_factory.mktemp("cache")), "MLFN_FUNCTION_KEY": KEY}
    server = LocalHost(app, env, ("--no-queues",)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(host: LocalHost) -> triton.InferenceServerClient:
    # tritonclient takes host:port/base-path; the key is a header on every call.
    return triton.InferenceServerClient(url=f"127.0.0.1:{host.port}/api")


def _key() -> dict[str, str]:
    """A fresh headers dict per call: tritonclient writes Inference-Header-Content-Length
    into the dict it is given, so a shared one would carry a stale length to the next call."""
    return {"x-functions-key": KEY}


def _multi_io_feeds() -> dict[str, np.ndarray]:
    return {
        "features:0": np.array(
            [[[1.5, -2.0], [0.25, 8.0]], [[0.0, 1.0], [3.0, -1.0]]], dtype=np.float32
        ),
        "count": np.array([7, -3], dtype=np.int64),
        "mask": np.array([[True, False], [False, False]]),
    }


def test_server_and_model_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tensors")
    assert not client.is_model_ready("absent")  # its file is not in the store
    assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]
    meta = client.get_model_metadata("tensors", headers=_key())
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [
        {"name": "features:0", "datatype": "FP32", "shape": [-1, 2, 2]},
        {"name": "count", "datatype": "INT64", "shape": [-1]},
        {"name": "mask", "datatype": "BOOL", "shape": [-1, 2]},
    ]
    assert [o["datatype"] for o in meta["outputs"]] == ["FP32", "INT64", "BOOL"]
    assert meta["parameters"]["load"]["session_s"] > 0


def test_readiness_does_not_load_the_model(
    client: triton.InferenceServerClient, host: LocalHost
) -> None:
    assert client.is_model_ready("diabetes")
    assert "model loaded name=diabetes" not in host.output()


@pytest.mark.parametrize("binary", [True, False])
def test_infer_with_multiple_fp32_int64_bool_tensors_equals_onnxruntime(
    client: triton.InferenceServerClient, app: Path, binary: bool
) -> None:
    feeds = _multi_io_feeds()
    inputs = []
    for name, value in feeds.items():
        tensor = triton.InferInput(
            name,
            list(value.shape),
            {"float32": "FP32", "int64": "INT64", "bool": "BOOL"}[str(value.dtype)],
        )
        tensor.set_data_from_numpy(value, binary_data=binary)
        inputs.append(tensor)
    outputs = [
        triton.InferRequestedOutput(n, binary_data=binary) for n in ("doubled", "next", "not_mask")
    ]
    result = client.infer("tensors", inputs, outputs=outputs, request_id="req-7", headers=_key())
    expected = ort.InferenceSession(str(app.parent / "multi.onnx")).run(None, feeds)
    for name, want in zip(("doubled", "next", "not_mask"), expected, strict=True):
        got = result.as_numpy(name)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    assert result.get_response()["id"] == "req-7"


@pytest.mark.parametrize("binary", [True, False])
def test_bytes_tensors_round_trip(client: triton.InferenceServerClient, binary: bool) -> None:
    words = np.array(["héllo", "", "tensor"], dtype=object)
    tensor = triton.InferInput("text", [3], "BYTES")
    tensor.set_data_from_numpy(words, binary_data=binary)
    outputs = [
        triton.InferRequestedOutput("echo", binary_data=binary),
        triton.InferRequestedOutput("count", binary_data=binary),
    ]
    result = client.infer("words", [tensor], outputs=outputs, headers=_key())
    echoed = [w.decode() if isinstance(w, bytes) else w for w in result.as_numpy("echo").tolist()]
    assert echoed == ["héllo", "", "tensor"]
    assert int(result.as_numpy("count")) == 3


def test_the_predict_route_and_v2_infer_share_one_model(
    client: triton.InferenceServerClient, host: LocalHost
) -> None:
    x = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
    tensor = triton.InferInput("input", [1, 4], "FP32")
    tensor.set_data_from_numpy(x)
    client.infer("iris", [tensor], headers=_key())
    with host.client() as http:
        r = http.post(
            "/api/iris/predict",
            json={
                "instances": [
                    {
                        "sepal_length": 5.1,
                        "sepal_width": 3.5,
                        "petal_length": 1.4,
                        "petal_width": 0.2,
                    }
                ]
            },
            headers=_key(),
        )
    assert r.status_code == 200
    assert host.output().count("model loaded name=iris") == 1


def _infer_error(
    client: triton.InferenceServerClient,
    model: str,
    name: str,
    shape: list[int],
    datatype: str,
    value: np.ndarray,
) -> InferenceServerException:
    tensor = triton.InferInput(name, shape, datatype)
    tensor.set_data_from_numpy(value)
    with pytest.raises(InferenceServerException) as info:
        client.infer(model, [tensor], headers=_key())
    return info.value


def test_bad_tensors_are_4xx_naming_the_problem(client: triton.InferenceServerClient) -> None:
    x = np.zeros((1, 4), dtype=np.float32)
    wrong_type = _infer_error(client, "iris", "input", [1, 4], "FP64", x.astype(np.float64))
    assert (
        wrong_type.status() == "400"
        and "datatype FP64" in wrong_type.message()
        and "expects FP32" in wrong_type.message()
    )
    wrong_shape = _infer_error(
        client, "iris", "input", [1, 3], "FP32", np.zeros((1, 3), dtype=np.float32)
    )
    assert (
        wrong_shape.status() == "400"
        and "shape [1, 3]" in wrong_shape.message()
        and "[-1, 4]" in wrong_shape.message()
    )
    unknown_input = _infer_error(client, "iris", "pixels", [1, 4], "FP32", x)
    assert unknown_input.status() == "400" and "'pixels'" in unknown_input.message()
    unknown_model = _infer_error(client, "tulips", "input", [1, 4], "FP32", x)
    assert unknown_model.status() == "404" and "tulips" in unknown_model.message()
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("tulips", headers=_key())
    assert info.value.status() == "404"


def test_malformed_v2_bodies_are_400_with_the_protocols_error_shape(host: LocalHost) -> None:
    cases = [
        (b"{not json", {}),
        (
            b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3]}]}',
            {},
        ),
        (
            b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ["a", "b", "c", "d"]}]}',
            {},
        ),
        (
            b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}]}',
            {"Inference-Header-Content-Length": "86"},
        ),
        (b'{"inputs": []}xx', {"Inference-Header-Content-Length": "999"}),
    ]
    with host.client() as http:
        for body, headers in cases:
            r = http.post("/api/v2/models/iris/infer", content=body, headers={**_key(), **headers})
            assert r.status_code == 400, (body, r.text)
            assert set(r.json()) == {"error"} and isinstance(r.json()["error"], str)


def test_versioned_routes(client: triton.InferenceServerClient) -> None:
    version = client.get_model_metadata("iris", headers=_key())["versions"][0]
    meta = client.get_model_metadata("iris", model_version=version, headers=_key())
    assert meta["name"] == "iris"
    x = np.zeros((1, 4), dtype=np.float32)
    tensor = triton.InferInput("input", [1, 4], "FP32")
    tensor.set_data_from_numpy(x)
    assert client.infer("iris", [tensor], model_version=version, headers=_key()).as_numpy(
        "label"
    ).shape == (1,)
    with pytest.raises(InferenceServerException) as info:
        client.infer("iris", [tensor], model_version="not-a-version", headers=_key())
    assert info.value.status() == "404" and version in info.value.message()


def test_function_keys_like_azure(host: LocalHost) -> None:
    body = {
        "instances": [
            {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
        ]
    }
    with host.client() as http:
        assert http.post("/api/iris/predict", json=body).status_code == 401
        assert (
            http.post(
                "/api/iris/predict", json=body, headers={"x-functions-key": "wrong"}
            ).status_code
            == 401
        )
        assert (
            http.post("/api/iris/predict", json=body, headers={"x-functions-key": KEY}).status_code
            == 200
        )
        assert http.post(f"/api/iris/predict?code={KEY}", json=body).status_code == 200
        assert http.post("/api/v2/models/iris/infer", content=b"{}").status_code == 401
        # Metadata loads the model: an anonymous client must not make the instance do that.
        assert http.get("/api/v2/models/diabetes").status_code == 401
        for anonymous in (
            "/api/v2/health/live",
            "/api/v2",
            "/api/v2/models/iris/ready",
            "/api/openapi.json",
            "/api/docs",
        ):
            assert http.get(anonymous).status_code == 200, anonymous


def test_openapi_document_is_valid_and_describes_each_predict_route(host: LocalHost) -> None:
    from openapi_spec_validator import validate

    with host.client() as http:
        doc = http.get("/api/openapi.json").json()
        page = http.get("/api/docs")
    validate(doc)
    predict = doc["paths"]["/api/iris/predict"]["post"]
    body = predict["requestBody"]["content"]["application/json"]["schema"]
    flower = doc["components"]["schemas"][
        body["properties"]["instances"]["items"]["$ref"].split("/")[-1]
    ]
    assert flower["properties"]["petal_width"]["exclusiveMinimum"] == 0
    assert set(predict["responses"]) >= {"200", "400", "401", "413", "422", "503"}
    assert "Retry-After" in predict["responses"]["503"]["headers"]
    assert predict["security"] == [{"functionKey": []}, {"functionCode": []}]
    assert doc["components"]["securitySchemes"]["functionKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "x-functions-key",
    }
    assert "/api/tensors/predict" not in doc["paths"]  # tensor-only endpoints serve V2 only
    assert "/api/v2/models/{model_name}/infer" in doc["paths"]
    assert page.headers["content-type"].startswith("text/html")
    assert b"openapi.json" in page.content and b"https://" not in page.content  # no CDN


def test_fuzzing_the_predict_routes_finds_no_server_error(host: LocalHost, tmp_path: Path) -> None:
    """Property-based requests from the served OpenAPI spec (schemathesis), bounded in count."""
    report = tmp_path / "schemathesis.txt"
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"), "run", f"{host.url}/api/openapi.json",
            "--checks", "not_a_server_error", "--include-path-regex", "/predict$",
            "--max-examples", "40", "--seed", "1", "--workers", "1", "--request-timeout", "30",
            "-H", f"x-functions-key: {KEY}",
        ],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    report.write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "Selected: 2/" in done.stdout  # iris and diabetes predict
    assert "No issues found" in done.stdout


def test_a_plain_json_client_nested_data_output_selection_id_and_parameters(
    host: LocalHost, app: Path
) -> None:
    body = {
        "id": "kserve-1",
        "parameters": {"trace": "abc"},
        "inputs": [
            {
                "name": "features:0",
                "shape": [1, 2, 2],
                "datatype": "FP32",
                "data": [[[1.0, 2.0], [3.0, 4.0]]],
            },
            {"name": "count", "shape": [1], "datatype": "INT64", "data": [41]},
            {"name": "mask", "shape": [1, 2], "datatype": "BOOL", "data": [True, False]},  # flat
        ],
        "outputs": [{"name": "next"}],
    }
    with host.client() as http:
        r = http.post("/api/v2/models/tensors/infer", json=body, headers=_key())
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert doc["id"] == "kserve-1" and doc["parameters"] == {"trace": "abc"}
    assert doc["model_name"] == "tensors"
    assert doc["outputs"] == [{"name": "next", "datatype": "INT64", "shape": [1], "data": [42]}]

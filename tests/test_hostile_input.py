"""Hostile and unlucky input over real HTTP: every answer is a bounded 4xx with a JSON body that
says what is wrong, never a 500, and the host's memory stays bounded (issue 10)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.models.onnx_builders import adder, multi_io
from tests.support import ROOT, LocalHost, make_app

TENSOR_ENDPOINT = "from runtime import Endpoint\n\nendpoint = Endpoint(model={path!r})\n"
FLOWER = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@pytest.fixture(scope="module")
def host(
    tmp_path_factory: pytest.TempPathFactory, example_models: dict[str, Path]
) -> Iterator[LocalHost]:
    root = tmp_path_factory.mktemp("hostile")
    iris = (ROOT / "functions" / "iris" / "endpoint.py").read_text()
    endpoints = {
        "iris": iris.replace('model="iris.onnx"', f"model={str(example_models['iris'])!r}"),
        "tensors": TENSOR_ENDPOINT.format(path=str(multi_io(root / "multi.onnx"))),
        "adder": TENSOR_ENDPOINT.format(path=str(adder(root / "adder.onnx"))),
        "small": "from runtime import Endpoint, Limits\n\nendpoint = Endpoint(model="
        f"{str(root / 'multi.onnx')!r}, limits=Limits(max_request_bytes=1024))\n",
    }
    env = {"MLFN_CACHE_DIR": str(root / "cache")}
    server = LocalHost(make_app(root / "app", endpoints), env, ("--no-queues",)).start()
    with server.client() as http:  # load both models before the hostile part
        assert http.post("/api/iris/predict", json={"instances": [FLOWER]}).status_code == 200
    yield server
    server.stop()


def _peak_rss_mb(host: LocalHost) -> float:
    assert host.process is not None
    status = Path(f"/proc/{host.process.pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if "VmHWM" in line) / 1024


def test_a_megabyte_of_empty_instances_gets_a_short_422_and_memory_stays_bounded(
    host: LocalHost,
) -> None:
    body = b'{"instances": [' + b",".join([b"{}"] * 350_000) + b"]}"  # 1 MiB, 1.4 M errors
    with host.client() as http:
        r = http.post("/api/iris/predict", content=body)
    assert r.status_code == 422
    assert len(r.content) < 32 * 1024
    error = r.json()["error"]
    assert len(error["detail"]) == 100
    assert error["detail"][0]["field"] == "instances[0].sepal_length"
    assert "and 1399995 more (100 listed)" in error["message"]
    assert _peak_rss_mb(host) < 600  # the unbounded report took +1.85 GiB


NESTED = "[" * 100_000 + "]" * 100_000
HUGE = "9" * 5000


@pytest.mark.parametrize(
    ("route", "body", "message"),
    [
        ("iris/predict", f'{{"instances": {NESTED}}}', "nested too deeply"),
        ("iris/predict", f'{{"instances": [{{"sepal_length": {HUGE}}}]}}', "not valid JSON"),
        ("iris/predict", '{"instances": [{"sepal_length": NaN, "sepal_width": 3.5, '
         '"petal_length": 1.4, "petal_width": 0.2}]}', "NaN, which is not a finite JSON number"),
        ("iris/predict", '{"instances": [{"sepal_length": 1e999, "sepal_width": 3.5, '
         '"petal_length": 1.4, "petal_width": 0.2}]}', "1e999, which is not a finite JSON"),
        ("v2/models/tensors/infer", '{"inputs": [{"name": "count", "datatype": "FP32", '
         '"shape": [1], "data": [Infinity]}]}', "Infinity, which is not a finite JSON number"),
        ("v2/models/tensors/infer", NESTED, "nested too deeply"),
        ("v2/models/tensors/infer", f'{{"inputs": [], "id": {HUGE}}}', "not valid JSON"),
        ("v2/models/tensors/infer", '{"inputs": [], "parameters": [1]}',
         '"parameters" must be an object'),
        ("v2/models/tensors/infer",
         '{"inputs": [{"name": "count", "datatype": "INT64", "shape": [1], "data": [1],'
         ' "parameters": "binary_data_size"}]}', "input 'count' parameters must be an object"),
        ("v2/models/tensors/infer",
         '{"inputs": [], "outputs": [{"name": "next", "parameters": [true]}]}',
         "output 'next' parameters must be an object"),
        ("v2/models/tensors/infer", '{"inputs": [], "outputs": {"name": "next"}}',
         '"outputs" must be a list'),
        ("v2/models/tensors/infer",
         json.dumps({"inputs": [{"name": "count", "datatype": "INT64", "shape": [1] * 40,
                                 "data": [1]}]}), "at most 32 are read"),
        ("v2/models/tensors/infer",
         json.dumps({"inputs": [{"name": "s", "datatype": "BYTES", "shape": [2_000_000],
                                 "data": []}]}), "at most 1000000 are read"),
        # Batch sizes that disagree: onnxruntime refuses the run itself.
        ("v2/models/adder/infer",
         json.dumps({"inputs": [
             {"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [0.0] * 4},
             {"name": "y", "datatype": "FP32", "shape": [3, 2], "data": [1.0] * 6}]}),
         "cannot run on these inputs"),
    ],
)  # fmt: skip
def test_client_mistakes_are_4xx_naming_the_problem(
    host: LocalHost, route: str, body: str, message: str
) -> None:
    with host.client() as http:
        r = http.post(f"/api/{route}", content=body.encode())
    assert r.status_code == 400, r.text[:500]
    error = r.json()["error"]
    text = error if isinstance(error, str) else error["message"]
    assert message in text


def test_v2_infer_honours_the_endpoints_byte_limit(host: LocalHost) -> None:
    body = json.dumps({"inputs": [{"name": "count", "datatype": "INT64", "shape": [300_000],
                                   "data": [1] * 300_000}]})  # fmt: skip
    with host.client() as http:
        r = http.post("/api/v2/models/small/infer", content=body.encode())
    assert r.status_code == 413 and "over this endpoint's limit of 1024 bytes" in r.json()["error"]

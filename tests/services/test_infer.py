"""The Open Inference Protocol service: tensors in, the endpoint's own model run on them,
tensors out (JSON or binary); what it refuses and why; metadata and readiness. In process, no
host (tests/test_v2_e2e.py drives the same routes over HTTP with Triton's client)."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from runtime.endpoint import Limits
from runtime.errors import (
    BadRequest,
    DeadlineExceeded,
    EndpointNotFound,
    ModelVersionNotFound,
    PayloadTooLarge,
)
from runtime.models.registry import ModelState
from runtime.services import Services
from tests.models.onnx_builders import adder
from tests.services.pairs import services

X = [[1.5, -2.0], [3.25, 4.0]]
Y = [[0.5, 10.0], [-1.0, 0.125]]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return adder(tmp_path_factory.mktemp("models") / "adder.onnx")


@pytest.fixture
def app(model: Path, tmp_path: Path) -> Services:
    return services(model, tmp_path, limits=Limits(max_request_bytes=4096))


def _tensor(
    name: str, data: Any, datatype: str = "FP32", shape: list[int] | None = None
) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape or [2, 2], "data": data}


def _infer(
    app: Services, doc: dict[str, Any], version: str | None = None
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(doc).encode()
    return asyncio.run(app.infer.infer_body("pairs", body, None, version))


def test_json_tensors_in_the_models_own_outputs_out(app: Services) -> None:
    body, headers = _infer(app, {"id": "r-1", "inputs": [_tensor("x", X), _tensor("y", Y)]})
    assert headers["Content-Type"] == "application/json"
    doc = json.loads(body)
    expected = (np.float32(X) + np.float32(Y)).ravel().tolist()
    assert doc["outputs"] == [
        {"name": "sum", "datatype": "FP32", "shape": [2, 2], "data": expected}
    ]
    assert doc["id"] == "r-1" and doc["model_name"] == "pairs"
    assert (
        doc["model_version"]
        == app.registry.get("pairs", app.endpoints["pairs"].endpoint.model).version
    )


def test_binary_outputs_are_raw_little_endian_after_the_json_header(app: Services) -> None:
    doc = {"inputs": [_tensor("x", X), _tensor("y", Y)], "parameters": {"binary_data_output": True}}
    for _ in range(3):  # the model loaded, later requests may run on the event loop: alike
        body, headers = _infer(app, doc)
        length = int(headers["Inference-Header-Content-Length"])
        head = json.loads(body[:length])
        (out,) = head["outputs"]
        assert out["parameters"]["binary_data_size"] == 16 and "data" not in out
        got = np.frombuffer(body[length:], dtype="<f4").reshape(2, 2)
        assert got.tolist() == (np.float32(X) + np.float32(Y)).tolist()


@pytest.mark.parametrize(
    ("inputs", "outputs", "says"),
    [
        ([_tensor("x", X), _tensor("z", Y)], None, "no input named 'z'"),
        ([_tensor("x", X)], None, "needs input 'y'"),
        ([_tensor("x", X), _tensor("y", [[1, 2], [3, 4]], "INT64")], None, "datatype INT64"),
        ([_tensor("x", X), _tensor("y", [1, 2, 3, 4, 5, 6], shape=[2, 3])], None, "shape [2, 3]"),
        ([_tensor("x", X), _tensor("y", Y)], [{"name": "product"}], "no output named 'product'"),
    ],
)
def test_tensors_the_model_cannot_take_are_refused_naming_the_problem(
    app: Services, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]] | None, says: str
) -> None:
    doc: dict[str, Any] = {"inputs": inputs}
    if outputs is not None:
        doc["outputs"] = outputs
    with pytest.raises(BadRequest) as raised:
        _infer(app, doc)
    assert says in raised.value.message


def test_a_version_is_checked_against_the_loaded_model(app: Services) -> None:
    doc = {"inputs": [_tensor("x", X), _tensor("y", Y)]}
    with pytest.raises(ModelVersionNotFound):
        _infer(app, doc, version="not-this-one")
    version = json.loads(_infer(app, doc)[0])["model_version"]
    assert json.loads(_infer(app, doc, version=version)[0])["model_version"] == version


def test_a_body_over_the_endpoints_limit_and_an_unknown_endpoint_are_refused(
    app: Services,
) -> None:
    with pytest.raises(PayloadTooLarge):
        asyncio.run(app.infer.infer_body("pairs", b" " * 4097, None))
    with pytest.raises(EndpointNotFound):
        asyncio.run(app.infer.infer_body("nobody", b"{}", None))
    assert app.registry.state("pairs") is ModelState.ABSENT  # refused before any load


def test_metadata_describes_the_models_tensors_with_dynamic_dimensions_as_minus_one(
    app: Services,
) -> None:
    doc = app.infer.metadata("pairs")
    assert doc["platform"] == "onnxruntime_onnx" and doc["name"] == "pairs"
    spec = {"datatype": "FP32", "shape": [-1, 2]}
    assert doc["inputs"] == [{"name": "x", **spec}, {"name": "y", **spec}]
    assert doc["outputs"] == [{"name": "sum", **spec}]
    assert len(doc["parameters"]["sha256"]) == 64 and doc["versions"] == [
        doc["parameters"]["sha256"][:12]
    ]


def test_readiness_asks_the_store_and_never_loads_the_model(model: Path, tmp_path: Path) -> None:
    missing, present = tmp_path / "missing", tmp_path / "present"
    missing.mkdir()
    present.mkdir()
    shutil.copy(model, present / "adder.onnx")
    assert asyncio.run(services("./adder.onnx", missing).infer.ready("pairs")) is False
    app = services("./adder.onnx", present)
    assert asyncio.run(app.infer.ready("pairs")) is True
    assert app.registry.state("pairs") is ModelState.ABSENT


def _binary(doc: dict[str, Any], parameters: dict[str, Any]) -> tuple[bytes, str]:
    """``doc``'s tensors as binary data after a JSON header holding ``parameters``."""
    data = [np.asarray(t["data"], dtype="<f4").tobytes() for t in doc["inputs"]]
    head = json.dumps({
        "inputs": [
            {**{k: v for k, v in t.items() if k != "data"},
             "parameters": {"binary_data_size": len(d)}}
            for t, d in zip(doc["inputs"], data, strict=True)
        ],
        "parameters": parameters,
    }).encode()  # fmt: skip
    return head + b"".join(data), str(len(head))


@pytest.mark.parametrize("form", ["json", "binary"])
def test_a_timeout_in_the_body_ends_the_wait_in_line_at_its_deadline(
    app: Services, form: str
) -> None:
    # parameters.timeout was read in the request's turn only: one waiting in line behind a
    # long run waited it out, and was answered 504 after the run, not at its deadline.
    doc = {"inputs": [_tensor("x", X), _tensor("y", Y)]}
    timed, length = json.dumps({**doc, "parameters": {"timeout": 200_000}}).encode(), None
    if form == "binary":
        timed, length = _binary(doc, {"timeout": 200_000})  # 200 ms

    async def main() -> DeadlineExceeded:
        await app.infer.infer_body("pairs", json.dumps(doc).encode(), None)  # loaded
        turns = app.infer._placements["pairs"][1].turns
        release = asyncio.Event()
        held = [
            asyncio.ensure_future(turns.take(release.wait, None))
            for _ in range(app.endpoints["pairs"].endpoint.limits.max_concurrent_batches)
        ]
        await asyncio.sleep(0)  # every turn held, as by long runs
        try:
            with pytest.raises(DeadlineExceeded) as late:
                await asyncio.wait_for(app.infer.infer_body("pairs", timed, length), 10)
            assert turns.waiting == 0 and not any(h.done() for h in held)  # left the line
        finally:
            release.set()
            await asyncio.gather(*held)
        return late.value

    late = asyncio.run(main())
    assert late.detail == {"timeout_ms": 200}  # waiting made it miss: retry shortly
    assert late.message.endswith("retry shortly")


def test_a_v2_timeout_shorter_than_the_models_runs_says_so(app: Services) -> None:
    # As predict's 504 does: a retry soon would meet the same.
    doc = {"inputs": [_tensor("x", X), _tensor("y", Y)]}
    _infer(app, doc)  # a run, of more than a microsecond
    with pytest.raises(DeadlineExceeded) as short:
        _infer(app, {**doc, "parameters": {"timeout": 1}})
    assert short.value.detail["timeout_ms"] == 0.001
    assert short.value.detail["last_run_ms"] > 0.001
    assert "the endpoint's last run took" in short.value.message


def test_a_timeout_is_read_from_the_json_alone_never_from_the_tensors() -> None:
    # The whole request was decoded on the event loop to find its timeout: a binary one's
    # tensors too (654 ms for 6 MB of BYTES in a review), stalling every endpoint.
    from runtime.services.infer import _own_deadline

    doc = {"inputs": [_tensor("x", X), _tensor("y", Y)]}
    body, length = _binary(doc, {"timeout": 250_000})
    garbled = body[: int(length)] + b"\x00" * 3  # tensors the decoder refuses (sizes)
    with pytest.raises(BadRequest):
        v2_decode(garbled, length)
    own, parsed = asyncio.run(_own_deadline(garbled, length, time.perf_counter()))
    assert own is not None and own.budget_ms == 250
    assert parsed == json.loads(garbled[: int(length)])  # the JSON header alone
    for parameters in ({}, {"timeout": None}):  # a null sets none, as the decoder reads it
        untimed, untimed_length = _binary(doc, parameters)
        own, _ = asyncio.run(_own_deadline(untimed, untimed_length, time.perf_counter()))
        assert own is None


def test_a_json_request_naming_a_timeout_is_parsed_once(
    app: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its JSON was read for the timeout, then again by the decoder: twice the parse of a large
    # JSON tensor, holding the GIL.
    from runtime.protocol import json_input

    parsed: list[int] = []
    loads = json_input.loads

    def counted(data: bytes | str, what: str) -> Any:
        parsed.append(len(data))
        return loads(data, what)

    monkeypatch.setattr(json_input, "loads", counted)
    body, _ = _infer(
        app, {"inputs": [_tensor("x", X), _tensor("y", Y)], "parameters": {"timeout": 10**7}}
    )
    assert len(parsed) == 1
    assert np.allclose(json.loads(body)["outputs"][0]["data"], np.add(X, Y).ravel())


def v2_decode(body: bytes, length: str) -> Any:
    from runtime.protocol import v2

    return v2.decode_request(body, length)

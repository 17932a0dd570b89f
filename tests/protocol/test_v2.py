"""The Open Inference Protocol bodies: JSON and binary tensors in, tensors out, byte for byte."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from runtime.element_types import ELEMENT_TYPES
from runtime.errors import BadRequest
from runtime.protocol import v2


def _json_body(*inputs: dict[str, object], **extra: object) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


def _binary_body(head: dict[str, object], *chunks: bytes) -> tuple[bytes, str]:
    header = json.dumps(head).encode()
    return header + b"".join(chunks), str(len(header))


def test_json_tensors_are_read_with_their_shape_and_element_type() -> None:
    body = _json_body(
        {"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3, 4.5]]},
        {"name": "n", "datatype": "INT64", "shape": [2], "data": [7, 8]},
        {"name": "b", "datatype": "BOOL", "shape": [1], "data": [True]},
        {"name": "s", "datatype": "BYTES", "shape": [2], "data": ["a", "é"]},
        id="r1",
        outputs=[{"name": "y", "parameters": {"binary_data": True}}, {"name": "z"}],
        parameters={"binary_data_output": True},
    )
    request = v2.decode_request(body, None)
    x, n, b, s = request.inputs
    assert x.data.dtype == np.float32 and x.data.tolist() == [[1, 2], [3, 4.5]]
    assert n.data.dtype == np.int64 and b.data.dtype == np.bool_ and s.data.tolist() == ["a", "é"]
    assert request.id == "r1" and request.binary_output
    assert [(o.name, o.binary) for o in request.outputs or []] == [("y", True), ("z", None)]


@pytest.mark.parametrize("element", ELEMENT_TYPES, ids=lambda t: t.v2)
def test_every_datatype_round_trips_through_the_binary_extension(element: object) -> None:
    datatype = element.v2  # type: ignore[attr-defined]
    if datatype == "BYTES":
        values = np.array([b"ab", b"", "ü".encode()], dtype=object)
        raw = b"".join(struct.pack("<I", len(v)) + v for v in values)
        expected = ["ab", "", "ü"]
    else:
        # Not a palindrome, so elements read in the wrong order (or the wrong byte order) show.
        asymmetric = [True, False, False] if datatype == "BOOL" else [2, 0, 1]
        values = np.array(asymmetric, dtype=element.numpy)  # type: ignore[attr-defined]
        raw = values.astype(values.dtype.newbyteorder("<")).tobytes()
        expected = values.tolist()
    head = {"inputs": [{"name": "t", "datatype": datatype, "shape": [3],
                        "parameters": {"binary_data_size": len(raw)}}]}  # fmt: skip
    body, length = _binary_body(head, raw)
    (tensor,) = v2.decode_request(body, length).inputs
    assert tensor.data.tolist() == expected

    payload, headers = v2.encode_response("m", "1", [tensor], {"t": True})
    size = int(headers["Inference-Header-Content-Length"])
    doc = json.loads(payload[:size])
    assert headers["Content-Type"] == "application/octet-stream"
    assert doc["outputs"][0]["parameters"]["binary_data_size"] == len(raw)
    assert payload[size:] == (raw if datatype != "BYTES" else b"".join(
        struct.pack("<I", len(v.encode())) + v.encode() for v in expected))  # fmt: skip


def test_json_outputs_are_flat_row_major_and_carry_the_id_and_parameters() -> None:
    tensor = v2.Tensor("y", "FP64", (2, 2), np.array([[1.5, 2.0], [3.0, 4.0]]))
    payload, headers = v2.encode_response("m", "7", [tensor], {}, "req", {"p": 1})
    assert headers == {"Content-Type": "application/json"}
    assert json.loads(payload) == {
        "model_name": "m",
        "model_version": "7",
        "outputs": [{"name": "y", "datatype": "FP64", "shape": [2, 2], "data": [1.5, 2, 3, 4]}],
        "id": "req",
        "parameters": {"p": 1},
    }


@pytest.mark.parametrize(
    ("body", "length", "message"),
    [
        (b"{", None, "not valid JSON"),
        (b"[]", None, '"inputs" list'),
        (b'{"inputs": [1]}', None, "inputs\\[0\\] must be an object"),
        (b'{"inputs": [{"datatype": "FP32", "shape": [1], "data": [1]}]}', None, "has no name"),
        (_json_body({"name": "x", "datatype": "FP8", "shape": [1], "data": [1]}), None,
         "unknown datatype 'FP8'"),
        (_json_body({"name": "x", "datatype": {}, "shape": [1], "data": [1]}), None,
         "unknown datatype {}"),  # found by schemathesis: a dict is no datatype (was a 500)
        (_json_body({"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]}), None,
         "non-negative integers"),
        (_json_body({"name": "x", "datatype": "FP32", "shape": [3], "data": [1, 2]}), None,
         "2 data elements, its shape needs 3"),
        (_json_body({"name": "x", "datatype": "INT32", "shape": [1], "data": [1.5]}), None,
         "whole numbers"),
        (_json_body({"name": "x", "datatype": "UINT8", "shape": [1], "data": [300]}), None,
         "out of range"),
        (_json_body({"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 1e308]}), None,
         "out of range for FP32: data\\[1\\] is 1e\\+308"),  # was infinity, a 200
        (_json_body({"name": "x", "datatype": "FP16", "shape": [1], "data": [70000]}), None,
         "out of range for FP16"),
        (_json_body({"name": "x", "datatype": "BOOL", "shape": [1], "data": [1]}), None,
         "true or false"),
        (_json_body({"name": "x", "datatype": "FP32", "shape": [1], "data": ["1"]}), None,
         "must be numbers"),
        (_json_body({"name": "x", "datatype": "BYTES", "shape": [1], "data": [1]}), None,
         "must be strings"),
        (_json_body({"name": "x", "datatype": "FP32", "shape": [1]}), None,
         "neither data nor"),
        (b"{}", "x", "not a number"),
        (b"{}", "5", "outside the 2-byte body"),
    ],
)  # fmt: skip
def test_malformed_requests_are_bad_requests_naming_the_problem(
    body: bytes, length: str | None, message: str
) -> None:
    with pytest.raises(BadRequest, match=message):
        v2.decode_request(body, length)


def test_binary_data_must_add_up_to_the_body() -> None:
    head = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2],
                        "parameters": {"binary_data_size": 8}}]}  # fmt: skip
    short, length = _binary_body(head, b"\0" * 4)
    with pytest.raises(BadRequest, match="claims 8 bytes of binary data; the body has 4 left"):
        v2.decode_request(short, length)
    extra, length = _binary_body(head, b"\0" * 12)
    with pytest.raises(BadRequest, match="4 bytes of binary data belong to no input"):
        v2.decode_request(extra, length)
    head["inputs"][0]["shape"] = [3]  # type: ignore[index]
    wrong, length = _binary_body(head, b"\0" * 8)
    with pytest.raises(BadRequest, match="needs 3 FP32 elements, 12 bytes"):
        v2.decode_request(wrong, length)


def test_bytes_elements_cut_short_are_refused() -> None:
    head = {"inputs": [{"name": "s", "datatype": "BYTES", "shape": [1],
                        "parameters": {"binary_data_size": 6}}]}  # fmt: skip
    body, length = _binary_body(head, struct.pack("<I", 9) + b"ab")
    with pytest.raises(BadRequest, match="runs past the tensor's data"):
        v2.decode_request(body, length)


def test_non_finite_json_outputs_are_null_and_binary_ones_kept() -> None:
    data = np.array([1.0, np.nan, -np.inf], dtype=np.float32)
    tensor = v2.Tensor("y", "FP32", (3,), data)
    payload, _ = v2.encode_response("m", "1", [tensor], {})
    assert json.loads(payload)["outputs"][0]["data"] == [1.0, None, None]
    raw, headers = v2.encode_response("m", "1", [tensor], {"y": True})
    size = int(headers["Inference-Header-Content-Length"])
    assert np.frombuffer(raw[size:], dtype="<f4").tobytes() == data.astype("<f4").tobytes()

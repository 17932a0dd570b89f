"""The Open Inference Protocol (KServe V2) REST bodies, with the binary tensor data extension:
bytes in, tensors out, and back. Transport-neutral: no azure.functions types here."""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runtime.element_types import BY_V2, V2_DATATYPES
from runtime.errors import BadRequest
from runtime.protocol import json_input

if TYPE_CHECKING:
    import numpy as np

HEADER_LENGTH = "inference-header-content-length"
# numpy allows 64 dimensions; no model takes more than a handful. The element count itself is
# bounded by the body (the data must match it), except for BYTES, where each element becomes a
# Python string: a few bytes each on the wire, about fifty in memory.
MAX_DIMENSIONS = 32
MAX_BYTES_ELEMENTS = 1_000_000


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray[Any, Any]


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool | None = None


@dataclass(frozen=True)
class InferRequest:
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None = None
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def binary_output(self) -> bool:
        return bool(self.parameters.get("binary_data_output", False))


def decode_request(body: bytes, header_length: str | None, parsed: Any = None) -> InferRequest:
    """An inference request from a JSON body, or a JSON header followed by binary tensor data
    when ``Inference-Header-Content-Length`` says where the JSON ends. ``parsed``: that JSON,
    read already (as ``json_input.loads`` reads it), so that a body is parsed once."""
    json_part, binary = body, b""
    if header_length is not None:
        try:
            size = int(header_length)
        except ValueError:
            raise BadRequest(
                f"Inference-Header-Content-Length {header_length!r} is not a number"
            ) from None
        if not 0 <= size <= len(body):
            raise BadRequest(
                f"Inference-Header-Content-Length {size} is outside the {len(body)}-byte body"
            )
        json_part, binary = body[:size], body[size:]
    doc = json_input.loads(json_part, "the inference request") if parsed is None else parsed
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise BadRequest('the inference request must be an object with an "inputs" list')

    inputs, offset = [], 0
    for i, raw in enumerate(doc["inputs"]):
        if not isinstance(raw, dict):
            raise BadRequest(f"inputs[{i}] must be an object")
        name, datatype, shape = raw.get("name"), raw.get("datatype"), raw.get("shape")
        if not isinstance(name, str):
            raise BadRequest(f"inputs[{i}] has no name")
        if not isinstance(datatype, str) or datatype not in BY_V2:
            raise BadRequest(
                f"input '{name}' has unknown datatype {datatype!r}; "
                f"use one of {', '.join(V2_DATATYPES)}"
            )
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise BadRequest(f"input '{name}' needs a shape: a list of non-negative integers")
        if len(shape) > MAX_DIMENSIONS:
            raise BadRequest(
                f"input '{name}' has {len(shape)} dimensions; at most {MAX_DIMENSIONS} are read"
            )
        count = math.prod(shape)
        if datatype == "BYTES" and count > MAX_BYTES_ELEMENTS:
            raise BadRequest(
                f"input '{name}' has {count} BYTES elements; at most {MAX_BYTES_ELEMENTS} are read"
            )
        tensor_params = _object(raw.get("parameters"), f"input '{name}' parameters")
        if "binary_data_size" in tensor_params:
            size = tensor_params["binary_data_size"]
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise BadRequest(
                    f"input '{name}' claims {size} bytes of binary data; "
                    f"the body has {len(binary) - offset} left"
                )
            array = _from_binary(name, datatype, binary[offset : offset + size], count)
            offset += size
        elif "data" in raw:
            array = _from_json(name, datatype, raw["data"], count)
        else:
            raise BadRequest(f"input '{name}' has neither data nor parameters.binary_data_size")
        inputs.append(Tensor(name, datatype, tuple(shape), array.reshape(shape)))
    if offset != len(binary):
        raise BadRequest(f"{len(binary) - offset} bytes of binary data belong to no input")

    outputs = None
    if doc.get("outputs") is not None:
        if not isinstance(doc["outputs"], list):
            raise BadRequest('"outputs" must be a list of {"name": ...} objects')
        outputs = []
        for raw in doc["outputs"]:
            if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                raise BadRequest('each requested output needs a "name"')
            where = f"output '{raw['name']}' parameters"
            binary_flag = _object(raw.get("parameters"), where).get("binary_data")
            outputs.append(
                RequestedOutput(raw["name"], None if binary_flag is None else bool(binary_flag))
            )
    request_id = doc.get("id")
    params = _object(doc.get("parameters"), '"parameters"')
    return InferRequest(
        inputs, outputs, request_id if isinstance(request_id, str) else None, params
    )


def _object(value: Any, where: str) -> dict[str, Any]:
    """An optional JSON object of parameters: absent is empty, anything else is refused."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{where} must be an object, not {type(value).__name__}")
    return value


def _from_json(name: str, datatype: str, data: Any, count: int) -> np.ndarray[Any, Any]:
    import numpy as np

    flat = _flatten(data)
    if len(flat) != count:
        raise BadRequest(f"input '{name}' has {len(flat)} data elements, its shape needs {count}")
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in flat):
            raise BadRequest(f"input '{name}' is BYTES: its JSON data must be strings")
        return np.array(flat, dtype=object)
    if datatype == "BOOL" and not all(isinstance(v, bool) for v in flat):
        raise BadRequest(f"input '{name}' is BOOL: its data must be true or false")
    if datatype != "BOOL" and any(
        isinstance(v, bool) or not isinstance(v, int | float) for v in flat
    ):
        raise BadRequest(f"input '{name}' is {datatype}: its data must be numbers")
    if datatype.startswith(("INT", "UINT")) and any(
        isinstance(v, float) and not v.is_integer() for v in flat
    ):
        raise BadRequest(f"input '{name}' is {datatype}: its data must be whole numbers")
    try:
        with np.errstate(over="ignore"):
            values = np.array(flat, dtype=BY_V2[datatype].numpy)
    except OverflowError:
        raise BadRequest(f"input '{name}' has values out of range for {datatype}") from None
    if datatype in ("FP16", "FP32") and not np.isfinite(values).all():
        # A finite number past what the type holds is cast to infinity, not refused: the
        # model would answer for infinity.
        wide = np.array(flat, dtype=np.float64)
        past = np.flatnonzero(np.isfinite(wide) & ~np.isfinite(values))
        if len(past):
            raise BadRequest(
                f"input '{name}' has values out of range for {datatype}: data[{past[0]}] is "
                f"{flat[past[0]]!r}, past ±{float(np.finfo(values.dtype).max):g}"
            )
    return values


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _from_binary(name: str, datatype: str, raw: bytes, count: int) -> np.ndarray[Any, Any]:
    import numpy as np

    if datatype == "BYTES":
        items: list[str] = []
        pos = 0
        while pos < len(raw) and len(items) <= count:
            if pos + 4 > len(raw):
                raise BadRequest(f"input '{name}': a BYTES element's 4-byte length is cut short")
            (length,) = struct.unpack_from("<I", raw, pos)
            pos += 4
            if pos + length > len(raw):
                raise BadRequest(f"input '{name}': a BYTES element runs past the tensor's data")
            try:
                items.append(raw[pos : pos + length].decode())
            except UnicodeDecodeError:
                raise BadRequest(
                    f"input '{name}': BYTES elements must be UTF-8 text for this model"
                ) from None
            pos += length
        if len(items) != count:
            raise BadRequest(
                f"input '{name}' has {len(items)} BYTES elements, its shape needs {count}"
            )
        return np.array(items, dtype=object)
    dtype = np.dtype(BY_V2[datatype].numpy).newbyteorder("<")
    if len(raw) != count * dtype.itemsize:
        raise BadRequest(
            f"input '{name}' has {len(raw)} bytes of data; its shape needs {count} "
            f"{datatype} elements, {count * dtype.itemsize} bytes"
        )
    return np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))


def encode_response(
    model_name: str,
    model_version: str,
    outputs: list[Tensor],
    binary: dict[str, bool],
    request_id: str | None = None,
    parameters: dict[str, Any] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers; outputs named in ``binary`` as True go as binary."""
    chunks: list[bytes] = []
    docs = []
    for tensor in outputs:
        doc: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        if binary.get(tensor.name):
            raw = _to_binary(tensor)
            doc["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            doc["data"] = _json_data(tensor)
        docs.append(doc)
    head: dict[str, Any] = {
        "model_name": model_name,
        "model_version": model_version,
        "outputs": docs,
    }
    if request_id is not None:
        head["id"] = request_id
    if parameters:
        head["parameters"] = parameters
    header = json.dumps(head, separators=(",", ":")).encode()
    if not chunks:
        return header, {"Content-Type": "application/json"}
    return header + b"".join(chunks), {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
    }


def _json_data(tensor: Tensor) -> list[Any]:
    """A tensor's elements for a JSON body, row-major; NaN and infinities (which JSON cannot
    hold) as null, as in mlfn's predictions."""
    import numpy as np

    flat = tensor.data.reshape(-1)
    if flat.dtype.kind == "f" and not np.isfinite(flat).all():
        return [v if math.isfinite(v) else None for v in flat.tolist()]
    return [v.decode() if isinstance(v, bytes) else v for v in flat.tolist()]


def _to_binary(tensor: Tensor) -> bytes:
    import numpy as np

    if tensor.datatype == "BYTES":
        parts = []
        for item in tensor.data.reshape(-1).tolist():
            data = item if isinstance(item, bytes) else str(item).encode()
            parts.append(struct.pack("<I", len(data)) + data)
        return b"".join(parts)
    dtype = np.dtype(BY_V2[tensor.datatype].numpy).newbyteorder("<")
    return np.ascontiguousarray(tensor.data, dtype=dtype).tobytes()

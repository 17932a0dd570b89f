"""The model of the example endpoint ``mlfn init`` writes: a linear scorer, ``y = x · w + b``
over four features, written as ONNX protobuf bytes by this module so a new app serves without
a training framework installed (the ``onnx`` package is not a run-time dependency).

Only the handful of ModelProto fields a one-node graph needs are encoded; the field numbers are
those of onnx.proto. The bytes are the same on every run.
"""

from __future__ import annotations

import struct

WEIGHTS = (0.5, -0.25, 1.0, 0.75)
BIAS = 0.1
FEATURES = len(WEIGHTS)
_FLOAT = 1  # TensorProto.FLOAT
_OPSET = 13


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _bytes(field: int, value: bytes | str) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _tensor(name: str, dims: tuple[int, ...], values: tuple[float, ...]) -> bytes:
    raw = struct.pack(f"<{len(values)}f", *values)
    return b"".join(_int(1, d) for d in dims) + _int(2, _FLOAT) + _bytes(8, name) + _bytes(9, raw)


def _value_info(name: str, dims: tuple[int | str, ...]) -> bytes:
    shape = b"".join(_bytes(1, _bytes(2, d) if isinstance(d, str) else _int(1, d)) for d in dims)
    tensor_type = _int(1, _FLOAT) + _bytes(2, shape)
    return _bytes(1, name) + _bytes(2, _bytes(1, tensor_type))


def build() -> bytes:
    """The serialized model: input ``x`` float[batch, 4], output ``y`` float[batch, 1]."""
    node = _bytes(1, "x") + _bytes(1, "w") + _bytes(1, "b") + _bytes(2, "y")
    node += _bytes(3, "score") + _bytes(4, "Gemm")
    graph = (
        _bytes(1, node)
        + _bytes(2, "example")
        + _bytes(5, _tensor("w", (FEATURES, 1), WEIGHTS))
        + _bytes(5, _tensor("b", (1,), (BIAS,)))
        + _bytes(11, _value_info("x", ("batch", FEATURES)))
        + _bytes(12, _value_info("y", ("batch", 1)))
    )
    return (
        _int(1, 8)  # ir_version
        + _bytes(2, "mlfn init")
        + _bytes(7, graph)
        + _bytes(8, _bytes(1, "") + _int(2, _OPSET))
    )


def expected(rows: list[list[float]]) -> list[float]:
    """What the model answers for ``rows``, computed in Python (for tests and the README)."""
    return [sum(w * v for w, v in zip(WEIGHTS, row, strict=True)) + BIAS for row in rows]

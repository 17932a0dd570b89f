"""The one table of tensor element types: ONNX's name, numpy's, the Open Inference Protocol's
and the Python type a generated schema uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import Field


@dataclass(frozen=True)
class ElementType:
    onnx: str  # as onnxruntime spells it in "tensor(float)"
    numpy: str  # dtype name; "object" holds strings
    v2: str  # Open Inference Protocol datatype
    python: str  # annotation in a generated pydantic schema


ELEMENT_TYPES: tuple[ElementType, ...] = (
    ElementType("bool", "bool", "BOOL", "bool"),
    ElementType("uint8", "uint8", "UINT8", "int"),
    ElementType("uint16", "uint16", "UINT16", "int"),
    ElementType("uint32", "uint32", "UINT32", "int"),
    ElementType("uint64", "uint64", "UINT64", "int"),
    ElementType("int8", "int8", "INT8", "int"),
    ElementType("int16", "int16", "INT16", "int"),
    ElementType("int32", "int32", "INT32", "int"),
    ElementType("int64", "int64", "INT64", "int"),
    ElementType("float16", "float16", "FP16", "float"),
    ElementType("float", "float32", "FP32", "float"),
    ElementType("double", "float64", "FP64", "float"),
    ElementType("string", "object", "BYTES", "str"),
)

BY_ONNX: dict[str, ElementType] = {t.onnx: t for t in ELEMENT_TYPES}
BY_V2: dict[str, ElementType] = {t.v2: t for t in ELEMENT_TYPES}
V2_DATATYPES: tuple[str, ...] = tuple(t.v2 for t in ELEMENT_TYPES)

# The largest finite float32 and float16 (numpy.finfo's, written out: no numpy at import).
FLOAT32_MAX = 3.4028234663852886e38
FLOAT16_MAX = 65504.0
Float32 = Annotated[float, Field(ge=-FLOAT32_MAX, le=FLOAT32_MAX)]
"""A float a model's float32 input holds: a larger one would reach the model as infinity (a
422 naming the field instead). ``mlfn new`` types a float32 input's fields with it."""
Float16 = Annotated[float, Field(ge=-FLOAT16_MAX, le=FLOAT16_MAX)]
"""A float a model's float16 input holds (within ±65504)."""
# The annotation a generated field of a float input narrower than Python's float uses.
BOUNDED_FLOATS: dict[str, str] = {"float": "Float32", "float16": "Float16"}

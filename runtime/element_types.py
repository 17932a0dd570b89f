"""The one table of tensor element types: ONNX's name, numpy's, the Open Inference Protocol's
and the Python type a generated schema uses."""

from __future__ import annotations

from dataclasses import dataclass


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

"""A model that takes named columns (``mlfn convert`` of a model fitted on a DataFrame): one typed
field per column, read from the model's ``mlfn.columns`` metadata."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runtime.convert.base import COLUMNS_KEY
from runtime.element_types import BOUNDED_FLOATS
from runtime.errors import ScaffoldError
from runtime.models.onnx_model import TensorSpec

_PYTHON = {"float": "float", "int": "int", "bool": "bool", "str": "str"}


@dataclass(frozen=True)
class ColumnField:
    """One column's field: its annotation and a value that fits it; ``optional``: a value the
    model imputes, None by default (a number's column NaN there; a string's None, which the
    model is fed as its missing text). The generated predict feeds the field's column,
    reshaped, as the model's ``[batch, 1]`` input."""

    name: str
    annotation: str
    sample: Any
    optional: bool = False


def column_fields(
    inputs: list[TensorSpec], metadata: Mapping[str, str], bounded: bool = False
) -> list[ColumnField] | None:
    """A field per input for a model whose metadata lists its columns; None for any other.
    ``bounded``: a float column of a float32 (or float16) input as runtime's Float32 (Float16)."""
    if COLUMNS_KEY not in metadata:
        return None
    try:
        columns = json.loads(metadata[COLUMNS_KEY])
        by_name = {c["name"]: c for c in columns}
        if not all(c["type"] in _PYTHON for c in columns):
            raise ValueError("unknown type")
    except (ValueError, TypeError, KeyError):
        raise ScaffoldError(
            f"metadata_props {COLUMNS_KEY!r} must be a JSON list of columns (name, type float, "
            f"int, bool or str), not {metadata[COLUMNS_KEY][:80]!r}"
        ) from None
    fields = []
    for spec in inputs:
        column = by_name.get(spec.name)
        if column is None or tuple(spec.shape or ())[1:] != (1,):
            return None  # not the columns convert wrote: the tensor fields serve it
        categories = column.get("categories")
        if column["type"] == "str" and categories and column.get("closed"):
            # The encoder refuses any other value: a 422 naming the choices, not a 500. What
            # an imputer before it replaces ("?") is taken too: it never reaches the encoder.
            taken = [*categories, *(v for v in column.get("replaced", ()) if v not in categories)]
            annotation = f"Literal[{', '.join(json.dumps(str(c)) for c in taken)}]"
        else:
            annotation = _PYTHON[column["type"]]
            if bounded and column["type"] == "float":
                annotation = BOUNDED_FLOATS.get(spec.element_type or "", annotation)
        sample: Any = {"float": 0.0, "int": 0, "bool": False, "str": ""}[column["type"]]
        if categories:
            sample = str(categories[0]) if column["type"] == "str" else categories[0]
        optional = column.get("optional") is True
        fields.append(ColumnField(spec.name, annotation, sample, optional))
    return fields

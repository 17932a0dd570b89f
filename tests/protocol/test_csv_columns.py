"""CSV results written a column at a time say what the row-by-row writer says: the same text,
the same inert formulas, numbers that read back the same."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from runtime.protocol.csv_rows import _cell, _column_cells
from runtime.protocol.csv_safety import safe_cell

TEXTS = ["plain", "=1+1", "-1.5", "+3e10", "-", "+", "@SUM(A1)", "\tx", "\rx", "", None, "é=", "'="]
FLOATS = [0.1, -0.0, 1e-7, 1e16, 123456.789, math.nan, math.inf, None, 2.5]


def _row_path(values: list[Any]) -> list[Any]:
    # As the row path: JSON (a float that is not finite is null) read back, then each cell.
    def as_json(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, list):
            return [as_json(x) for x in v]
        return v

    return [safe_cell(_cell(json.loads(json.dumps(as_json(v))))) for v in values]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str) and a.startswith("["):
        return bool(json.loads(a) == json.loads(b))
    try:
        return float(a) == float(b) or a == b
    except (TypeError, ValueError):
        return bool(a == b)


@pytest.mark.parametrize(
    "column",
    [
        pa.array(TEXTS),
        pa.array(FLOATS, type=pa.float64()),
        pa.array(np.array([0.9, 0.1, 1 / 3], dtype=np.float32)),
        pa.array([1, -2, None, 2**62]),
        pa.array([True, False, None]),
        pa.array([[0.1, 0.2], [], None, [1e-7]], type=pa.list_(pa.float64())),
        pa.FixedSizeListArray.from_arrays(pa.array(np.arange(6, dtype=np.float32) / 3), 3),
        pa.array([[1, 2], None], type=pa.list_(pa.int64())),
        pa.array([None, None]),  # an optional output predict left None everywhere
    ],
)
def test_column_cells_say_what_the_row_path_says(column: pa.Array) -> None:
    cells = _column_cells(column)
    assert cells is not None
    values = column.to_pylist()
    expected = _row_path(values)
    text = pa.types.is_string(column.type)
    for value, want, got in zip(values, expected, cells, strict=True):
        if text or want == "":
            assert got == want, (value, want, got)  # text and blanks, word for word
        else:  # numbers and lists: text that reads back the same
            assert _same(str(want), got), (value, want, got)


def test_a_list_holding_a_float_that_is_not_finite_is_left_to_the_row_path() -> None:
    assert _column_cells(pa.array([[0.1, math.nan]], type=pa.list_(pa.float64()))) is None

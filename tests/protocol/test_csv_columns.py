"""CSV results written a column at a time say what the row-by-row writer says: the same text,
the same inert formulas, numbers that read back the same."""

from __future__ import annotations

import io
import json
import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pydantic import BaseModel

from runtime.errors import BadRequest
from runtime.protocol.batch_formats import ColumnOutcomes, as_outcomes
from runtime.protocol.csv_rows import CsvWriter, _cell, _column_cells
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
    found = _column_cells(column)
    assert found is not None
    cells = found.to_pylist()
    values = column.to_pylist()
    expected = _row_path(values)
    text = pa.types.is_string(column.type)
    for value, want, got in zip(values, expected, cells, strict=True):
        if text or want == "":
            assert got == want, (value, want, got)  # text and blanks, word for word
        else:  # numbers and lists: Python's own text
            assert got == str(want), (value, want, got)


def test_a_list_holding_a_float_that_is_not_finite_is_left_to_the_row_path() -> None:
    assert _column_cells(pa.array([[0.1, math.nan]], type=pa.list_(pa.float64()))) is None


class _Out(BaseModel):
    label: str
    score: float
    probabilities: list[float]
    ids: list[int] | None
    flag: bool


def _written(start: int, outcomes: Any) -> bytes:
    sink = io.BytesIO()
    CsvWriter(sink, _Out).write(start, outcomes)
    return sink.getvalue()


def test_records_written_a_column_at_a_time_are_the_csv_module_s_byte_for_byte() -> None:
    # Quoting (a comma, a quote, CR, LF in text; a list of two or more numbers), formulas,
    # nulls, errors (JSON, so quoted) and the row numbers: the same bytes as the rows' writer.
    n = 9
    outputs = {
        "label": pa.array(["a", "b,c", 'say "hi"', "x\ny", "-\u0661", "=1+1", "cr\rz", None, ""]),
        "score": pa.array([0.5, -1.25, 1e-7, 3.0, 1e16, 0.1, 2.5e-5, None, -0.0]),
        "probabilities": pa.array([[0.1, 0.9], [1.0], [], None, [5e-5, 1e20, 2.0]] * 2)[:n],
        "ids": pa.array([[1, 2], None, [3], [], [4, 5, 6]] * 2, type=pa.list_(pa.int64()))[:n],
        "flag": pa.array([True, False, None, True, False, True, False, True, None]),
    }
    errors = {2: BadRequest('row is, "bad"'), 7: BadRequest("no")}
    failed = pa.array([i in errors for i in range(n)])
    outputs = {k: pc.if_else(failed, pa.nulls(n, a.type), a) for k, a in outputs.items()}
    columns = ColumnOutcomes(outputs, errors, n)
    assert _column_cells(outputs["label"]) is not None  # the column writer writes this one
    assert _written(40, columns) == _written(40, as_outcomes(columns))

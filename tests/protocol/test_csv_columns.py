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
from runtime.protocol.csv_rows import CsvWriter, _cell, _column_cells, float_text
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


def _shortest32(values: Any) -> Any:
    """Each float (in lists too) as the float64 of its float32's shortest digits."""
    if isinstance(values, list):
        return [_shortest32(v) for v in values]
    return float(str(np.float32(values))) if isinstance(values, float) else values


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
    if pa.float32() in (column.type, getattr(column.type, "value_type", None)):
        values = _shortest32(values)  # a float32's own digits, not its float64 widening's
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


def _floats_of_every_layout() -> np.ndarray:
    """Floats across every magnitude and the edges where Arrow's and Python's layouts part
    (1e-9, 1e-6, 1e-4, 1e10, 1e16), both signs, whole numbers, float32 values widened."""
    rng = np.random.default_rng(7)
    edges = np.array([1e-10, 1e-9, 1e-6, 1e-5, 1e-4, 1e10, 1e15, 1e16, 5e-324, 2.2e-308, 1.7e308])
    values = np.concatenate(
        [
            10.0 ** rng.uniform(-320, 308, 20_000),
            rng.uniform(-1e-3, 1e-3, 5_000),
            np.round(rng.uniform(-1e12, 1e12, 2_000)),
            np.round(rng.uniform(-100, 100, 2_000)),
            rng.dirichlet([0.05] * 3, 5_000).astype(np.float32).astype(np.float64).ravel(),
            edges,
            np.nextafter(edges, 0),
            np.nextafter(edges, 1),
            [0.0, -0.0, math.nan, math.inf, -math.inf],
        ]
    )
    values = np.concatenate([values, -values])
    rng.shuffle(values)
    return values


def test_floats_are_written_as_python_s_repr_at_every_magnitude() -> None:
    values = _floats_of_every_layout()
    text = float_text(pa.array(values)).to_pylist()
    wrong = [(v, t) for v, t in zip(values.tolist(), text, strict=True) if t != repr(v)]
    assert not wrong, wrong[:10]


def test_float32s_are_written_with_their_own_shortest_digits_at_every_magnitude() -> None:
    # A float32 is written as the shortest digits that read back as that float32 (what
    # numpy's str and pandas' to_csv write), laid out as Python lays a float out; not the 17
    # digits of its float64 widening.
    with np.errstate(over="ignore"):
        values = _floats_of_every_layout().astype(np.float32)
    edges = np.array([1e-9, 1e-6, 1e-4, 1e10, 1e16], dtype=np.float32)
    values = np.concatenate([values, edges, np.nextafter(edges, np.float32(0)),
                             np.nextafter(edges, np.float32(1e30))])  # fmt: skip
    text = float_text(pa.array(values)).to_pylist()
    wrong = [(v, t) for v, t in zip(values, text, strict=True) if t != repr(float(str(v)))]
    assert not wrong, wrong[:10]
    finite = np.isfinite(values)
    read = np.array([float(t) for t in text], dtype=np.float64).astype(np.float32)
    assert np.array_equal(read[finite], values[finite])  # each reads back as its float32


@pytest.mark.parametrize("mended", [0, 1, 63, 64, 65, 400])
def test_a_few_mended_floats_and_many_are_written_alike(mended: int) -> None:
    # Arrow's layout mended on a few values is spliced in, on many put in place by a mask:
    # either way each value's repr, nulls kept, at the column's first and last value too.
    rng = np.random.default_rng(mended)
    values = rng.uniform(0.1, 0.9, 2_000)
    at = rng.choice(len(values), mended, replace=False)
    values[at] = rng.choice([5e-05, 2e-08, 3.0, -1e12, 1.5e-06], mended)
    if mended:
        values[[0, -1]] = [7e-05, 4.0]
    column = pa.array(values, mask=np.arange(len(values)) % 97 == 5)
    expected = [None if v is None else repr(v) for v in column.to_pylist()]
    assert float_text(column).to_pylist() == expected
    assert float_text(column.slice(3)).to_pylist() == expected[3:]


def test_a_null_float_stays_null_beside_floats_of_every_layout() -> None:
    values = pa.array([5e-05, None, 3.0, 2e-08, None, 1e12, 0.5], pa.float64())
    assert float_text(values).to_pylist() == ["5e-05", None, "3.0", "2e-08", None,
                                              "1000000000000.0", "0.5"]  # fmt: skip
    assert float_text(values.slice(1)).to_pylist() == float_text(values).to_pylist()[1:]


@pytest.mark.parametrize("width", [1, 3])
def test_records_of_fixed_length_lists_are_the_csv_module_s_byte_for_byte(width: int) -> None:
    # Every row's list quoted (a comma in each) or none: each made in one pass, still the
    # csv module's bytes; with a failed row and without.
    n = 50
    values = _floats_of_every_layout()[: n * width]
    values = np.where(np.isfinite(values), values, 0.5)
    lists = pa.FixedSizeListArray.from_arrays(pa.array(values), width)
    outputs = {
        "label": pa.array([f"c{i}" for i in range(n)]),
        "score": pa.array(values[:n]),
        "probabilities": lists.cast(pa.list_(pa.float64())),
        "ids": pa.array([[i] * width for i in range(n)], type=pa.list_(pa.int64())),
        "flag": pa.array([i % 2 == 0 for i in range(n)]),
    }
    for errors in ({}, {3: BadRequest('no, "never"')}):
        failed = pa.array([i in errors for i in range(n)])  # a failed row's outputs: null
        nulled = {k: pc.if_else(failed, pa.nulls(n, a.type), a) for k, a in outputs.items()}
        columns = ColumnOutcomes(nulled, errors, n)
        assert _written(10, columns) == _written(10, as_outcomes(columns))


def test_a_chunk_written_row_by_row_keeps_each_float32_s_own_digits() -> None:
    # A NaN in a list column sends the chunk to the row path's writer: its float32s are still
    # written with their own shortest digits, as the column writer writes them, and the NaN
    # is null as ever.
    score = np.array([0.9847141, 1 / 3, 2.5e-5], dtype=np.float32)
    probabilities = pa.array(
        [[np.float32(0.1), np.float32(0.9)], [np.float32(math.nan)], None],
        type=pa.list_(pa.float32()),
    )
    outputs = {
        "label": pa.array(["a", "b", "c"]),
        "score": pa.array(score),
        "probabilities": probabilities,
        "ids": pa.nulls(3, pa.list_(pa.int64())),
        "flag": pa.array([True, False, True]),
    }
    assert _column_cells(probabilities) is None  # the NaN: row by row
    lines = _written(0, ColumnOutcomes(outputs, {}, 3)).decode().splitlines()
    assert lines[1:] == [
        '0,a,0.9847141,"[0.1,0.9]",,True,',
        "1,b,0.33333334,[null],,False,",
        "2,c,2.5e-05,,,True,",
    ]

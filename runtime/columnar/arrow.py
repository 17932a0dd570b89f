"""Columns as Arrow arrays: what a columnar predict returned, ready for Spark or Parquet."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa


def to_arrow(column: Any) -> pa.Array:
    """An output column as an Arrow array: a 2-D array as a list per row, any other array
    or list as Arrow infers it (Python values where numpy holds objects)."""
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks()
    if isinstance(column, pa.Array):
        return column
    if isinstance(column, np.ndarray):
        if column.ndim == 2 and column.dtype != object:
            flat = pa.array(np.ascontiguousarray(column).reshape(-1))
            return pa.FixedSizeListArray.from_arrays(flat, column.shape[1])
        if column.ndim == 1 and column.dtype != object:
            return pa.array(column)
        return pa.array(column.tolist())
    return pa.array(list(column))


def scatter(values: pa.Array, order: np.ndarray[Any, Any]) -> pa.Array:
    """``values`` placed at rows by ``order`` (an index into ``values`` per row, -1 for a row
    with none: a null there)."""
    missing = order < 0
    if not missing.any() and len(order) == len(values) and (order == np.arange(len(order))).all():
        return values
    indices = pa.array(np.where(missing, 0, order), mask=missing)
    return values.take(indices)


def from_dicts(
    rows: list[Any], keys: frozenset[str], forbid_extra: bool = False
) -> tuple[dict[str, pa.Array], np.ndarray[Any, Any]] | None:
    """Rows read as dicts (a file's JSON lines or CSV records) as Arrow columns, one per key
    the model reads, and the rows whose explicit null the columns cannot tell from a key left
    out, and with ``forbid_extra`` those holding a key the model does not know (pydantic
    decides those). A row that is not a dict (a JSON line holding a list, a number) is
    pydantic's too: its own error, its neighbours scored. None when a column's values are of
    kinds Arrow will not put in one array (text and numbers, say): the rows are then
    validated one by one."""
    given: dict[str, pa.Array] = {}
    suspect = np.array([type(row) is not dict for row in rows], dtype=np.bool_)
    if suspect.any():  # its place in the columns holds nothing
        rows = [row if type(row) is dict else {} for row in rows]
    if forbid_extra:  # a key the model refuses: pydantic says which
        suspect |= np.array([not keys.issuperset(row) for row in rows], dtype=np.bool_)
    for key in keys:
        values = [row.get(key) for row in rows]
        if all(v is None for v in values):
            suspect |= np.array([key in row for row in rows], dtype=np.bool_)
            continue  # left out everywhere: the field's default, or "Field required"
        try:
            given[key] = pa.array(values)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            # Values of mixed kinds (a word among numbers): the column holds the kind most
            # rows have, and the other rows are pydantic's to decide.
            odd = _odd_ones(values)
            if odd is None:
                return None
            suspect |= odd
            try:
                given[key] = pa.array([None if o else v for v, o in zip(values, odd, strict=True)])
            except (pa.ArrowException, TypeError, ValueError, OverflowError):
                return None
        if given[key].null_count:
            explicit = [v is None and key in row for row, v in zip(rows, values, strict=True)]
            suspect |= np.array(explicit, dtype=np.bool_)
    return given, suspect


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def _odd_ones(values: list[Any]) -> np.ndarray[Any, Any] | None:
    """The values not of the kind most values are; None when there is no such kind."""
    kinds = [_kind(v) for v in values]
    counts: dict[str, int] = {}
    for kind, value in zip(kinds, values, strict=True):
        if value is not None:
            counts[kind] = counts.get(kind, 0) + 1
    if not counts:
        return None
    most = max(counts, key=lambda k: counts[k])
    return np.array(
        [v is not None and k != most for k, v in zip(kinds, values, strict=True)], dtype=np.bool_
    )

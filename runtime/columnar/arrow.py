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

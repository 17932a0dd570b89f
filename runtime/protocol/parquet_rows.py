"""Parquet batch files (pyarrow, the ``parquet`` extra): rows read a batch at a time, only the
columns the endpoint reads, each row's size measured in Arrow before it becomes Python objects;
results written as a table typed by the output model.

What the footer tells is used before anything is decoded: a row group whose read columns hold
more than its rows may (``num_rows`` times the row limit, as stored uncompressed) is refused
row by row, unread, as an over-long JSON line is. A group within that is decoded a batch at a
time, a batch about a chunk's bytes of it; a single value wider than the limit in such a group
is decoded (in Arrow, with its page) before its row is refused, so it costs up to its own size,
which the rule bounds by the group's rows times the limit.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import IO, Any

from pydantic import BaseModel

from runtime.errors import FileUnreadable, MlfnError, OutputNotRepresentable, PackageMissing
from runtime.protocol.batch_formats import (
    ColumnOutcomes,
    LazyRows,
    Outcomes,
    RawRow,
    Sink,
    as_outcomes,
    error_json,
    is_list_type,
    output_columns,
    too_long_row,
    unreadable_row,
)


def pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise PackageMissing("a Parquet batch file", "pyarrow", "parquet") from None
    return pyarrow


def read_chunks(
    source: IO[bytes],
    chunk_size: int,
    max_row_bytes: int,
    chunk_bytes: int,
    columns: Collection[str] | None,
    seen: Callable[[list[str]], None] | None = None,
) -> Iterator[Sequence[RawRow]]:
    """Row groups read a batch at a time, only the columns a row needs: a column the endpoint
    never reads is never decoded, however wide. Text columns are read as dictionaries (a
    value repeated down a column is held once) and each row's size is measured in Arrow,
    before any Python object is made of it: a row over ``max_row_bytes`` is its own error,
    as an over-long JSON line is, and chunks are cut by bytes as well as rows. ``seen``: told
    the file's column names (all of them) before any row is read."""
    pa = pyarrow()
    try:
        # Without pre_buffer=False and a buffer_size, a row group's column data is read whole
        # before the first batch: one huge row group would be held in memory at once.
        schema = pa.parquet.ParquetFile(source).schema_arrow
        if seen is not None:
            seen(list(schema.names))
        names = [n for n in schema.names if columns is None or n in columns]
        texts = [n for n in names if _is_text(pa, schema.field(n).type)]
        file = pa.parquet.ParquetFile(
            source, pre_buffer=False, buffer_size=1 << 20, read_dictionary=texts
        )
        meta = file.metadata
        read = set(names)
        for group in range(meta.num_row_groups):
            info = meta.row_group(group)
            if not names:  # no column the endpoint reads: rows of nothing
                yield from _empty_rows(info.num_rows, chunk_size)
                continue
            leaves = [
                j
                for j in range(info.num_columns)
                if info.column(j).path_in_schema.split(".")[0] in read
            ]
            stored = sum(info.column(j).total_uncompressed_size for j in leaves)
            if stored > _allowed(info.num_rows, len(leaves), max_row_bytes):
                # Told by the footer, never decoded: a batch cut by the group's average row
                # could hold the whole of one wide value.
                yield from _refused_group(info.num_rows, stored, max_row_bytes, chunk_size)
                continue
            # A batch holds about a chunk's bytes of the group (as stored, decoded).
            per_row = max(1, stored // max(1, info.num_rows))
            rows = max(1, min(chunk_size, chunk_bytes // per_row))
            for batch in file.iter_batches(batch_size=rows, row_groups=[group], columns=names):
                yield from _batch_chunks(pa, batch, chunk_size, max_row_bytes, chunk_bytes)
    except (pa.ArrowException, OSError) as exc:
        raise FileUnreadable(f"the file cannot be read as Parquet: {exc}") from None


# What Parquet may spend beside a row's values as Arrow holds them: a value stored wider than
# Arrow's type (a uint8 as an INT32: 4x), a length before each text value, definition levels;
# and, a column chunk (a leaf column), a dictionary page (pyarrow's default limit: 1 MiB) with
# page headers and statistics. Generous on purpose: the footer check is there to refuse a
# group whose few rows hide a value hundreds of times the limit, unread; a row that passes it
# and is over the limit is still refused, once decoded.
_WIDENING = 4
_ROW_OVERHEAD = 16  # bytes, a leaf column
_CHUNK_OVERHEAD = (1 << 20) + 64 * 1024  # bytes, a leaf column


def _allowed(rows: int, leaves: int, max_row_bytes: int) -> int:
    """The most a row group's read (leaf) columns may hold as stored, uncompressed, when none
    of its rows is over the limit."""
    return rows * (_WIDENING * max_row_bytes + _ROW_OVERHEAD * leaves) + _CHUNK_OVERHEAD * leaves


def _refused_group(
    rows: int, stored: int, max_row_bytes: int, chunk_size: int
) -> Iterator[list[RawRow]]:
    """Each row of a group too large for its rows, as its own error: one row is simply over
    the limit; of several, which are cannot be told without decoding them."""
    if rows == 1:
        error = too_long_row(max_row_bytes)
    else:
        error = unreadable_row(
            f"row is in a Parquet row group of {rows} rows holding {stored} bytes, more than "
            f"the limit of {max_row_bytes} bytes a row: its rows are refused unread; write "
            "the file with smaller row groups to have the others scored"
        )
    for start in range(0, rows, chunk_size):
        yield [error] * min(chunk_size, rows - start)


def _is_text(pa: Any, kind: Any) -> bool:
    return bool(
        pa.types.is_string(kind) or pa.types.is_large_string(kind)
        or pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
    )  # fmt: skip


def _empty_rows(n: int, chunk_size: int) -> Iterator[list[RawRow]]:
    for start in range(0, n, chunk_size):
        yield [{} for _ in range(min(chunk_size, n - start))]


class ArrowRows(LazyRows):
    """A chunk of a Parquet file's rows as the Arrow batch they were read into: the columnar
    path takes its columns as they are; the row path reads it as a list of rows (dicts, a
    null left out, or a row's error), made on first use. ``batch`` holds the readable rows
    only (at ``readable`` in the chunk): an over-long row's values are not kept."""

    def __init__(self, batch: Any, rows: int, errors: dict[int, MlfnError]) -> None:
        self.readable = [i for i in range(rows) if i not in errors] if errors else list(range(rows))
        if errors:
            pa = pyarrow()
            batch = batch.take(pa.array(self.readable, type=pa.int64()))
        self.batch = batch
        self.errors = errors  # rows over the limit, by their index in the chunk
        super().__init__(rows)

    def _made(self) -> list[RawRow]:
        rows: list[RawRow] = list(self.errors.get(i) for i in range(self._n))
        for i, row in zip(self.readable, _to_rows(self.batch), strict=True):
            rows[i] = row
        return rows

    def rows_at(self, indices: list[int]) -> list[RawRow]:
        """Only the readable rows at ``indices`` (into ``batch``), as the row path reads them."""
        pa = pyarrow()
        return _to_rows(self.batch.take(pa.array(indices, type=pa.int64())))


def _batch_chunks(
    pa: Any, batch: Any, chunk_size: int, max_row_bytes: int, chunk_bytes: int
) -> Iterator[ArrowRows]:
    """The batch in chunks of at most ``chunk_size`` rows, each cut after the row that brings
    its bytes (rows over the limit not counted: they are errors) to ``chunk_bytes``."""
    import numpy as np

    sizes = _row_bytes(pa, batch)
    over = sizes > max_row_bytes
    total = np.cumsum(np.where(over, 0, sizes))  # bytes up to and with each row
    n, start = len(sizes), 0  # the chunk's first row in the batch
    while start < n:
        before = int(total[start - 1]) if start else 0
        full = int(np.searchsorted(total, before + chunk_bytes, side="left"))  # its bytes reached
        end = min(start + chunk_size, full + 1, n)  # one past its last row
        errors: dict[int, MlfnError] = {
            int(i) - start: too_long_row(max_row_bytes)
            for i in np.flatnonzero(over[start:end]) + start
        }
        yield ArrowRows(batch.slice(start, end - start), end - start, errors)
        start = end


def _row_bytes(pa: Any, batch: Any) -> Any:
    """Each row's bytes in Arrow (its values' data, as a JSON line would roughly spend)."""
    import numpy as np
    import pyarrow.compute as pc

    total = np.zeros(batch.num_rows, dtype=np.int64)
    for column in batch.columns:
        kind = column.type
        if pa.types.is_dictionary(kind):
            total += _numbers(pc.take(pc.binary_length(column.dictionary), column.indices))
        elif _is_text(pa, kind):
            total += _numbers(pc.binary_length(column))
        elif pa.types.is_primitive(kind) and kind.bit_width >= 8:
            total += kind.bit_width // 8
        elif column.nbytes > 4096:  # nested: each row's own bytes, where they can matter
            total += np.array([column.slice(i, 1).nbytes for i in range(len(column))])
        else:
            total += column.nbytes // max(1, len(column))
    return total


def _numbers(lengths: Any) -> Any:
    return lengths.fill_null(0).to_numpy(zero_copy_only=False).astype("int64")


def _to_rows(piece: Any) -> list[RawRow]:
    """A slice of a batch as dicts; a value Python cannot hold (a timestamp past year 9999,
    say) is its row's error, the column named."""
    try:
        rows = piece.to_pylist()
    except _UNREPRESENTABLE:
        rows = [_to_row(piece, i) for i in range(piece.num_rows)]
    # A null is a missing value, as an empty CSV cell is.
    return [
        row if isinstance(row, MlfnError) else {k: v for k, v in row.items() if v is not None}
        for row in rows
    ]


def _to_row(piece: Any, i: int) -> RawRow:
    row: dict[str, Any] = {}
    for name, column in zip(piece.schema.names, piece.columns, strict=True):
        try:
            row[name] = column[i].as_py()
        except _UNREPRESENTABLE as exc:
            return unreadable_row(f"column {name!r} cannot be read: {type(exc).__name__}: {exc}")
    return row


# What a value Arrow refuses raises: a string where a number goes, an int over 64 bits, ...
_UNREPRESENTABLE = (ValueError, TypeError, ArithmeticError, KeyError)  # OverflowError too


ROW_GROUP_ROWS = 65_536  # rows of a written row group, at most ...
ROW_GROUP_BYTES = 8 * 1024 * 1024  # ... and about this many bytes in Arrow


class _Unwritable(OutputNotRepresentable):
    """``OutputNotRepresentable`` (its type and detail, as Spark scoring writes it), with a
    message that names the Parquet column, not a Spark one."""

    def __init__(self, field: str, reason: str) -> None:
        MlfnError.__init__(
            self,
            f"output field {field!r} cannot be written as its Parquet column: {reason:.300}",
            detail={"field": field},
        )

    @property
    def type(self) -> str:
        return OutputNotRepresentable.__name__


def _dictionary_columns(pa: Any, schema: Any) -> list[str]:
    """The columns worth a dictionary: text, flags and whole numbers (labels, classes, errors),
    whose values repeat. Not the row numbers, floats or nested values: their values hardly
    repeat, and building a dictionary Parquet then gives up on cost a 65,536-row group of iris
    results 24 ms instead of 10, and 22 % more bytes. Readers see the same table either way."""
    t = pa.types
    return [
        f.name
        for f in schema
        if f.name != "row"
        and (t.is_string(f.type) or t.is_large_string(f.type) or t.is_boolean(f.type)
             or t.is_integer(f.type))
    ]  # fmt: skip


class ParquetWriter:
    def __init__(self, sink: Sink, output: type[BaseModel]) -> None:
        pa = pyarrow()
        self._pa = pa
        columns = output_columns(output)
        types = [arrow_type(pa, annotation) for _, annotation in columns]
        # A field with no exact Arrow type (a union, Any, an enum) is written as JSON text.
        self._as_json = {n for (n, _), t in zip(columns, types, strict=True) if t is None}
        self._schema = pa.schema(
            [("row", pa.int64())]
            + [(n, t or pa.string()) for (n, _), t in zip(columns, types, strict=True)]
            + [("error", pa.string())]
        )
        self._writer = pa.parquet.ParquetWriter(
            sink, self._schema, use_dictionary=_dictionary_columns(pa, self._schema)
        )
        self._held: list[Any] = []  # tables written since the last row group
        self._held_rows = self._held_bytes = 0

    def prepare(self, start: int, outcomes: Outcomes) -> tuple[Any, int]:
        """The chunk as a table of the file's schema, and how many of its predictions only
        their error could be written for."""
        if isinstance(outcomes, ColumnOutcomes):
            table = self._columns(start, outcomes)
            if table is not None:
                return table, 0
            outcomes = as_outcomes(outcomes)
        rows = []
        for i, (prediction, error) in enumerate(outcomes, start):
            row: dict[str, Any] = {}
            if error is None:
                row.update(json.loads(prediction or b"{}"))
                for name in self._as_json & row.keys():
                    row[name] = json.dumps(row[name], separators=(",", ":"), ensure_ascii=False)
            row["row"], row["error"] = i, None if error is None else error_json(error).decode()
            rows.append(row)
        refused = 0
        try:
            table = self._pa.Table.from_pylist(rows, schema=self._schema)
        except (self._pa.ArrowException, *_UNREPRESENTABLE):
            # Only this batch, row by row: a value its column cannot hold is that row's error.
            written = [self._writable(row) for row in rows]
            refused = sum(1 for was, now in zip(rows, written, strict=True) if was is not now)
            table = self._pa.Table.from_pylist(written, schema=self._schema)
        return table, refused

    def write(self, start: int, outcomes: Outcomes, prepared: Any = None) -> int:
        table, refused = prepared if prepared is not None else self.prepare(start, outcomes)
        # Chunks gathered into row groups of a reader's size: a group per chunk costs
        # the writer, and a reader, a footer entry and pages per column each.
        self._held.append(table)
        self._held_rows += table.num_rows
        self._held_bytes += table.nbytes
        if self._held_rows >= ROW_GROUP_ROWS or self._held_bytes >= ROW_GROUP_BYTES:
            self._flush()
        return refused

    def _flush(self) -> None:
        if self._held:
            self._writer.write_table(self._pa.concat_tables(self._held))
        self._held, self._held_rows, self._held_bytes = [], 0, 0

    def _columns(self, start: int, chunk: ColumnOutcomes) -> Any:
        """The chunk as a table of the file's schema straight from its arrays; None when a
        value needs the row path's care: a column Arrow cannot cast, a field written as
        JSON, a float that is not finite (the row path writes null for it, as JSON does)."""
        pa = self._pa
        import pyarrow.compute as pc

        if self._as_json:
            return None
        import numpy as np

        arrays = [pa.array(np.arange(start, start + chunk.rows, dtype=np.int64))]
        try:
            for field in list(self._schema)[1:-1]:
                column = chunk.outputs[field.name]
                if column.type != field.type:
                    column = column.cast(field.type)
                if _has_non_finite(pa, pc, column):
                    return None
                arrays.append(column)
        except (pa.ArrowException, *_UNREPRESENTABLE):
            return None
        if chunk.errors:
            errors: list[str | None] = [None] * chunk.rows
            for i, error in chunk.errors.items():
                errors[i] = error_json(error).decode()
            arrays.append(pa.array(errors).cast(pa.string()))  # inferred: faster than typed
        else:
            arrays.append(pa.nulls(chunk.rows, pa.string()))
        return pa.Table.from_arrays(arrays, schema=self._schema)

    def _writable(self, row: dict[str, Any]) -> dict[str, Any]:
        """``row``, or its error alone when one of its values is one its column cannot hold
        (an int over 64 bits, say), as Spark scoring reports it."""
        for field in self._schema:
            try:
                self._pa.array([row.get(field.name)], type=field.type)
            except (self._pa.ArrowException, *_UNREPRESENTABLE) as exc:
                error = _Unwritable(field.name, f"{type(exc).__name__}: {exc}")
                return {"row": row["row"], "error": error_json(error).decode()}
        return row

    def close(self) -> None:
        self._flush()
        self._writer.close()


def arrow_type(pa: Any, annotation: Any) -> Any:
    """The Arrow type of a pydantic annotation (numbers, strings, booleans, lists, nested models
    as structs, dicts as maps; an optional value is nullable anyway), or None when it has no
    exact one."""
    import types
    import typing

    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        return arrow_type(pa, args[0]) if len(args) == 1 else None
    if origin is typing.Annotated:
        return arrow_type(pa, args[0])
    if origin is typing.Literal:
        kinds = {type(a) for a in args}
        return arrow_type(pa, kinds.pop()) if len(kinds) == 1 else None
    if origin in (list, set, frozenset) or (origin is tuple and len(args) == 2 and args[1] is ...):
        inner = arrow_type(pa, args[0]) if args else None
        return pa.list_(inner) if inner is not None else None
    if origin is dict and len(args) == 2:
        key, value = arrow_type(pa, args[0]), arrow_type(pa, args[1])
        return pa.map_(key, value) if key is not None and value is not None else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        fields = [(name, arrow_type(pa, a)) for name, a in output_columns(annotation)]
        if any(t is None for _, t in fields):
            return None
        return pa.struct(fields)
    exact = {bool: pa.bool_(), int: pa.int64(), float: pa.float64(), str: pa.string()}
    return exact.get(annotation)


def _has_non_finite(pa: Any, pc: Any, column: Any) -> bool:
    """Whether a float anywhere in ``column`` (lists of floats too) is NaN or infinite."""
    kind = column.type
    while is_list_type(kind) or pa.types.is_map(kind):
        if pa.types.is_map(kind):
            column, kind = column.items, kind.item_type
        else:
            column, kind = column.flatten(), kind.value_type
    if not pa.types.is_floating(kind):
        return False
    return not pc.all(pc.fill_null(pc.is_finite(column), True)).as_py()


def valid_text(column: Any) -> bool:
    """Whether an Arrow column holds no text that is not UTF-8 (Parquet and Spark do not check
    what a writer stored as a string; the checks would raise on it)."""
    import pyarrow as pa

    if pa.types.is_dictionary(column.type):  # as Parquet's strings are read
        column = column.dictionary
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return True
    try:
        column.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True

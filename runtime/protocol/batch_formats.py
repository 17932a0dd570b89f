"""Reading rows from a batch file and writing its results, chunk by chunk, in the input's
format: JSON Lines, CSV with a header, or Parquet (pyarrow, the ``parquet`` extra).

Rows are numbered from 0 in file order (blank JSON Lines and a CSV header are not rows). A row
that cannot be read (not JSON, a CSV record of the wrong width, longer than the row limit) is
an error for that row alone; a file that cannot be read at all raises ``FileUnreadable``.
Nothing holds more than one chunk of rows, or one row of at most ``max_row_bytes``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Collection, Iterator, Sequence
from typing import IO, Any, Protocol

from pydantic import BaseModel
from pydantic_core import from_json

from runtime.errors import BadRequest, MlfnError, OutputNotRepresentable, PackageMissing
from runtime.protocol.batch import Format
from runtime.protocol.csv_safety import safe_cell

Outcome = tuple[bytes | None, MlfnError | None]  # a prediction's JSON, or the row's error
RawRow = Any  # a decoded row (a dict), or the MlfnError that says why it could not be read


class FileUnreadable(MlfnError):
    """The file cannot be read as its format at all: nothing in it can be scored."""

    status = 400


class Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...


class RowWriter(Protocol):
    def write(self, start: int, outcomes: Sequence[Outcome]) -> int:
        """Write rows ``start``...; how many of their predictions could only be written as
        errors (a value the format cannot hold)."""
        ...

    def close(self) -> None: ...


def read_rows(
    fmt: Format,
    source: IO[bytes],
    chunk_size: int,
    max_row_bytes: int,
    chunk_bytes: int,
    columns: Collection[str] | None = None,
) -> Iterator[list[RawRow]]:
    """The file's rows in chunks of at most ``chunk_size`` rows and (but for a single row)
    about ``chunk_bytes`` bytes of input, so wide rows make short chunks. ``columns``: the
    only ones a row needs (``input_columns``), None for all; a columnar format reads no
    other (a text format has to read every byte anyway)."""
    if fmt is Format.PARQUET:
        yield from _parquet_chunks(source, chunk_size, max_row_bytes, chunk_bytes, columns)
        return
    rows = (
        _jsonl_rows(source, max_row_bytes)
        if fmt is Format.JSONL
        else _csv_rows(source, max_row_bytes)
    )
    chunk: list[RawRow] = []
    size = 0
    for row, read in rows:
        chunk.append(row)
        size += read
        if len(chunk) == chunk_size or size >= chunk_bytes:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def writer(fmt: Format, sink: Sink, output: type[BaseModel]) -> RowWriter:
    if fmt is Format.JSONL:
        return _JsonlWriter(sink)
    if fmt is Format.CSV:
        return _CsvWriter(sink, output)
    return _ParquetWriter(sink, output)


def unreadable_row(what: str) -> BadRequest:
    return BadRequest(what, detail=[{"field": "row", "message": what, "type": "unreadable"}])


def too_long_row(max_row_bytes: int) -> BadRequest:
    return unreadable_row(f"row is longer than the limit of {max_row_bytes} bytes")


def input_columns(model: type[BaseModel]) -> frozenset[str] | None:
    """The top-level keys a row of ``model`` can be read from (names, aliases, validation
    aliases), or None when every key counts: a model that keeps or refuses extra keys."""
    from pydantic import AliasChoices, AliasPath

    if model.model_config.get("extra") in ("allow", "forbid"):
        return None
    keys: set[str] = set()
    for name, info in model.model_fields.items():
        keys.add(name)
        if info.alias:
            keys.add(info.alias)
        aliases = info.validation_alias
        choices = aliases.choices if isinstance(aliases, AliasChoices) else [aliases]
        for choice in choices:
            if isinstance(choice, str):
                keys.add(choice)
            elif isinstance(choice, AliasPath) and isinstance(choice.path[0], str):
                keys.add(choice.path[0])
    return frozenset(keys)


# --- JSON Lines -------------------------------------------------------------------------------


JSON_ARRAY = "the file holds a JSON array; write one JSON object a line (JSON Lines)"
BOM = b"\xef\xbb\xbf"  # UTF-8's byte-order mark, as Windows tools start a text file


def _jsonl_rows(source: IO[bytes], max_row_bytes: int) -> Iterator[tuple[RawRow, int]]:
    first = True
    bom = BOM  # what the first line may start with, and is no part of row 0
    while True:
        line = source.readline(max_row_bytes + 1)
        if not line:
            return
        if len(line) > max_row_bytes and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):  # the rest of the line, piece by piece
                line = source.readline(1 << 20)
            yield too_long_row(max_row_bytes), 0
            first, bom = False, b""
            continue
        # After the length check, which counts it: stripped before, a first line cut at the
        # limit could pass for a whole one.
        line, bom = line.removeprefix(bom), b""
        if not line.strip():
            continue
        try:
            row = from_json(line)
        except ValueError as exc:
            if first and line.lstrip().startswith(b"["):
                raise FileUnreadable(JSON_ARRAY) from None
            yield unreadable_row(f"row is not JSON: {exc}"), len(line)
        else:
            if first and isinstance(row, list):  # a whole JSON array on one line
                raise FileUnreadable(JSON_ARRAY)
            yield row, len(line)
        first = False


class _JsonlWriter:
    def __init__(self, sink: Sink) -> None:
        self._sink = sink

    def write(self, start: int, outcomes: Sequence[Outcome]) -> int:
        parts = []
        for i, (prediction, error) in enumerate(outcomes, start):
            if error is None:
                parts.append(b'{"row":%d,"prediction":%s}\n' % (i, prediction))
            else:
                parts.append(b'{"row":%d,"error":%s}\n' % (i, _error_json(error)))
        self._sink.write(b"".join(parts))
        return 0

    def close(self) -> None:
        pass


def _error_json(error: MlfnError) -> bytes:
    return json.dumps(error.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()


# --- CSV --------------------------------------------------------------------------------------


def _csv_rows(source: IO[bytes], max_row_bytes: int) -> Iterator[tuple[RawRow, int]]:
    """Records found by their own boundaries (a newline outside quotes), each at most
    ``max_row_bytes``: an over-long or undecodable record is that row's error, and the next
    record starts where this one ended, so every later row keeps its number."""
    # Fields as long as a row may be (the csv module's own limit is 128 KiB, process-wide).
    csv.field_size_limit(max(csv.field_size_limit(), max_row_bytes))
    records = _csv_records(source, max_row_bytes)
    try:
        raw_header, _ = next(records)
    except StopIteration:
        raise FileUnreadable("the CSV file is empty: it needs a header row") from None
    if raw_header is None:
        raise FileUnreadable(f"the CSV header is longer than {max_row_bytes} bytes")
    try:
        header = _parse_record(raw_header.removeprefix(BOM))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise FileUnreadable(f"the CSV header cannot be read: {exc}") from None
    if not header or len(set(header)) != len(header) or not all(h.strip() for h in header):
        raise FileUnreadable(f"the CSV header must name every column once: {header[:20]}")
    if all(_is_number(h) for h in header):
        raise FileUnreadable(
            f"the CSV file's first row is numbers, not column names: {header[:20]}; it needs "
            "a header row naming the input fields"
        )
    for raw, read in records:
        if raw is None:
            yield too_long_row(max_row_bytes), 0
            continue
        if not raw.strip():
            continue  # a blank line
        try:
            record = _parse_record(raw)
        except UnicodeDecodeError as exc:
            yield unreadable_row(f"row is not UTF-8 text: {exc}"), read
            continue
        except csv.Error as exc:
            yield unreadable_row(f"row cannot be read as CSV: {exc}"), read
            continue
        if len(record) != len(header):
            yield (
                unreadable_row(f"row has {len(record)} fields, the header has {len(header)}"),
                read,
            )
            continue
        # An empty cell is a missing value: the field's default applies, or it is reported.
        yield {h: v for h, v in zip(header, record, strict=True) if v != ""}, read


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _csv_records(source: IO[bytes], limit: int) -> Iterator[tuple[bytes | None, int]]:
    """Each CSV record's bytes (None for one over ``limit``): physical lines joined while a
    quoted field is open."""
    parts: list[bytes] = []
    size = 0
    state = _START
    while True:
        line = source.readline(limit + 1 - size)
        if not line:
            if parts:
                yield b"".join(parts), size
            return
        parts.append(line)
        size += len(line)
        # Most numeric files have no quote at all: no scan, unless a skip needs the state.
        if state == _QUOTED or b'"' in line or size > limit:
            state = _scan(line, state)
        if size > limit:
            _skip_record(source, line, state)
            parts, size, state = [], 0, _START
            yield None, 0
            continue
        if state != _QUOTED or not line.endswith(b"\n"):
            yield b"".join(parts), size
            parts, size, state = [], 0, _START


def _skip_record(source: IO[bytes], piece: bytes, state: int) -> None:
    """Read past the rest of the record ``piece`` (its last part read, ending in ``state``)
    is in: to a newline outside quotes, so a quoted field's later lines are not records
    of their own. A piece at a time, whatever the record's length."""
    while piece and (state == _QUOTED or not piece.endswith(b"\n")):
        piece = source.readline(1 << 20)
        state = _scan(piece, state)


# Where a scan of a CSV record stands: at a field's start, in an unquoted field, in a quoted
# one, or just after a quote in a quoted one (the field's end, or the first half of "").
_START, _FIELD, _QUOTED, _QUOTE = range(4)


def _scan(piece: bytes, state: int) -> int:
    """The state after ``piece`` of a record, from ``state`` before it (RFC 4180, as the csv
    module reads it: a quote opens a field only at its start; "" inside one is a quote).
    Pieces may be cut anywhere, even between the quotes of "". Quotes are found with
    ``bytes.find``: a skipped record is scanned whole, and a loop a byte would crawl."""
    i, n = 0, len(piece)
    while i < n:
        if state == _QUOTED:
            j = piece.find(b'"', i)
            if j < 0:
                return _QUOTED
            state, i = _QUOTE, j + 1
        elif state == _QUOTE and piece[i] == 0x22:  # "
            state, i = _QUOTED, i + 1  # an escaped quote
        else:  # unquoted, up to the next quote: a character, unless it starts a field
            j = piece.find(b'"', i)
            end = n if j < 0 else j
            if end > i:
                state = _START if piece[end - 1] == 0x2C else _FIELD  # ,
            if j < 0:
                return state
            state, i = (_QUOTED if state == _START else _FIELD), j + 1
    return state


def _parse_record(raw: bytes) -> list[str]:
    rows = list(csv.reader([raw.decode("utf-8").rstrip("\r\n")]))
    if len(rows) != 1:
        raise csv.Error("a record that is not one line of CSV")
    return rows[0]


class _CsvWriter:
    def __init__(self, sink: Sink, output: type[BaseModel]) -> None:
        self._sink = sink
        self._fields = [name for name, _ in output_columns(output)]
        self._header_written = False

    def write(self, start: int, outcomes: Sequence[Outcome]) -> int:
        buffer = io.StringIO()
        # RFC 4180's CRLF: with "\n" alone the csv module leaves a text's bare CR unquoted,
        # and readers take it for the record's end.
        out = csv.writer(buffer, lineterminator="\r\n")
        if not self._header_written:
            out.writerow(["row", *map(safe_cell, self._fields), "error"])
            self._header_written = True
        for i, (prediction, error) in enumerate(outcomes, start):
            if error is not None:
                out.writerow([i, *([""] * len(self._fields)), _error_json(error).decode()])
                continue
            values = json.loads(prediction or b"{}")
            out.writerow([i, *(safe_cell(_cell(values.get(f))) for f in self._fields), ""])
        self._sink.write(buffer.getvalue().encode())
        return 0

    def close(self) -> None:
        if not self._header_written:
            self.write(0, [])


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return value


RESERVED_COLUMNS = ("row", "error")


def output_columns(output: type[BaseModel]) -> list[tuple[str, Any]]:
    """The output model's columns as its predictions are written (by serialization alias,
    computed fields included), each with its annotation."""
    columns = [
        (f.serialization_alias or f.alias or name, f.annotation)
        for name, f in output.model_fields.items()
        if not f.exclude
    ]
    columns += [
        (f.alias or name, f.return_type) for name, f in output.model_computed_fields.items()
    ]
    return columns


# --- Parquet ----------------------------------------------------------------------------------


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise PackageMissing("a Parquet batch file", "pyarrow", "parquet") from None
    return pyarrow


def _parquet_chunks(
    source: IO[bytes],
    chunk_size: int,
    max_row_bytes: int,
    chunk_bytes: int,
    columns: Collection[str] | None,
) -> Iterator[list[RawRow]]:
    """Row groups read a batch at a time, only the columns a row needs: a column the endpoint
    never reads is never decoded, however wide. Text columns are read as dictionaries (a
    value repeated down a column is held once) and each row's size is measured in Arrow,
    before any Python object is made of it: a row over ``max_row_bytes`` is its own error,
    as an over-long JSON line is, and chunks are cut by bytes as well as rows."""
    pa = _pyarrow()
    try:
        # Without pre_buffer=False and a buffer_size, a row group's column data is read whole
        # before the first batch: one huge row group would be held in memory at once.
        schema = pa.parquet.ParquetFile(source).schema_arrow
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
            stored = sum(
                info.column(j).total_uncompressed_size
                for j in range(info.num_columns)
                if info.column(j).path_in_schema.split(".")[0] in read
            )
            if info.num_rows == 1 and stored > max_row_bytes:
                yield [too_long_row(max_row_bytes)]  # told by the footer, never read
                continue
            # A batch holds about a chunk's bytes of the group (as stored, decoded).
            per_row = max(1, stored // max(1, info.num_rows))
            rows = max(1, min(chunk_size, chunk_bytes // per_row))
            for batch in file.iter_batches(batch_size=rows, row_groups=[group], columns=names):
                yield from _batch_chunks(pa, batch, chunk_size, max_row_bytes, chunk_bytes)
    except (pa.ArrowException, OSError) as exc:
        raise FileUnreadable(f"the file cannot be read as Parquet: {exc}") from None


def _is_text(pa: Any, kind: Any) -> bool:
    return bool(
        pa.types.is_string(kind) or pa.types.is_large_string(kind)
        or pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
    )  # fmt: skip


def _empty_rows(n: int, chunk_size: int) -> Iterator[list[RawRow]]:
    for start in range(0, n, chunk_size):
        yield [{} for _ in range(min(chunk_size, n - start))]


def _batch_chunks(
    pa: Any, batch: Any, chunk_size: int, max_row_bytes: int, chunk_bytes: int
) -> Iterator[list[RawRow]]:
    sizes = _row_bytes(pa, batch)
    chunk: list[RawRow] = []
    size = 0
    start = 0  # the first row of the run of readable rows not yet made Python objects

    def run(end: int) -> list[RawRow]:
        return _to_rows(batch.slice(start, end - start)) if end > start else []

    for i, row_size in enumerate(sizes):
        if row_size > max_row_bytes:
            chunk += run(i)
            chunk.append(too_long_row(max_row_bytes))
            start = i + 1
        else:
            size += row_size
        if len(chunk) + i + 1 - start >= chunk_size or size >= chunk_bytes:
            yield chunk + run(i + 1)
            chunk, size, start = [], 0, i + 1
    chunk += run(len(sizes))
    if chunk:
        yield chunk


def _row_bytes(pa: Any, batch: Any) -> list[int]:
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
    return total.tolist()  # type: ignore[no-any-return]


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


class _ParquetWriter:
    def __init__(self, sink: Sink, output: type[BaseModel]) -> None:
        pa = _pyarrow()
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
        self._writer = pa.parquet.ParquetWriter(sink, self._schema)

    def write(self, start: int, outcomes: Sequence[Outcome]) -> int:
        rows = []
        for i, (prediction, error) in enumerate(outcomes, start):
            row: dict[str, Any] = {}
            if error is None:
                row.update(json.loads(prediction or b"{}"))
                for name in self._as_json & row.keys():
                    row[name] = json.dumps(row[name], separators=(",", ":"), ensure_ascii=False)
            row["row"], row["error"] = i, None if error is None else _error_json(error).decode()
            rows.append(row)
        refused = 0
        try:
            table = self._pa.Table.from_pylist(rows, schema=self._schema)
        except (self._pa.ArrowException, *_UNREPRESENTABLE):
            # Only this batch, row by row: a value its column cannot hold is that row's error.
            written = [self._writable(row) for row in rows]
            refused = sum(1 for was, now in zip(rows, written, strict=True) if was is not now)
            table = self._pa.Table.from_pylist(written, schema=self._schema)
        self._writer.write_table(table)
        return refused

    def _writable(self, row: dict[str, Any]) -> dict[str, Any]:
        """``row``, or its error alone when one of its values is one its column cannot hold
        (an int over 64 bits, say), as Spark scoring reports it."""
        for field in self._schema:
            try:
                self._pa.array([row.get(field.name)], type=field.type)
            except (self._pa.ArrowException, *_UNREPRESENTABLE) as exc:
                error = _Unwritable(field.name, f"{type(exc).__name__}: {exc}")
                return {"row": row["row"], "error": _error_json(error).decode()}
        return row

    def close(self) -> None:
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

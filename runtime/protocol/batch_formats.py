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
from collections.abc import Iterator, Sequence
from typing import IO, Any, Protocol

from pydantic import BaseModel
from pydantic_core import from_json

from runtime.errors import BadRequest, MlfnError, PackageMissing
from runtime.protocol.batch import Format

Outcome = tuple[bytes | None, MlfnError | None]  # a prediction's JSON, or the row's error
RawRow = Any  # a decoded row (a dict), or the MlfnError that says why it could not be read


class FileUnreadable(MlfnError):
    """The file cannot be read as its format at all: nothing in it can be scored."""

    status = 400


class Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...


class RowWriter(Protocol):
    def write(self, start: int, outcomes: Sequence[Outcome]) -> None: ...

    def close(self) -> None: ...


def read_rows(
    fmt: Format, source: IO[bytes], chunk_size: int, max_row_bytes: int
) -> Iterator[list[RawRow]]:
    """The file's rows in chunks of ``chunk_size``."""
    rows: Iterator[RawRow]
    if fmt is Format.PARQUET:
        yield from _parquet_chunks(source, chunk_size)
        return
    rows = _jsonl_rows(source, max_row_bytes) if fmt is Format.JSONL else _csv_rows(source)
    chunk: list[RawRow] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == chunk_size:
            yield chunk
            chunk = []
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


# --- JSON Lines -------------------------------------------------------------------------------


def _jsonl_rows(source: IO[bytes], max_row_bytes: int) -> Iterator[RawRow]:
    number = 0
    while True:
        line = source.readline(max_row_bytes + 1)
        if not line:
            return
        if len(line) > max_row_bytes and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):  # the rest of the line, piece by piece
                line = source.readline(1 << 20)
            yield unreadable_row(f"row is longer than the limit of {max_row_bytes} bytes")
            number += 1
            continue
        if not line.strip():
            continue
        try:
            yield from_json(line)
        except ValueError as exc:
            yield unreadable_row(f"row is not JSON: {exc}")
        number += 1


class _JsonlWriter:
    def __init__(self, sink: Sink) -> None:
        self._sink = sink

    def write(self, start: int, outcomes: Sequence[Outcome]) -> None:
        parts = []
        for i, (prediction, error) in enumerate(outcomes, start):
            if error is None:
                parts.append(b'{"row":%d,"prediction":%s}\n' % (i, prediction))
            else:
                parts.append(b'{"row":%d,"error":%s}\n' % (i, _error_json(error)))
        self._sink.write(b"".join(parts))

    def close(self) -> None:
        pass


def _error_json(error: MlfnError) -> bytes:
    return json.dumps(error.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()


# --- CSV --------------------------------------------------------------------------------------


def _csv_rows(source: IO[bytes]) -> Iterator[RawRow]:
    # utf-8-sig: spreadsheet exports often start with a byte-order mark.
    text = io.TextIOWrapper(source, encoding="utf-8-sig", newline="")
    records = csv.reader(text)
    try:
        header = next(records)
    except StopIteration:
        raise FileUnreadable("the CSV file is empty: it needs a header row") from None
    except UnicodeDecodeError as exc:
        raise FileUnreadable(f"the CSV file is not UTF-8 text: {exc}") from None
    except csv.Error as exc:
        raise FileUnreadable(f"the CSV header cannot be read: {exc}") from None
    if not header or len(set(header)) != len(header) or not all(h.strip() for h in header):
        raise FileUnreadable(f"the CSV header must name every column once: {header[:20]}")
    while True:
        try:
            record = next(records)
        except StopIteration:
            return
        except UnicodeDecodeError as exc:
            raise FileUnreadable(f"the CSV file is not UTF-8 text: {exc}") from None
        except csv.Error as exc:  # a field over the csv module's limit, a stray quote
            yield unreadable_row(f"row cannot be read as CSV: {exc}")
            continue
        if not record:
            continue  # a blank line
        if len(record) != len(header):
            yield unreadable_row(f"row has {len(record)} fields, the header has {len(header)}")
            continue
        # An empty cell is a missing value: the field's default applies, or it is reported.
        yield {h: v for h, v in zip(header, record, strict=True) if v != ""}


class _CsvWriter:
    def __init__(self, sink: Sink, output: type[BaseModel]) -> None:
        self._sink = sink
        self._fields = _column_names(output)
        self._header_written = False

    def write(self, start: int, outcomes: Sequence[Outcome]) -> None:
        buffer = io.StringIO()
        out = csv.writer(buffer, lineterminator="\n")
        if not self._header_written:
            out.writerow(["row", *self._fields, "error"])
            self._header_written = True
        for i, (prediction, error) in enumerate(outcomes, start):
            if error is not None:
                out.writerow([i, *([""] * len(self._fields)), _error_json(error).decode()])
                continue
            values = json.loads(prediction or b"{}")
            out.writerow([i, *(_cell(values.get(f)) for f in self._fields), ""])
        self._sink.write(buffer.getvalue().encode())

    def close(self) -> None:
        if not self._header_written:
            self.write(0, [])


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return value


def _column_names(output: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in output.model_fields.items()]


# --- Parquet ----------------------------------------------------------------------------------


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise PackageMissing("a Parquet batch file", "pyarrow", "parquet") from None
    return pyarrow


def _parquet_chunks(source: IO[bytes], chunk_size: int) -> Iterator[list[RawRow]]:
    pa = _pyarrow()
    try:
        file = pa.parquet.ParquetFile(source)
    except (pa.ArrowInvalid, OSError) as exc:
        raise FileUnreadable(f"the file is not Parquet: {exc}") from None
    for batch in file.iter_batches(batch_size=chunk_size):
        # A null is a missing value, as an empty CSV cell is.
        yield [{k: v for k, v in row.items() if v is not None} for row in batch.to_pylist()]


class _ParquetWriter:
    def __init__(self, sink: Sink, output: type[BaseModel]) -> None:
        pa = _pyarrow()
        self._pa = pa
        self._fields = _column_names(output)
        types = [arrow_type(pa, f.annotation) for f in output.model_fields.values()]
        self._schema = pa.schema(
            [("row", pa.int64())]
            + [(n, t) for n, t in zip(self._fields, types, strict=True)]
            + [("error", pa.string())]
        )
        self._writer = pa.parquet.ParquetWriter(sink, self._schema)

    def write(self, start: int, outcomes: Sequence[Outcome]) -> None:
        rows = []
        for i, (prediction, error) in enumerate(outcomes, start):
            row: dict[str, Any] = {"row": i, "error": None}
            if error is None:
                row.update(json.loads(prediction or b"{}"))
            else:
                row["error"] = _error_json(error).decode()
            rows.append(row)
        self._writer.write_table(self._pa.Table.from_pylist(rows, schema=self._schema))

    def close(self) -> None:
        self._writer.close()


def arrow_type(pa: Any, annotation: Any) -> Any:
    """The Arrow type of a pydantic field's annotation (numbers, strings, booleans, lists,
    nested models as structs, dicts as maps; optional values are nullable anyway)."""
    import types
    import typing

    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return arrow_type(pa, args[0])
    if origin is typing.Literal:
        return arrow_type(pa, type(args[0])) if args else pa.string()
    if origin is typing.Annotated:
        return arrow_type(pa, args[0])
    if origin in (list, tuple, set, frozenset, Sequence) and args:
        return pa.list_(arrow_type(pa, args[0]))
    if origin is dict and len(args) == 2:
        return pa.map_(arrow_type(pa, args[0]), arrow_type(pa, args[1]))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return pa.struct(
            [
                (f.alias or name, arrow_type(pa, f.annotation))
                for name, f in annotation.model_fields.items()
            ]
        )
    simple = {bool: pa.bool_(), int: pa.int64(), float: pa.float64(), str: pa.string()}
    return simple.get(annotation, pa.string())

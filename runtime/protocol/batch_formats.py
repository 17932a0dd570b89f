"""Reading rows from a batch file and writing its results, chunk by chunk, in the input's
format: JSON Lines, CSV with a header, or Parquet (``parquet_rows``).

Rows are numbered from 0 in file order (blank JSON Lines and a CSV header are not rows). A row
that cannot be read (not JSON, a CSV record of the wrong width, longer than the row limit) is
an error for that row alone; a file that cannot be read at all raises ``FileUnreadable``.
Nothing holds more than one chunk of rows, or one row of at most ``max_row_bytes`` (Parquet:
see ``parquet_rows`` for what its footer can and cannot tell).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, Protocol, overload

from pydantic import BaseModel
from pydantic_core import from_json

from runtime.errors import BadRequest, MlfnError
from runtime.protocol.batch import Format
from runtime.protocol.csv_safety import safe_cell

Outcome = tuple[bytes | None, MlfnError | None]  # a prediction's JSON, or the row's error
RawRow = Any  # a decoded row (a dict), or the MlfnError that says why it could not be read


@dataclass(frozen=True)
class ColumnOutcomes:
    """A chunk's outcomes as columns: each output column (by the name it is written under)
    an Arrow array with a value per row, null where the row failed, and each failed row's
    error by its index in the chunk."""

    outputs: dict[str, Any]  # pyarrow arrays
    errors: dict[int, MlfnError]
    rows: int

    def __len__(self) -> int:
        return self.rows

    def python(self) -> list[dict[str, Any]]:
        """Each row's outputs as plain values (maps as dicts), as a prediction's JSON holds
        them: a float that is not finite is None."""
        lists = {n: a.to_pylist(maps_as_pydicts="strict") for n, a in self.outputs.items()}
        names = list(lists)
        return [
            {n: _finite(v) for n, v in zip(names, values, strict=True)}
            for values in zip(*lists.values(), strict=True)
        ]


def _finite(value: Any) -> Any:
    """``value`` with each float that is not finite as None, at any depth (pydantic writes
    them as JSON null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


Outcomes = Sequence[Outcome] | ColumnOutcomes


def as_outcomes(chunk: Outcomes) -> Sequence[Outcome]:
    """Column outcomes as one outcome per row (a prediction as compact JSON)."""
    if not isinstance(chunk, ColumnOutcomes):
        return chunk
    rows = chunk.python()
    return [
        (None, chunk.errors[i])
        if i in chunk.errors
        else (json.dumps(row, separators=(",", ":"), ensure_ascii=False).encode(), None)
        for i, row in enumerate(rows)
    ]


def error_count(chunk: Outcomes) -> int:
    if isinstance(chunk, ColumnOutcomes):
        return len(chunk.errors)
    return sum(1 for _, error in chunk if error is not None)


class FileUnreadable(MlfnError):
    """The file cannot be read as its format at all: nothing in it can be scored."""

    status = 400


class Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...


class RowWriter(Protocol):
    def write(self, start: int, outcomes: Outcomes) -> int:
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
) -> Iterator[Sequence[RawRow]]:
    """The file's rows in chunks of at most ``chunk_size`` rows and (but for a single row)
    about ``chunk_bytes`` bytes of input, so wide rows make short chunks. ``columns``: the
    only ones a row needs (``input_columns``), None for all; a columnar format reads no
    other (a text format has to read every byte anyway)."""
    if fmt is Format.PARQUET:
        from runtime.protocol import parquet_rows

        yield from parquet_rows.read_chunks(source, chunk_size, max_row_bytes, chunk_bytes, columns)
        return
    if fmt is Format.CSV:
        header, records = _csv_records_of(source, max_row_bytes)
        for piece in _chunks(records, chunk_size, chunk_bytes):
            yield CsvRows(header, piece)
        return
    yield from _chunks(_jsonl_rows(source, max_row_bytes), chunk_size, chunk_bytes)


def _chunks(
    rows: Iterator[tuple[Any, int]], chunk_size: int, chunk_bytes: int
) -> Iterator[list[Any]]:
    chunk: list[Any] = []
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
    from runtime.protocol.parquet_rows import ParquetWriter

    return ParquetWriter(sink, output)


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

    def write(self, start: int, outcomes: Outcomes) -> int:
        parts = []
        for i, (prediction, error) in enumerate(as_outcomes(outcomes), start):
            if error is None:
                parts.append(b'{"row":%d,"prediction":%s}\n' % (i, prediction))
            else:
                parts.append(b'{"row":%d,"error":%s}\n' % (i, error_json(error)))
        self._sink.write(b"".join(parts))
        return 0

    def close(self) -> None:
        pass


def error_json(error: MlfnError) -> bytes:
    return json.dumps(error.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()


# --- CSV --------------------------------------------------------------------------------------


def _csv_records_of(
    source: IO[bytes], max_row_bytes: int
) -> tuple[list[str], Iterator[tuple[bytes | MlfnError, int]]]:
    """The header, and each later record's bytes (a blank line is no record), or its error
    when it is over the limit."""
    allow_csv_fields(max_row_bytes)
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

    def rest() -> Iterator[tuple[bytes | MlfnError, int]]:
        for raw, read in records:
            if raw is None:
                yield too_long_row(max_row_bytes), 0
            elif raw.strip():  # a blank line is no row
                yield raw, read

    return header, rest()


def record_row(header: list[str], raw: bytes) -> RawRow:
    """A CSV record as the row path reads it: a dict of its non-empty cells by column, or
    the error that says why it cannot be read."""
    try:
        record = _parse_record(raw)
    except UnicodeDecodeError as exc:
        return unreadable_row(f"row is not UTF-8 text: {exc}")
    except csv.Error as exc:
        return unreadable_row(f"row cannot be read as CSV: {exc}")
    if len(record) != len(header):
        return unreadable_row(f"row has {len(record)} fields, the header has {len(header)}")
    # An empty cell is a missing value: the field's default applies, or it is reported.
    return {h: v for h, v in zip(header, record, strict=True) if v != ""}


class CsvRows(Sequence[RawRow]):
    """A chunk of a CSV file's records, read as rows (dicts) on first use by the row path;
    the columnar path may have Arrow parse them all at once (``columns``)."""

    def __init__(self, header: list[str], records: list[bytes | MlfnError]) -> None:
        self.header = header
        self.records = records
        self._rows: list[RawRow] | None = None

    def __len__(self) -> int:
        return len(self.records)

    @overload
    def __getitem__(self, i: int) -> RawRow: ...
    @overload
    def __getitem__(self, i: slice) -> list[RawRow]: ...
    def __getitem__(self, i: int | slice) -> RawRow | list[RawRow]:
        return self.rows()[i]

    def rows(self) -> list[RawRow]:
        if self._rows is None:
            self._rows = [self._row(i) for i in range(len(self.records))]
        return self._rows

    def rows_at(self, indices: list[int]) -> list[RawRow]:
        return [self._row(i) for i in indices]

    def _row(self, i: int) -> RawRow:
        raw = self.records[i]
        return raw if isinstance(raw, MlfnError) else record_row(self.header, raw)

    def columns(
        self, keys: Collection[str]
    ) -> tuple[dict[str, Any], list[int], dict[int, MlfnError]] | None:
        """The ``keys`` columns of the readable records as Arrow text (an empty cell null),
        the records they hold, and each other record's error; None unless every record is
        plain (no quote, no carriage return inside), where Arrow's CSV reader and the csv
        module split alike: then the row path reads the chunk."""
        import pyarrow as pa
        import pyarrow.csv as pcsv

        width = len(self.header)
        errors: dict[int, MlfnError] = {}
        lines: list[bytes] = []
        readable: list[int] = []
        for i, raw in enumerate(self.records):
            if isinstance(raw, MlfnError):
                errors[i] = raw
                continue
            line = raw.rstrip(b"\r\n")
            if b'"' in line or b"\r" in line:
                return None
            fields = line.count(b",") + 1
            if fields != width:
                errors[i] = unreadable_row(f"row has {fields} fields, the header has {width}")
                continue
            lines.append(line)
            readable.append(i)
        wanted = [h for h in self.header if h in keys]
        if not lines or not wanted:
            return None
        try:
            table = pcsv.read_csv(
                io.BytesIO(b"\n".join(lines) + b"\n"),
                read_options=pcsv.ReadOptions(column_names=self.header),
                parse_options=pcsv.ParseOptions(quote_char=False, newlines_in_values=False),
                convert_options=pcsv.ConvertOptions(
                    column_types={h: pa.string() for h in wanted},
                    include_columns=wanted,
                    strings_can_be_null=True,
                    null_values=[""],
                ),
            )
        except (pa.ArrowException, UnicodeDecodeError, ValueError):
            return None  # text that is not UTF-8, say: the row path says which row
        if table.num_rows != len(lines):
            return None
        return {h: table.column(h).combine_chunks() for h in wanted}, readable, errors


def allow_csv_fields(size: int) -> None:
    """Let the csv module read fields of ``size`` bytes: its own limit is 128 KiB, and
    process-wide, so it is only ever raised (to what a C long holds on every platform)."""
    csv.field_size_limit(max(csv.field_size_limit(), min(size, 2**31 - 1)))


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

    def write(self, start: int, outcomes: Outcomes) -> int:
        buffer = io.StringIO()
        # RFC 4180's CRLF: with "\n" alone the csv module leaves a text's bare CR unquoted,
        # and readers take it for the record's end.
        out = csv.writer(buffer, lineterminator="\r\n")
        if not self._header_written:
            out.writerow(["row", *map(safe_cell, self._fields), "error"])
            self._header_written = True
        if isinstance(outcomes, ColumnOutcomes):  # cells made a column at a time
            cells = [_column_cells(outcomes.outputs[f]) for f in self._fields]
            if all(c is not None for c in cells):
                errors = [""] * outcomes.rows
                for i, failed in outcomes.errors.items():
                    errors[i] = error_json(failed).decode()
                numbers = range(start, start + outcomes.rows)
                out.writerows(zip(numbers, *cells, errors, strict=True))  # type: ignore[arg-type]
                self._sink.write(buffer.getvalue().encode())
                return 0
            outcomes = as_outcomes(outcomes)  # a column of another kind: row by row
        for i, (prediction, error) in enumerate(outcomes, start):
            if error is not None:
                out.writerow([i, *([""] * len(self._fields)), error_json(error).decode()])
                continue
            values = json.loads(prediction or b"{}")
            out.writerow([i, *(safe_cell(_cell(values.get(f))) for f in self._fields), ""])
        self._sink.write(buffer.getvalue().encode())
        return 0

    def close(self) -> None:
        if not self._header_written:
            self.write(0, [])


# A cell a spreadsheet would run (``csv_safety``), as a regular expression over a column.
_FORMULA = r"^[=+\-@\t\r]"
_PLAIN_NUMBER = r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"


def _column_cells(column: Any) -> list[Any] | None:
    """An output column's CSV cells, made by Arrow a column at a time: the text the row
    path writes for each value (a null, and a float that is not finite, empty; a list as
    compact JSON; text made inert as ``safe_cell`` makes it). None for a column of another
    kind, or a list holding a float that is not finite: those are written value by value."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if pa.types.is_null(kind):
        return [""] * len(column)
    if pa.types.is_floating(kind):
        wide = column.cast(pa.float64())
        text = pc.if_else(pc.is_finite(wide), wide.cast(pa.string()), None)
    elif pa.types.is_integer(kind):
        text = column.cast(pa.string())
    elif pa.types.is_boolean(kind):
        text = pc.if_else(column, "True", "False")  # as Python writes a bool
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        formula = pc.and_(
            pc.match_substring_regex(column, _FORMULA),
            pc.invert(pc.match_substring_regex(column, _PLAIN_NUMBER)),
        )
        text = pc.if_else(formula, pc.binary_join_element_wise("'", column, ""), column)
    elif (
        pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind) or pa.types.is_large_list(kind)
    ):
        items = column.flatten()
        if pa.types.is_floating(items.type):
            if items.null_count or pc.any(pc.invert(pc.is_finite(items))).as_py():
                return None  # null or NaN inside: JSON null, written value by value
            listed = pa.list_(pa.string())
            parts = column.cast(pa.list_(pa.float64())).cast(listed)
        elif pa.types.is_integer(items.type) and not items.null_count:
            parts = column.cast(pa.list_(pa.string()))
        else:
            return None
        text = pc.binary_join_element_wise("[", pc.binary_join(parts, ","), "]", "")
    else:
        return None
    cells: list[Any] = pc.fill_null(text, "").to_pylist()
    return cells


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

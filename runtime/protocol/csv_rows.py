"""CSV batch files: records found by their own boundaries, read as rows (the csv module) or a
slab at a time as Arrow columns, and results written a row or a column at a time, each text
cell made inert as ``csv_safety`` says."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Collection, Iterator, Sequence
from typing import IO, Any, overload

from pydantic import BaseModel

from runtime.errors import MlfnError
from runtime.protocol.batch_formats import (
    BOM,
    ColumnOutcomes,
    FileUnreadable,
    Outcomes,
    RawRow,
    Sink,
    as_outcomes,
    error_json,
    output_columns,
    too_long_row,
    unreadable_row,
)
from runtime.protocol.csv_safety import safe_cell


def csv_records_of(
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
    if all(is_number(h) for h in header):
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


def is_number(text: str) -> bool:
    """Whether ``text`` reads as a number (as Python's ``float`` reads it)."""
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


class CsvWriter:
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

"""CSV batch files: records found by their own boundaries, read as rows (the csv module) or a
slab at a time as Arrow columns, and results written a row or a column at a time, each text
cell made inert as ``csv_safety`` says."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Callable, Collection, Iterator
from typing import IO, Any, Protocol

from pydantic import BaseModel

from runtime.errors import FileUnreadable, MlfnError
from runtime.protocol.batch_formats import (
    BOM,
    ColumnOutcomes,
    LazyRows,
    Outcomes,
    RawRow,
    Sink,
    as_outcomes,
    chunked,
    error_json,
    is_list_type,
    output_columns,
    too_long_row,
    unreadable_row,
)
from runtime.protocol.csv_safety import FORMULA_STARTS, NUMBER, safe_cell


def read_chunks(
    source: IO[bytes],
    chunk_size: int,
    max_row_bytes: int,
    chunk_bytes: int,
    seen: Callable[[list[str]], None] | None = None,
) -> Iterator[CsvRows]:
    """The file's rows after its header, in chunks of at most ``chunk_size`` rows and (but
    for a single row) about ``chunk_bytes`` bytes. A stretch of plain records (no quote, no
    carriage return but before a newline: a line is a record) is cut into rows a chunk at a
    time, without a Python step per row; any other stretch is read record by record.
    ``seen``: told the header before any row is read."""
    header = _header(source, max_row_bytes)
    if seen is not None:
        seen(header)
    stream = _Lookahead(source)
    estimate = 64 * 1024  # bytes for a chunk's lines, learnt from the chunks before
    while True:
        plain = _plain_chunk(stream, header, chunk_size, max_row_bytes, chunk_bytes, estimate)
        if plain is None:  # quoted text, a lone CR, or a record longer than a block
            rows = _record_rows(_csv_records(stream, max_row_bytes), max_row_bytes)
            records = next(chunked(rows, chunk_size, chunk_bytes), None)
            if records is None:
                return
            yield CsvRows(header, records)
            continue
        chunk, used = plain
        if used == 0:
            return
        estimate = max(estimate, used + used // 4)
        if len(chunk):
            yield chunk


def _header(source: IO[bytes], max_row_bytes: int) -> list[str]:
    allow_csv_fields(max_row_bytes)
    try:
        raw_header, _ = next(_csv_records(source, max_row_bytes))
    except StopIteration:
        raise FileUnreadable("the CSV file is empty: it needs a header row") from None
    if raw_header is None:
        raise FileUnreadable(f"the CSV header is longer than {max_row_bytes} bytes")
    try:
        header = _parse_record(raw_header.removeprefix(BOM))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise FileUnreadable(f"the CSV header cannot be read: {exc}") from None
    # A DataFrame's index, which pandas' to_csv writes first and unnamed by default, names no
    # field: a column the rows carry and no field reads, as any other column no field names.
    named = header[1:] if len(header) > 1 and header[0] == "" else header
    if not any(h.strip() for h in header):
        raise FileUnreadable(
            "the CSV file's first line names no column: it needs a header row naming the input "
            "fields"
        )
    if len(set(header)) != len(header) or not all(h.strip() for h in named):
        raise FileUnreadable(f"the CSV header must name every column once: {header[:20]}")
    if all(is_number(h) for h in named):
        raise FileUnreadable(
            f"the CSV file's first row is numbers, not column names: {header[:20]}; it needs "
            "a header row naming the input fields"
        )
    return header


def _record_rows(
    records: Iterator[tuple[bytes | None, int]], max_row_bytes: int
) -> Iterator[tuple[bytes | MlfnError, int]]:
    """Each record's bytes, or its error when it is over the limit; a blank line is no row."""
    for raw, read in records:
        if raw is None:
            yield too_long_row(max_row_bytes), 0
        elif raw.strip():
            yield raw, read


class _Lookahead:
    """A byte stream read ahead in blocks: the plain-record reader looks at a block before
    it takes any of it; the record reader reads lines from what is left."""

    def __init__(self, source: IO[bytes]) -> None:
        self._source = source
        self.buffer = b""
        self.pos = 0  # the first byte of ``buffer`` not taken
        self.eof = False

    def ahead(self, n: int) -> int:
        """Bytes held ahead (at ``buffer[pos:]``), at least ``n`` unless the stream ends."""
        while len(self.buffer) - self.pos < n and not self.eof:
            more = self._source.read(max(n - (len(self.buffer) - self.pos), 1 << 16))
            if not more:
                self.eof = True
                break
            self.buffer = self.buffer[self.pos :] + more
            self.pos = 0
        return len(self.buffer) - self.pos

    def take(self, n: int) -> None:
        self.pos += n

    def readline(self, limit: int = -1, /) -> bytes:
        held = len(self.buffer) - self.pos
        if not held:
            return self._source.readline(limit)
        stop = self.pos + (held if limit < 0 else min(held, limit))
        end = self.buffer.find(b"\n", self.pos, stop)
        if end >= 0 or stop < len(self.buffer):
            cut = end + 1 if end >= 0 else stop
            line = self.buffer[self.pos : cut]
            self.pos = cut
            return line
        line = self.buffer[self.pos :]
        self.buffer, self.pos = b"", 0
        return line + self._source.readline(-1 if limit < 0 else limit - len(line))


_WHITESPACE = b" \t\n\r\x0b\x0c"  # what bytes.strip() strips


def _plain_chunk(
    stream: _Lookahead,
    header: list[str],
    chunk_size: int,
    max_row_bytes: int,
    chunk_bytes: int,
    estimate: int,
) -> tuple[CsvRows, int] | None:
    """The next ``chunk_size`` lines (fewer within ``chunk_bytes``) as a chunk, and the bytes
    taken (0 at the end of the file); None, nothing taken, unless they are plain records."""
    import numpy as np

    window = min(estimate, chunk_bytes)
    while True:
        held = stream.ahead(window)
        if not held:
            return CsvRows(header, []), 0
        size = min(held, window)
        data = np.frombuffer(stream.buffer, np.uint8, size, stream.pos)
        newlines = np.flatnonzero(data == 0x0A)
        if len(newlines) >= chunk_size:
            cut = int(newlines[chunk_size - 1]) + 1
            break
        if size < held and size < chunk_bytes:  # more lines may fit
            window = min(window * 2, chunk_bytes)
            continue
        if stream.eof and size == held:
            cut = size  # the last line may end without a newline
            break
        if not len(newlines):
            return None  # a line longer than a chunk's bytes: the record reader measures it
        cut = int(newlines[-1]) + 1
        break
    start, stop = stream.pos, stream.pos + cut
    buffer = stream.buffer
    if buffer.find(b'"', start, stop) >= 0 or buffer.count(b"\r", start, stop) != buffer.count(
        b"\r\n", start, stop
    ):
        return None
    block = buffer[start:stop]
    stream.take(cut)
    data = data[:cut]
    ends = newlines[newlines < cut]
    if not len(ends) or ends[-1] != cut - 1:
        ends = np.append(ends, cut)  # the file's last line, without a newline
    starts = np.concatenate(([0], ends[:-1] + 1))
    # A blank line (whitespace only) is no row: only a line starting with whitespace may be.
    first = data[np.minimum(starts, cut - 1)]
    # A line over the limit is its row's error, blank or not (as the record reader says).
    over = np.minimum(ends + 1, cut) - starts > max_row_bytes
    maybe_blank = np.flatnonzero(np.isin(first, np.frombuffer(_WHITESPACE, np.uint8)) & ~over)
    blank = [i for i in maybe_blank.tolist() if not block[starts[i] : ends[i]].strip()]
    if blank:
        keep = np.ones(len(starts), dtype=bool)
        keep[blank] = False
        starts, ends, over = starts[keep], ends[keep], over[keep]
    commas = np.flatnonzero(data == 0x2C)
    fields = np.searchsorted(commas, ends) - np.searchsorted(commas, starts) + 1
    errors: dict[int, MlfnError] = {}
    for i in np.flatnonzero(over | (fields != len(header))).tolist():
        if over[i]:
            errors[i] = too_long_row(max_row_bytes)
        else:  # as the row path reads it (not UTF-8 is said first)
            errors[i] = record_row(header, block[starts[i] : ends[i]])
    return CsvRows.plain(header, block, starts, ends, errors, whole=not blank), cut


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
    # An empty cell is a missing value: the field's default applies, or it is reported. The
    # unnamed column (a DataFrame's index) is no key of the row: no field names it, and a
    # model that refuses other keys would refuse every row for it.
    return {h: v for h, v in zip(header, record, strict=True) if v != "" and h}


class CsvRows(LazyRows):
    """A chunk of a CSV file's rows, read as dicts on first use by the row path; the columnar
    path may have Arrow parse them all at once (``columns``). Made of records read one by
    one, or (``plain``) of a block of plain lines and where each row's line is in it."""

    def __init__(self, header: list[str], records: list[bytes | MlfnError]) -> None:
        self.header = header
        self._records: list[bytes | MlfnError] | None = records
        self._block = b""
        self._spans: Any = None  # (starts, ends) of each row's line in ``_block``
        self._errors: dict[int, MlfnError] = {}
        self._whole = False
        super().__init__(len(records))

    @classmethod
    def plain(
        cls,
        header: list[str],
        block: bytes,
        starts: Any,
        ends: Any,
        errors: dict[int, MlfnError],
        whole: bool,
    ) -> CsvRows:
        """Rows of plain lines: row ``i`` is ``block[starts[i]:ends[i]]`` unless it is in
        ``errors``; ``whole``: every line of ``block`` is a row (no blank line)."""
        rows = cls(header, [])
        rows._records = None
        rows._block, rows._spans, rows._errors, rows._n = block, (starts, ends), errors, len(starts)
        rows._whole = whole
        return rows

    def _made(self) -> list[RawRow]:
        return [self._row(i) for i in range(self._n)]

    def rows_at(self, indices: list[int]) -> list[RawRow]:
        return [self._row(i) for i in indices]

    def _row(self, i: int) -> RawRow:
        if self._records is not None:
            raw = self._records[i]
            return raw if isinstance(raw, MlfnError) else record_row(self.header, raw)
        if i in self._errors:
            return self._errors[i]
        starts, ends = self._spans
        return record_row(self.header, self._block[starts[i] : ends[i]])

    def columns(
        self, keys: Collection[str]
    ) -> tuple[dict[str, Any], list[int], dict[int, MlfnError]] | None:
        """The ``keys`` columns of the readable rows as Arrow text (an empty cell null), the
        rows they hold, and each other row's error; None unless every record is plain (no
        quote, no carriage return inside), where Arrow's CSV reader and the csv module split
        alike, and UTF-8: then the row path reads the chunk."""
        wanted = [h for h in self.header if h in keys]
        if not wanted:
            return None
        if self._records is not None:
            found = self._plain_records()
            if found is None:
                return None
            body, readable, errors = found
        else:
            errors = dict(self._errors)
            readable = (
                [i for i in range(self._n) if i not in errors] if errors else list(range(self._n))
            )
            starts, ends = self._spans
            if not errors and self._whole:
                body = self._block  # every line a row: Arrow reads the block as it is
            else:
                body = b"\n".join(self._block[starts[i] : ends[i]] for i in readable) + b"\n"
        if not readable or not (body.isascii() or _is_utf8(body)) or body.startswith(BOM):
            return None  # Arrow would skip a first row's BOM, which the row path reads
        text = _arrow_text(body, self.header, wanted, len(readable))
        return None if text is None else (text, readable, errors)

    def _plain_records(self) -> tuple[bytes, list[int], dict[int, MlfnError]] | None:
        assert self._records is not None
        width = len(self.header)
        errors: dict[int, MlfnError] = {}
        lines: list[bytes] = []
        readable: list[int] = []
        for i, raw in enumerate(self._records):
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
        return b"\n".join(lines) + b"\n", readable, errors


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _arrow_text(body: bytes, header: list[str], wanted: list[str], rows: int) -> Any:
    """The ``wanted`` columns of plain CSV lines as Arrow text, an empty cell null; None when
    Arrow does not read ``rows`` rows of them."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    try:
        table = pcsv.read_csv(
            io.BytesIO(body),
            read_options=pcsv.ReadOptions(column_names=header, use_threads=False),
            parse_options=pcsv.ParseOptions(quote_char=False, newlines_in_values=False),
            convert_options=pcsv.ConvertOptions(
                column_types={h: pa.string() for h in wanted},
                include_columns=wanted,
                strings_can_be_null=True,
                null_values=[""],
            ),
        )
    except (pa.ArrowException, ValueError):
        return None
    if table.num_rows != rows:
        return None
    return {h: table.column(h).combine_chunks() for h in wanted}


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


class _Lines(Protocol):
    def readline(self, limit: int = -1, /) -> bytes: ...


def _csv_records(source: _Lines, limit: int) -> Iterator[tuple[bytes | None, int]]:
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


def _skip_record(source: _Lines, piece: bytes, state: int) -> None:
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

    def prepare(self, start: int, outcomes: Outcomes) -> bytes:
        """The chunk's records (CRLF, RFC 4180's: with "\n" alone the csv module leaves a
        text's bare CR unquoted, and readers take it for the record's end)."""
        if isinstance(outcomes, ColumnOutcomes):  # text made a column at a time
            text = _column_lines(start, outcomes, self._fields)
            if text is not None:
                return text
            # A column of another kind: row by row, a float32's digits still its own.
            outcomes = as_outcomes(_own_digits(outcomes))
        buffer = io.StringIO()
        out = csv.writer(buffer, lineterminator="\r\n")
        for i, (prediction, error) in enumerate(outcomes, start):
            if error is not None:
                out.writerow([i, *([""] * len(self._fields)), error_json(error).decode()])
                continue
            values = json.loads(prediction or b"{}")
            out.writerow([i, *(safe_cell(_cell(values.get(f))) for f in self._fields), ""])
        return buffer.getvalue().encode()

    def write(self, start: int, outcomes: Outcomes, prepared: Any = None) -> int:
        records = prepared if prepared is not None else self.prepare(start, outcomes)
        if not self._header_written:
            buffer = io.StringIO()
            csv.writer(buffer, lineterminator="\r\n").writerow(
                ["row", *map(safe_cell, self._fields), "error"]
            )
            records = buffer.getvalue().encode() + records
            self._header_written = True
        self._sink.write(records)
        return 0

    def close(self) -> None:
        if not self._header_written:
            self.write(0, [])


# A cell a spreadsheet would run (``csv_safety``'s rule), as regular expressions over a column.
_FORMULA = "^[" + "".join("\\" + c if c in "-\\]^" else c for c in FORMULA_STARTS) + "]"
_PLAIN_NUMBER = f"^{NUMBER}$"


def _column_lines(start: int, outcomes: ColumnOutcomes, fields: list[str]) -> bytes | None:
    """The chunk's CSV records, as the csv module writes the row path's cells, made by Arrow
    a column at a time; None when a column has cells only the row path writes."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    outputs = outcomes.outputs
    cells = [_column_cells(outputs[f], quote=True) for f in fields]
    if any(c is None for c in cells):
        return None
    # The error column ends each record: a row's error as a quoted cell, with the CRLF.
    ends: Any = "\r\n"
    if outcomes.errors:
        ends = ["\r\n"] * outcomes.rows
        for i, failed in outcomes.errors.items():
            ends[i] = _quoted(error_json(failed).decode()) + "\r\n"
        ends = pa.array(ends)  # inferred: many times faster than typed
    numbers = pa.array(np.arange(start, start + outcomes.rows, dtype=np.int64)).cast(pa.string())
    quoted = [_csv_quoted(c, outputs[f]) for c, f in zip(cells, fields, strict=True)]
    lines = pc.binary_join_element_wise(numbers, *quoted, ends, ",")
    return b"".join(buffer.to_pybytes() for buffer in _text_bytes(lines))


def _text_bytes(text: Any) -> list[Any]:
    """The bytes of an Arrow text array with no null, its values one after another."""
    import numpy as np

    if not len(text):
        return []
    offsets = np.frombuffer(text.buffers()[1], np.int32, len(text) + 1, 4 * text.offset)
    return [text.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0]))]


def _quoted(cell: str) -> str:
    """``cell`` as the csv module writes it (QUOTE_MINIMAL, CRLF records)."""
    if any(c in cell for c in ',"\r\n'):
        return '"' + cell.replace('"', '""') + '"'
    return cell


def _csv_quoted(text: Any, column: Any) -> Any:
    """``_quoted`` over the cells ``text`` of an output ``column``: a number's text needs no
    quotes, and a list's is quoted already (``_column_cells``, ``quote``)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_map(kind):
        needs = pc.match_substring_regex(text, '[,"\r\n]')
    else:
        return text

    if not pc.any(needs).as_py():
        return text
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(text, '"', '""'), '"', "")
    return pc.if_else(needs, quoted, text)


def _column_cells(column: Any, quote: bool = False) -> Any:
    """An output column's CSV cells as Arrow text, made a column at a time: the text the row
    path writes for each value (a null, and a float that is not finite, empty; a list as
    compact JSON; text made inert as ``safe_cell`` makes it). None for a column of another
    kind, or a list holding a float that is not finite: those are written value by value.

    quote: a list's cell as the csv module writes it, in quotes where it holds a comma (two
    or more numbers; a number's text holds no quote to double), made in the same pass."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if pa.types.is_null(kind):
        return pa.array([""] * len(column)).cast(pa.string())
    if pa.types.is_floating(kind):
        wide = column.cast(_text_float(kind))
        finite = pc.is_finite(wide)
        if finite.null_count or not pc.all(finite).as_py():
            text = pc.if_else(finite, float_text(wide), None)
        else:
            text = float_text(wide)
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
    elif pa.types.is_map(kind):
        return _map_cells(column)
    elif is_list_type(kind):
        if column.offset:  # a slice: its offsets do not start at its values' start
            column = pa.concat_arrays([column])
        items = column.flatten()
        if pa.types.is_floating(items.type):
            if items.null_count or pc.any(pc.invert(pc.is_finite(items))).as_py():
                return None  # null or NaN inside: JSON null, written value by value
            lists = column.cast(pa.list_(_text_float(items.type)))
            parts = pa.ListArray.from_arrays(
                lists.offsets, float_text(lists.values), mask=lists.is_null()
            )
        elif pa.types.is_integer(items.type) and not items.null_count:
            parts = column.cast(pa.list_(pa.string()))
        else:
            return None
        text = _bracketed(column, pc.binary_join(parts, ","), quote)
    else:
        return None
    return pc.fill_null(text, "").cast(pa.string())


def _bracketed(column: Any, inner: Any, quote: bool) -> Any:
    """Each list's joined items in brackets, and with ``quote`` in quotes too where it holds
    two or more (a comma)."""
    import pyarrow.compute as pc

    if not quote:
        return pc.binary_join_element_wise("[", inner, "]", "")
    many = pc.fill_null(pc.greater(pc.list_value_length(column), 1), False)
    if pc.all(many).as_py():  # a fixed length of two or more: every row
        return pc.binary_join_element_wise('"[', inner, ']"', "")
    plain = pc.binary_join_element_wise("[", inner, "]", "")
    if not pc.any(many).as_py():
        return plain
    return pc.if_else(many, pc.binary_join_element_wise('"[', inner, ']"', ""), plain)


def _map_cells(column: Any) -> Any:
    """A map column's cells as the row path writes a dict: compact JSON, keys as ``json``
    writes them (each distinct key once), numbers as Python writes them; None for values of
    another kind, or a float that is not finite (JSON null: written value by value)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if column.offset:  # a slice: its offsets do not start at its values' start
        column = pa.concat_arrays([column])
    keys, values = column.keys, column.items
    if pa.types.is_floating(values.type):
        values = values.cast(_text_float(values.type))
        if values.null_count or not pc.all(pc.is_finite(values)).as_py():
            return None
        text = float_text(values)
    elif pa.types.is_integer(values.type) and not values.null_count:
        text = values.cast(pa.string())
    else:
        return None
    distinct = pc.dictionary_encode(keys)
    written = pa.array([json.dumps(k, ensure_ascii=False) for k in distinct.dictionary.to_pylist()])
    pairs = pc.binary_join_element_wise(pc.take(written, distinct.indices), text, ":")
    entries = pa.ListArray.from_arrays(column.offsets, pairs, mask=column.is_null())
    joined = pc.binary_join_element_wise("{", pc.binary_join(entries, ","), "}", "")
    return pc.fill_null(joined, "").cast(pa.string())


def _own_digits(outcomes: ColumnOutcomes) -> ColumnOutcomes:
    """``outcomes`` with each float32 (alone, in a list, in a map) as the float64 its shortest
    digits read as, so that the row path's ``repr`` writes those digits too (``_text_float``)."""
    return dataclasses.replace(
        outcomes, outputs={n: _shortest(a) for n, a in outcomes.outputs.items()}
    )


def _shortest(column: Any) -> Any:
    """A float32 column (or a list or map column of float32s) as float64s read from its
    shortest digits; any other column as it is."""
    import pyarrow as pa

    kind = column.type
    if kind == pa.float32():
        return column.cast(pa.string()).cast(pa.float64())
    if is_list_type(kind) and kind.value_type == pa.float32():
        lists = pa.concat_arrays([column.cast(pa.list_(pa.float32()))])  # offsets from 0
        return pa.ListArray.from_arrays(
            lists.offsets, _shortest(lists.values), mask=lists.is_null()
        )
    if pa.types.is_map(kind) and kind.item_type == pa.float32():
        maps = pa.concat_arrays([column])
        return pa.MapArray.from_arrays(
            maps.offsets, maps.keys, _shortest(maps.items), mask=maps.is_null()
        )
    return column


def _text_float(kind: Any) -> Any:
    """The float type whose shortest digits a float of type ``kind`` is written with: float32
    keeps its own (the precision the model computed; its float64 widening would add digits
    the model never had), any other float is written as float64."""
    import pyarrow as pa

    return pa.float32() if kind == pa.float32() else pa.float64()


def float_text(values: Any) -> Any:
    """Each float of an Arrow float64 or float32 array as Python's ``repr`` writes the
    shortest digits that read back as that value at its own precision (a null stays null):
    for float64 its ``repr``, for float32 ``repr(float(str(np.float32(x))))``. Arrow writes the
    same shortest digits; only their layout differs, by the decimal exponent e (Arrow: fixed
    from 1e-6 to 1e10, Python from 1e-4 to 1e16), and is mended (a column at a time in Arrow
    where many values need it, each in Python where a few do): an integral value's
    ".0" (Arrow writes "3"), an exponent of one digit (Arrow writes "1e-7", Python "1e-07") and
    1e-6 <= |x| < 1e-4 (Arrow "0.00005", Python "5e-05"). The rest (1e10 to 1e16, and what is
    not finite) is rare in outputs: Arrow's digits, laid out by Python."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    text = values.cast(pa.string())
    numbers = values.to_numpy(zero_copy_only=False)
    with np.errstate(invalid="ignore"):
        # The value's own magnitude gives the exponent of its shortest digits: the digits
        # of a value below 1e-4 read below 1e-4 too (they round to it, not to 1e-4). NumPy
        # compares a float32 array with the bounds as float32, the precision its digits have.
        size = np.abs(numbers)
        whole = np.floor(numbers) == numbers
        integral = whole & (size < 1e10)  # 0 and -0 too
        short_exponent = (size >= 1e-9) & (size < 1e-6)
        fixed_small = (size >= 1e-6) & (size < 1e-4)
        python = ~((size < 1e10) | (size >= 1e16))  # 1e10 to 1e16, NaN, infinities
    python &= ~values.is_null().to_numpy(zero_copy_only=False)  # a null is a null
    mended_rows = integral | short_exponent | fixed_small | python
    count = int(np.count_nonzero(mended_rows))
    if not count:
        return text
    if count <= _SPLICED_AT_MOST:
        # A few (a probability below 1e-4, a whole number): each laid out by Python from
        # Arrow's digits and spliced in between slices of Arrow's text, copied whole; Arrow's
        # mends and a mask's replacement cost passes over every value, for a handful.
        pieces, after = [], 0
        few = np.flatnonzero(mended_rows).tolist()
        written = _python_layout(text.take(pa.array(few, pa.int64())))
        for k, i in enumerate(few):
            pieces += [text.slice(after, i - after), written.slice(k, 1)]
            after = i + 1
        return pa.concat_arrays([*pieces, text.slice(after)])
    # Many: each kind mended on its own rows, then all put in place at once (one pass).
    at: list[Any] = []
    mended: list[Any] = []
    for rows, mend in (
        (integral, _integral),
        (short_exponent, _two_digit_exponent),
        (fixed_small, _exponent_form),
    ):
        if rows.any():
            at.append(np.flatnonzero(rows))
            mended.append(mend(text.filter(pa.array(rows))))
    if python.any():
        at.append(np.flatnonzero(python))
        mended.append(_python_layout(text.filter(pa.array(python))))
    order = np.argsort(np.concatenate(at), kind="stable")
    written = pa.concat_arrays(mended).take(pa.array(order))
    return pc.replace_with_mask(text, pa.array(mended_rows), written)


# float_text splices at most this many mended values into Arrow's text (else: a mask).
_SPLICED_AT_MOST = 64


def _python_layout(text: Any) -> Any:
    """Arrow's shortest digits (of a float64, or a float32's) laid out as Python's ``repr``
    lays them out: the float64 they read as has those same shortest digits."""
    import pyarrow as pa

    return pa.array([repr(float(d)) for d in text.to_pylist()], pa.string())


def _integral(text: Any) -> Any:
    """Arrow's "3" as Python's "3.0"."""
    import pyarrow.compute as pc

    return pc.binary_join_element_wise(text, ".0", "")


def _two_digit_exponent(text: Any) -> Any:
    """Arrow's "6.2e-8" as Python's "6.2e-08" (1e-9 <= |x| < 1e-6)."""
    import pyarrow.compute as pc

    return pc.replace_substring(text, "e-", "e-0")


def _exponent_form(text: Any) -> Any:
    """Arrow's "0.0000512" as Python's "5.12e-05" (1e-6 <= |x| < 1e-4)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    negative = pc.starts_with(text, "-")
    bare = pc.if_else(negative, pc.utf8_slice_codeunits(text, 1), text)  # "0.0000512"
    fraction = pc.utf8_slice_codeunits(bare, 2)  # "0000512": the zeros, then the digits
    digits = pc.utf8_ltrim(fraction, "0")  # "512"
    # The exponent: minus one, less each zero before the first digit.
    zeros = pc.subtract(pc.utf8_length(fraction), pc.utf8_length(digits))
    exponent = pc.if_else(pc.equal(zeros, 4), pa.scalar("e-05"), pa.scalar("e-06"))
    first, rest = pc.utf8_slice_codeunits(digits, 0, 1), pc.utf8_slice_codeunits(digits, 1)
    point = pc.if_else(pc.equal(pc.utf8_length(rest), 0), pa.scalar(""), pa.scalar("."))
    sign = pc.if_else(negative, pa.scalar("-"), pa.scalar(""))
    return pc.binary_join_element_wise(sign, first, point, rest, exponent, "")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return value

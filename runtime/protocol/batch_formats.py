"""Reading rows from a batch file and writing its results, chunk by chunk, in the input's
format: JSON Lines, CSV with a header, or Parquet (``parquet_rows``).

Rows are numbered from 0 in file order (blank JSON Lines and a CSV header are not rows). A row
that cannot be read (not JSON, a CSV record of the wrong width, longer than the row limit) is
an error for that row alone; a file that cannot be read at all raises ``FileUnreadable``.
Nothing holds more than one chunk of rows, or one row of at most ``max_row_bytes`` (Parquet:
see ``parquet_rows`` for what its footer can and cannot tell).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, Protocol, overload

from pydantic import BaseModel
from pydantic_core import from_json

from runtime.errors import BadRequest, FileUnreadable, MlfnError
from runtime.protocol.batch import Format

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
    """Column outcomes as one outcome per row (a prediction as compact JSON, byte for byte as
    the row path's pydantic writes it: the same serializer, so ``1e-9``, not ``1e-09``)."""
    if not isinstance(chunk, ColumnOutcomes):
        return chunk
    from pydantic_core import to_json

    rows = chunk.python()
    return [
        (None, chunk.errors[i]) if i in chunk.errors else (to_json(row), None)
        for i, row in enumerate(rows)
    ]


def is_list_type(kind: Any) -> bool:
    """Whether an Arrow type holds a list a row (of any of Arrow's three list layouts)."""
    import pyarrow as pa

    t = pa.types
    return bool(t.is_list(kind) or t.is_large_list(kind) or t.is_fixed_size_list(kind))


def error_count(chunk: Outcomes) -> int:
    if isinstance(chunk, ColumnOutcomes):
        return len(chunk.errors)
    return sum(1 for _, error in chunk if error is not None)


class LazyRows(Sequence[RawRow]):
    """A chunk of a file's rows kept in the form it was read in (a block of CSV lines, an Arrow
    batch), made a list of rows (dicts, or a row's error) only on first use by the row path."""

    def __init__(self, n: int) -> None:
        self._n = n
        self._rows: list[RawRow] | None = None

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> RawRow: ...
    @overload
    def __getitem__(self, i: slice) -> list[RawRow]: ...
    def __getitem__(self, i: int | slice) -> RawRow | list[RawRow]:
        return self.rows()[i]

    def rows(self) -> list[RawRow]:
        if self._rows is None:
            self._rows = self._made()
        return self._rows

    def _made(self) -> list[RawRow]:
        raise NotImplementedError


class Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...


class RowWriter(Protocol):
    def prepare(self, start: int, outcomes: Outcomes) -> Any:
        """What of writing rows ``start``... needs none of the writer's state (encoding them),
        done on any thread, beside other chunks: ``write`` takes it as ``prepared``."""
        ...

    def write(self, start: int, outcomes: Outcomes, prepared: Any = None) -> int:
        """Write rows ``start``..., in order after the rows before (``prepared``: what
        ``prepare`` made of them, else it is made here); how many of their predictions could
        only be written as errors (a value the format cannot hold)."""
        ...

    def close(self) -> None: ...


def read_rows(
    fmt: Format,
    source: IO[bytes],
    chunk_size: int,
    max_row_bytes: int,
    chunk_bytes: int,
    columns: Collection[str] | None = None,
    seen: Callable[[list[str]], None] | None = None,
) -> Iterator[Sequence[RawRow]]:
    """The file's rows in chunks of at most ``chunk_size`` rows and (but for a single row)
    about ``chunk_bytes`` bytes of input, so wide rows make short chunks. ``columns``: the
    only ones a row needs (``input_columns``), None for all; a columnar format reads no
    other (a text format has to read every byte anyway). ``seen``: told the file's column
    names (a CSV's header, a Parquet file's columns) before any row is read; JSON Lines rows
    name their own keys."""
    if fmt is Format.PARQUET:
        from runtime.protocol import parquet_rows

        yield from parquet_rows.read_chunks(
            source, chunk_size, max_row_bytes, chunk_bytes, columns, seen
        )
        return
    peek = getattr(source, "peek", None)
    if peek is not None and peek(2)[:2] == GZIP_MAGIC:  # every row would be "not UTF-8 text"
        raise FileUnreadable(
            f"the file holds gzip-compressed bytes, not {fmt.value.upper()} text: store it with "
            "Content-Encoding: gzip, and it is inflated as it is read (mlfn batch NAME "
            "FILE.gz does), or upload it uncompressed"
        )
    if fmt is Format.CSV:
        from runtime.protocol.csv_rows import read_chunks

        yield from read_chunks(source, chunk_size, max_row_bytes, chunk_bytes, seen)
        return
    yield from chunked(_jsonl_rows(source, max_row_bytes), chunk_size, chunk_bytes)


GZIP_MAGIC = b"\x1f\x8b"


def chunked(
    rows: Iterator[tuple[Any, int]], chunk_size: int, chunk_bytes: int
) -> Iterator[list[Any]]:
    """Rows (each with the bytes it was read from) in lists of at most ``chunk_size`` rows and
    (but for a single row) about ``chunk_bytes`` bytes; nothing read past a list's last row
    before it is taken."""
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
        from runtime.protocol.csv_rows import CsvWriter

        return CsvWriter(sink, output)
    from runtime.protocol.parquet_rows import ParquetWriter

    return ParquetWriter(sink, output)


def unreadable_row(what: str) -> BadRequest:
    return BadRequest(what, detail=[{"field": "row", "message": what, "type": "unreadable"}])


def too_long_row(max_row_bytes: int) -> BadRequest:
    return unreadable_row(f"row is longer than the limit of {max_row_bytes} bytes")


def input_columns(model: type[BaseModel]) -> frozenset[str] | None:
    """The top-level keys a row of ``model`` can be read from (names, aliases, validation
    aliases), or None when every key counts: a model that keeps or refuses extra keys."""

    if model.model_config.get("extra") in ("allow", "forbid"):
        return None
    return frozenset(key for name, info in model.model_fields.items() for key in _keys(name, info))


def missing_columns(model: type[BaseModel], names: Collection[str]) -> list[str]:
    """The required fields of ``model`` that no column of ``names`` fills (by its name, alias
    or validation alias): a file whose columns are ``names`` fails every row for them. None
    missing for a model whose own validator sees a row first (``mode="before"`` or ``"wrap"``)."""
    fields = model.model_fields
    return [name for name in unfilled_fields(model, names) if fields[name].is_required()]


def unfilled_fields(model: type[BaseModel], names: Collection[str]) -> list[str]:
    """Every field of ``model`` that no column of ``names`` fills, required or not (each row
    then takes an optional field's default); none for a model whose own validator sees a row
    first (it may fill a field from other keys: each row tells)."""
    validators = model.__pydantic_decorators__.model_validators.values()
    if any(v.info.mode in ("before", "wrap") for v in validators):
        return []
    present = set(names)
    return [
        name
        for name, info in model.model_fields.items()
        if not present.intersection(_read_keys(model, name, info))
    ]


def column_names(model: type[BaseModel], fields: list[str]) -> list[str]:
    """Each field's name as a file's column carries it (``annual income`` for the field
    ``annual_income`` aliased so), for messages about a file's columns: the first key
    pydantic reads it by."""
    infos = model.model_fields
    return [_read_keys(model, name, infos[name])[0] for name in fields]


def _read_keys(model: type[BaseModel], name: str, info: Any) -> list[str]:
    """The top-level keys pydantic reads a field of ``model`` from, as its config says (by
    alias, by name, or both), the alias first."""
    config = model.model_config
    by_alias = config.get("validate_by_alias", True)
    by_name = bool(config.get("validate_by_name") or config.get("populate_by_name"))
    aliases = [k for k in _keys(name, info) if k != name] if by_alias else []
    return [*aliases, name] if by_name or not aliases else aliases


def _keys(name: str, info: Any) -> list[str]:
    """The top-level keys a field can be read from: its validation aliases, alias, name."""
    from pydantic import AliasChoices, AliasPath

    keys = []
    aliases = info.validation_alias
    choices = aliases.choices if isinstance(aliases, AliasChoices) else [aliases]
    for choice in choices:
        if isinstance(choice, str):
            keys.append(choice)
        elif isinstance(choice, AliasPath) and isinstance(choice.path[0], str):
            keys.append(choice.path[0])
    if info.alias and aliases is None:  # a validation alias is read instead of the alias
        keys.append(info.alias)
    keys.append(name)
    return list(dict.fromkeys(keys))


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
            # A whole JSON array of rows on one line; a list of values ([1, 2]) is a row,
            # which the model refuses as any row that is not an object.
            if first and isinstance(row, list) and (not row or isinstance(row[0], dict)):
                raise FileUnreadable(JSON_ARRAY)
            yield row, len(line)
        first = False


class _JsonlWriter:
    def __init__(self, sink: Sink) -> None:
        self._sink = sink

    def prepare(self, start: int, outcomes: Outcomes) -> bytes:
        parts = []
        for i, (prediction, error) in enumerate(as_outcomes(outcomes), start):
            if error is None:
                parts.append(b'{"row":%d,"prediction":%s}\n' % (i, prediction))
            else:
                parts.append(b'{"row":%d,"error":%s}\n' % (i, error_json(error)))
        return b"".join(parts)

    def write(self, start: int, outcomes: Outcomes, prepared: Any = None) -> int:
        self._sink.write(prepared if prepared is not None else self.prepare(start, outcomes))
        return 0

    def close(self) -> None:
        pass


def error_json(error: MlfnError) -> bytes:
    return json.dumps(error.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()


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

"""The reference set (training data, say): a Parquet or CSV file whose columns are named like
the endpoint's input fields and, optionally, its prediction fields. Each column becomes its
bins and its counts in them; a Parquet file is read a column at a time."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.drift.stability import Bins, kind_of
from runtime.errors import FileUnreadable

if TYPE_CHECKING:
    import pyarrow as pa

PARQUET = (".parquet", ".pq")
CSV = (".csv",)


@dataclass(frozen=True)
class ReferenceField:
    """A reference column: its bins and counts, or (``bins`` None) why it is not compared."""

    name: str
    type: str
    rows: int
    bins: Bins | None = None
    counts: tuple[int, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class Reference:
    path: Path
    rows: int
    fields: dict[str, ReferenceField]


def read(path: Path) -> Reference:
    """The reference at ``path``; ``FileUnreadable`` naming it when it cannot be read."""
    import pyarrow as pa

    suffix = path.suffix.lower()
    if suffix not in PARQUET + CSV:
        raise FileUnreadable(f"reference {path}: expected a .parquet or .csv file")
    try:
        fields = {name: _field(name, column) for name, column in _columns(path, suffix)}
    except OSError as exc:
        raise FileUnreadable(f"reference {path}: {exc.strerror or exc}") from None
    except (pa.ArrowException, ValueError) as exc:
        raise FileUnreadable(f"reference {path}: not readable as {suffix[1:]}: {exc}") from None
    if not fields:
        raise FileUnreadable(f"reference {path}: has no columns")
    rows = max(f.rows for f in fields.values())
    if rows == 0:
        raise FileUnreadable(f"reference {path}: has no rows")
    return Reference(path, rows, fields)


def _columns(path: Path, suffix: str) -> Iterator[tuple[str, pa.ChunkedArray]]:
    """The file's columns by name, a Parquet file's read one at a time (a wide training set
    is never in memory whole)."""
    if suffix in CSV:
        import pyarrow.csv as pcsv

        table = pcsv.read_csv(path)
        yield from zip(table.column_names, table.columns, strict=True)
        return
    import pyarrow.parquet as pq

    file = pq.ParquetFile(path)
    for name in file.schema_arrow.names:
        yield name, file.read(columns=[name]).column(0)


def _field(name: str, values: pa.ChunkedArray) -> ReferenceField:
    shown = str(values.type)
    if kind_of(values.type) is None:
        return ReferenceField(name, shown, len(values), note=f"a {shown} column: not compared")
    try:
        bins = Bins.of(values)
    except ValueError as exc:
        return ReferenceField(name, shown, len(values), note=str(exc))
    counts = tuple(int(n) for n in bins.count(values))
    return ReferenceField(name, shown, len(values), bins, counts)

"""A window of records against the reference, field by field: each file's columns matched to
the reference's by name (``input_F`` and ``prediction_F`` to ``F``), the rows of the window
that succeeded (status 200) counted in the reference's bins, a file at a time and only the
columns compared, and the PSI of each field. A field on one side only is listed, with why."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runtime.drift.stability import Bins, kind_of, psi

if TYPE_CHECKING:
    import numpy as np

    from runtime.drift.records import RecordFile, Root, Window
    from runtime.drift.reference import Reference

ROLES = ("input", "prediction")  # a record column is ROLE_FIELD
OK = 200
BATCH_ROWS = 64 * 1024


@dataclass(frozen=True)
class FieldDrift:
    """One row of the report. ``role``: input or prediction, empty for a reference column the
    records never had; ``psi`` None when the field is not compared (``note`` says why)."""

    name: str
    role: str
    kind: str
    psi: float | None
    reference_n: int
    recent_n: int
    note: str = ""
    labels: tuple[str, ...] = ()
    reference_counts: tuple[int, ...] = ()
    recent_counts: tuple[int, ...] = ()


@dataclass(frozen=True)
class Drift:
    """The comparison: fields ordered by PSI, highest first (those not compared last), and
    what was read: files, the window's records, those with status 200, files skipped (why)."""

    endpoint: str
    window: Window
    fields: list[FieldDrift]
    files: int
    records: int
    ok: int
    skipped: list[str]

    def above(self, threshold: float) -> list[FieldDrift]:
        return [f for f in self.fields if f.psi is not None and f.psi > threshold]


@dataclass
class _Tally:
    """A record column's counts in its reference field's bins, over the files read."""

    name: str
    role: str
    bins: Bins
    counts: np.ndarray
    files: int = 0  # files it was counted in
    refused: set[str] = field(default_factory=set)  # recorded types the bins cannot count


@dataclass
class _FileCounts:
    """What one file adds: its window's records, those with status 200, the counts of each
    compared column, the columns the bins refused (by type) and every logged field's kind."""

    records: int = 0
    ok: int = 0
    counts: dict[str, np.ndarray] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    logged: dict[tuple[str, str], str] = field(default_factory=dict)


def measure(endpoint: str, reference: Reference, root: Root, window: Window) -> Drift:
    """The drift of ``endpoint``'s records in ``window`` under ``root`` from ``reference``."""
    tallies: dict[str, _Tally] = {}
    logged: dict[tuple[str, str], str] = {}  # (role, field) -> its kind
    read, records, ok, skipped = 0, 0, 0, []
    for file in root.files(endpoint, window):
        with root.open(file) as f:
            found = _count_file(file, f, reference, window)
        if isinstance(found, str):
            skipped.append(found)
            continue
        read, records, ok = read + 1, records + found.records, ok + found.ok
        for key, kind in found.logged.items():
            logged.setdefault(key, kind)
        for column, counts in found.counts.items():
            tally = _tally(tallies, column, reference)
            tally.counts += counts
            tally.files += 1
        for column, type_name in found.refused.items():
            _tally(tallies, column, reference).refused.add(type_name)
    rows = [_compared(t, reference, read) for t in tallies.values()]
    rows += _not_compared(reference, logged)
    rows.sort(key=lambda r: (r.psi is None, -(r.psi or 0.0), r.name, r.role))
    return Drift(endpoint, window, rows, read, records, ok, skipped)


def _count_file(
    file: RecordFile, f: Any, reference: Reference, window: Window
) -> _FileCounts | str:
    """One file's counts; a string saying why when it cannot be read."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(f)
        schema = parquet.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        return f"{file.name}: not a Parquet file ({exc})"
    if not {"time", "status"} <= set(schema.names):
        return f"{file.name}: not a payload log file (no time or status column)"
    found = _FileCounts()
    binned: dict[str, Bins] = {}
    for column in schema.names:
        role, _, name = column.partition("_")
        if role not in ROLES or not name:
            continue
        arrow_type = schema.field(column).type
        found.logged[role, name] = kind_of(arrow_type) or str(arrow_type)
        bins = reference.fields[name].bins if name in reference.fields else None
        if bins is not None and bins.accepts(arrow_type):
            binned[column] = bins
            found.counts[column] = _zeros(bins)
        elif bins is not None:
            found.refused[column] = str(arrow_type)
    since = pa.scalar(window.since, type=pa.timestamp("us", tz="UTC"))
    try:
        for batch in parquet.iter_batches(BATCH_ROWS, columns=["time", "status", *binned]):
            times = pc.cast(batch.column("time"), since.type, safe=False)  # ns: no matter
            in_window = pc.fill_null(pc.greater_equal(times, since), False)
            found.records += pc.sum(in_window).as_py() or 0
            keep = pc.and_(in_window, pc.fill_null(pc.equal(batch.column("status"), OK), False))
            rows = batch.filter(keep)
            found.ok += rows.num_rows
            for column, bins in binned.items():
                found.counts[column] += bins.count(rows.column(column))
    except (pa.ArrowException, OSError) as exc:
        return f"{file.name}: unreadable ({exc})"
    return found


def _tally(tallies: dict[str, _Tally], column: str, reference: Reference) -> _Tally:
    if column not in tallies:
        role, _, name = column.partition("_")
        bins = reference.fields[name].bins
        assert bins is not None  # a column is tallied only in its field's bins
        tallies[column] = _Tally(name, role, bins, _zeros(bins))
    return tallies[column]


def _zeros(bins: Bins) -> np.ndarray:
    import numpy as np

    return np.zeros(len(bins.labels()), dtype=np.int64)


def _compared(tally: _Tally, reference: Reference, files: int) -> FieldDrift:
    import numpy as np

    ref = reference.fields[tally.name]
    n = int(tally.counts.sum())
    notes = []
    if tally.refused:
        types = ", ".join(sorted(tally.refused))
        notes.append(f"recorded as {types}: not comparable with the reference's {ref.type}")
    if 0 < tally.files < files:
        notes.append(f"logged in {tally.files} of {files} files")
    if n == 0:
        notes.append("no recent values")
    value = psi(np.asarray(ref.counts, dtype=np.int64), tally.counts) if n else None
    return FieldDrift(
        tally.name,
        tally.role,
        tally.bins.kind,
        value,
        ref.rows,
        n,
        "; ".join(notes),
        tuple(tally.bins.labels()),
        ref.counts,
        tuple(int(c) for c in tally.counts),
    )


def _not_compared(reference: Reference, logged: dict[tuple[str, str], str]) -> list[FieldDrift]:
    """The fields on one side only, and those of a type that is not compared."""
    rows = []
    in_records = {name for _, name in logged}
    for name, ref in reference.fields.items():
        if name not in in_records:
            kind = ref.bins.kind if ref.bins is not None else ref.type
            note = "not in the records (not logged, or not a field of the endpoint)"
            rows.append(FieldDrift(name, "", kind, None, ref.rows, 0, note))
        elif ref.bins is None:
            rows += [
                FieldDrift(name, role, ref.type, None, ref.rows, 0, ref.note)
                for role in ROLES
                if (role, name) in logged
            ]
    for (role, name), kind in logged.items():
        if name not in reference.fields:
            rows.append(FieldDrift(name, role, kind, None, 0, 0, "not in the reference"))
    return rows

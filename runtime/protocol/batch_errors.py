"""The failed rows of a batch results file, read back and counted by message: what
``mlfn batch`` tells a person instead of leaving them to search the file."""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.errors import FileUnreadable
from runtime.protocol.batch import Format
from runtime.protocol.csv_rows import allow_csv_fields

# A file whose every row fails differently must not grow the counter without bound.
MAX_DISTINCT = 1000


@dataclass(frozen=True)
class ErrorTally:
    """The most frequent error messages of a results file, with their row counts."""

    top: list[tuple[str, int]]
    total: int  # failed rows seen

    @property
    def others(self) -> int:
        """Failed rows whose message is not among ``top``."""
        return self.total - sum(n for _, n in self.top)


def tally(path: Path, fmt: Format, most: int = 3) -> ErrorTally:
    """Count the failed rows of results file ``path`` by message; keep the ``most`` frequent
    (the first seen first among equals)."""
    counts: Counter[str] = Counter()
    total = 0
    for error in _errors(path, fmt):
        total += 1
        message = describe(error)
        if message in counts or len(counts) < MAX_DISTINCT:
            counts[message] += 1
    return ErrorTally(counts.most_common(most), total)


def describe(error: Any) -> str:
    """A row's error as one line: its message, and the first field's reason when it has one
    (a validation message names the fields, not what is wrong with them)."""
    if not isinstance(error, dict):
        return str(error)
    message = str(error.get("message") or error.get("type") or error)
    detail = error.get("detail")
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        reason = detail[0].get("message")
        if reason and str(reason) not in message:
            message = f"{message} ({reason})"
    return " ".join(message.split())


def _errors(path: Path, fmt: Format) -> Iterator[Any]:
    """Each failed row's error object, in row order, reading the file as a stream."""
    if fmt is Format.JSONL:
        with path.open("rb") as f:
            for line in f:
                if b'"error"' in line:  # prediction lines skip the JSON parse
                    doc = _loads(line)
                    if isinstance(doc, dict) and "error" in doc:
                        yield doc["error"]
    elif fmt is Format.CSV:
        # A cell holds what a prediction's field does (an embedding as JSON, say): no longer
        # than the file, whatever the csv module's own limit.
        allow_csv_fields(path.stat().st_size)
        with path.open(newline="", encoding="utf-8", errors="replace") as f:
            rows = csv.reader(f)
            try:
                next(rows, None)  # the header; the error column is the last
                for row in rows:
                    if row and row[-1]:
                        yield _loads(row[-1])
            except csv.Error as exc:
                raise _unreadable(path, "CSV", f"line {rows.line_num}: {exc}") from None
    else:
        from runtime.protocol.parquet_rows import pyarrow

        pa = pyarrow()
        try:
            parquet = pa.parquet.ParquetFile(path)
            for piece in parquet.iter_batches(columns=["error"]):
                for text in piece.column(0).to_pylist():
                    if text:
                        yield _loads(text)
        except (pa.ArrowException, KeyError) as exc:  # KeyError: no error column
            raise _unreadable(path, "Parquet", str(exc)) from None


def _unreadable(path: Path, fmt: str, why: str) -> FileUnreadable:
    return FileUnreadable(
        f"{path} cannot be read as {fmt} results ({' '.join(why.split())}); its failed rows "
        "are not counted"
    )


def _loads(text: str | bytes) -> Any:
    """An error as written, or its text if it is not JSON (a file edited since, say)."""
    try:
        return json.loads(text)
    except ValueError:
        return text.decode(errors="replace") if isinstance(text, bytes) else text

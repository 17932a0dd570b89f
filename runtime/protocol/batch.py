"""The batch-file contract: containers, formats, where a file's results go, and the summary.

A file dropped into ``NAME-batch`` (any path) is scored row by row; its results go to
``NAME-batch-results`` under the input's path with the input's ETag in the name, so one blob
version has exactly one output (a redelivered event rewrites it; an overwritten input, with a
new ETag, gets its own):

    NAME-batch/2026/11/export.csv  (ETag "0x8DD...")
    NAME-batch-results/2026/11/export.0x8DD....csv
    NAME-batch-results/2026/11/export.0x8DD....csv.summary.json
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from runtime.errors import UnknownFormat

MAX_BLOB_NAME = 1024  # characters, Azure Storage's limit
MAX_SEGMENTS = 254  # '/'-separated parts of a blob name, Azure Storage's limit
BATCH_SUFFIX = "-batch"
RESULTS_SUFFIX = "-batch-results"
SUMMARY_SUFFIX = ".summary.json"


class Format(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"
    PARQUET = "parquet"


_EXTENSIONS = {
    ".jsonl": Format.JSONL,
    ".ndjson": Format.JSONL,
    ".json": Format.JSONL,
    ".csv": Format.CSV,
    ".parquet": Format.PARQUET,
    ".pq": Format.PARQUET,
}
CONTENT_TYPES = {
    Format.JSONL: "application/x-ndjson",
    Format.CSV: "text/csv; charset=utf-8",
    Format.PARQUET: "application/vnd.apache.parquet",
}


def batch_container(name: str) -> str:
    return name.replace("_", "-") + BATCH_SUFFIX


def results_container(name: str) -> str:
    return name.replace("_", "-") + RESULTS_SUFFIX


def batch_function_name(name: str) -> str:
    return f"{name}_batch"


def format_of(path: str) -> Format:
    """A file's format, by its extension."""
    suffix = posixpath.splitext(path)[1].lower()
    try:
        return _EXTENSIONS[suffix]
    except KeyError:
        known = ", ".join(sorted(_EXTENSIONS))
        raise UnknownFormat(
            f"{path!r}: cannot tell the file's format from its extension {suffix or '(none)'!r};"
            f" use one of {known}"
        ) from None


def bare_etag(etag: str) -> str:
    """An ETag without the quotes HTTP gives it (a blob listing gives it bare already)."""
    return etag.strip('"')


def version_tag(etag: str) -> str:
    """An ETag as a name part: the quotes gone, nothing but letters, digits, '-' and '_'."""
    return "".join(c for c in bare_etag(etag) if c.isalnum() or c in "-_") or "unversioned"


def result_path(path: str, etag: str) -> str:
    """Where the results of one version of ``path`` go (in the results container). A path
    too long to take the version and ``.summary.json`` within Azure's 1,024 characters gives
    way to its digest (``.sha256/<hex>.<version>.csv``), as the host's receipts do (so does
    one of more than 254 segments): the storage would refuse the name, every time."""
    stem, suffix = posixpath.splitext(path)
    named = f"{stem}.{version_tag(etag)}{suffix}"
    if fits(named + SUMMARY_SUFFIX):
        return named
    kept = suffix if len(suffix) <= 16 else ""
    return f"{hashed_name(path)}.{version_tag(etag)[:64]}{kept}"


def fits(name: str) -> bool:
    """Whether Azure Storage takes ``name`` as a blob's (Azurite does not check): at most
    1,024 characters and 254 '/'-separated parts."""
    return len(name) <= MAX_BLOB_NAME and name.count("/") < MAX_SEGMENTS


def hashed_name(name: str) -> str:
    """What stands in for a blob name too long to be part of another: ``.sha256/<hex>``."""
    return f".sha256/{hashlib.sha256(name.encode()).hexdigest()}"


def summary_path(path: str, etag: str) -> str:
    """The results' summary: the results' own name and ``.summary.json``."""
    return result_path(path, etag) + SUMMARY_SUFFIX


@dataclass
class Summary:
    """What scoring one file did; written next to its results as JSON."""

    input: str
    etag: str
    output: str | None
    format: str
    rows: int = 0
    errors: int = 0
    seconds: float = 0.0
    model: dict[str, str] | None = None
    error: dict[str, Any] | None = None  # the file could not be scored at all
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        doc = {
            "input": self.input,
            "etag": self.etag,
            "output": self.output,
            "format": self.format,
            "rows": self.rows,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "model": self.model,
            "error": self.error,
            **self.extra,
        }
        return json.dumps(doc, indent=2).encode() + b"\n"

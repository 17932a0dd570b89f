"""Finding the payload log's record files of a time window, in a local folder or under
``az://CONTAINER/PREFIX`` in the app's storage account, and opening them one at a time.

The layout is ``ROOT/ENDPOINT/date=YYYY-MM-DD/hour=HH/*.parquet`` (docs/payload-log.md). A
window is pruned by those folder names: a file of an hour outside it is never listed, let
alone read; the rows of the files listed are then filtered by their ``time``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from runtime.config import Connection, Settings

HOUR = timedelta(hours=1)
SUFFIX = ".parquet"
BLOB_SCHEME = "az://"
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DATE = re.compile(r"date=(\d{4})-(\d{2})-(\d{2})")
_HOUR = re.compile(r"hour=(\d{2})")


def duration(text: str) -> timedelta:
    """``30m``, ``24h``, ``7d`` (or ``90s``) as a timedelta; ValueError for anything else."""
    found = _DURATION.fullmatch(text)
    if found is None or float(found[1]) <= 0:
        raise ValueError(f"{text!r} is not a duration: a number and s, m, h or d (30m, 24h, 7d)")
    return timedelta(seconds=float(found[1]) * _UNITS[found[2].lower()])


@dataclass(frozen=True)
class Window:
    """The records' time window: from ``since`` to ``until`` (now), both aware, in UTC."""

    since: datetime
    until: datetime

    @classmethod
    def last(cls, span: timedelta, now: datetime | None = None) -> Window:
        until = now or datetime.now(UTC)
        return cls(until - span, until)

    def dates(self) -> list[date]:
        """The days the window touches, oldest first."""
        first, last = self.since.date(), self.until.date()
        return [first + timedelta(days=d) for d in range((last - first).days + 1)]

    def holds(self, day_folder: str, hour_folder: str) -> bool:
        """Whether partition ``date=.../hour=...`` has an hour in the window (a folder not
        named so is not a partition: False)."""
        day, hour = _DATE.fullmatch(day_folder), _HOUR.fullmatch(hour_folder)
        if day is None or hour is None:
            return False
        try:
            start = datetime(int(day[1]), int(day[2]), int(day[3]), int(hour[1]), tzinfo=UTC)
        except ValueError:  # date=2024-02-30, hour=24
            return False
        return start + HOUR > self.since and start <= self.until


@dataclass(frozen=True)
class RecordFile:
    """One record file: ``path`` is what its root opens, ``name`` what messages call it (a
    path, or an ``az://`` URI)."""

    path: str
    name: str
    size: int = 0
    etag: str = ""
    content_encoding: str | None = None


def root_of(uri: str, settings: Settings) -> Root:
    """The root ``uri`` names: ``az://CONTAINER[/PREFIX]`` in the app's storage account
    (``AzureWebJobsStorage``), else a local folder."""
    if not uri.startswith(BLOB_SCHEME):
        return LocalRoot(Path(uri))
    from runtime.config import STORAGE_SETTING
    from runtime.errors import ConfigError
    from runtime.storage import clients

    container, _, prefix = uri[len(BLOB_SCHEME) :].partition("/")
    if not container:
        raise ConfigError("--logs", uri, "az://CONTAINER or az://CONTAINER/PREFIX")
    conn = clients.require(settings.storage_connection, STORAGE_SETTING)
    return BlobRoot(conn, container, prefix.strip("/"), settings)


class LocalRoot:
    """Record files in a local folder."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __str__(self) -> str:
        return str(self.path)

    def files(self, endpoint: str, window: Window) -> list[RecordFile]:
        if not self.path.is_dir():
            raise FileNotFoundError(2, "no such folder", str(self.path))
        base = self.path / endpoint
        found = []
        for day in sorted(base.glob("date=*")):
            for hour in sorted(day.glob("hour=*")):
                if window.holds(day.name, hour.name):
                    found += [RecordFile(str(f), str(f)) for f in sorted(hour.glob(f"*{SUFFIX}"))]
        return found

    @contextmanager
    def open(self, file: RecordFile) -> Iterator[IO[bytes]]:
        with open(file.path, "rb") as f:
            yield f

    def close(self) -> None:
        """Nothing to close: for symmetry with ``BlobRoot``."""


class BlobRoot:
    """Record files under a prefix of a container of the app's storage account."""

    def __init__(self, conn: Connection, container: str, prefix: str, settings: Settings) -> None:
        from runtime.storage import clients

        self.container_name = container
        self.prefix = f"{prefix}/" if prefix else ""
        self._container = clients.container(conn, container, settings)

    def __str__(self) -> str:
        return f"{BLOB_SCHEME}{self.container_name}/{self.prefix}".rstrip("/")

    def files(self, endpoint: str, window: Window) -> list[RecordFile]:
        from runtime.storage import clients

        base = f"{self.prefix}{endpoint}/"
        found = []
        with clients.storage_errors(f"container {self.container_name}"):
            for day in window.dates():  # one listing a day, not of the whole log
                for blob in self._container.list_blobs(name_starts_with=f"{base}date={day}/"):
                    parts = blob.name[len(base) :].split("/")
                    if (
                        len(parts) == 3
                        and parts[2].endswith(SUFFIX)
                        and window.holds(parts[0], parts[1])
                    ):
                        settings = blob.content_settings
                        found.append(
                            RecordFile(
                                blob.name,
                                f"{BLOB_SCHEME}{self.container_name}/{blob.name}",
                                int(blob.size),
                                str(blob.etag),
                                settings.content_encoding if settings else None,
                            )
                        )
        return found

    @contextmanager
    def open(self, file: RecordFile) -> Iterator[IO[bytes]]:
        """The blob read by ranges (Parquet reads its footer, then only the columns asked)."""
        from runtime.storage import blob_files, clients

        with clients.storage_errors(file.name), blob_files.version_errors():
            blob = self._container.get_blob_client(file.path)
            yield blob_files.open_version(
                blob, file.size, file.etag, file.content_encoding, seekable=True
            )

    def close(self) -> None:
        self._container.close()


Root = LocalRoot | BlobRoot

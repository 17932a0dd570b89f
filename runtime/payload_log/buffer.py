"""The payload log's buffer: records wait in memory, bounded in rows and bytes, and a thread of
their own writes them as Parquet files, one per endpoint and hour per flush; by size, by age,
and when the process ends. A request only appends (under a lock held for the append): when
the buffer is full, the record is dropped and counted, and the request never waits.

A file that cannot be written (the destination unreachable) is kept and tried again, and
counts against the bound meanwhile, so an outage fills the buffer and then drops, rather than
growing without limit.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from types import FrameType

from runtime import telemetry
from runtime.errors import MlfnError
from runtime.payload_log.columns import Layout, parquet_bytes
from runtime.payload_log.destinations import Destination
from runtime.payload_log.records import Entry

log = logging.getLogger("mlfn.payload_log")

TELL_EVERY_S = 60.0  # a line about dropped records at most this often
RETRY_S = 5.0  # a failed write is tried again after this long (or at the next flush by size)
# A file still unwritten after this many tries (a minute at RETRY_S) is dropped and counted,
# so one file the destination refuses for good cannot hold up every file behind it.
MAX_TRIES = 12
CLOSE_TIMEOUT_S = 20.0


@dataclass
class _File:
    endpoint: str
    path: str
    data: bytes
    rows: int
    size: int
    tries: int = 0


class PayloadLog:
    """The app's payload log: one buffer for every endpoint that logs.

    flush_s: a record waits at most this long before it is written.
    flush_rows: a flush starts as soon as this many rows wait.
    max_rows, max_bytes: the buffer's bound, written and unwritten together.
    """

    def __init__(
        self,
        destination: Destination,
        layouts: Mapping[str, Layout],
        *,
        flush_s: float,
        flush_rows: int,
        max_rows: int,
        max_bytes: int,
        on_exit: bool = True,
    ) -> None:
        self.destination = destination
        self._layouts = layouts
        self._flush_s = max(flush_s, 0.1)
        self._flush_rows = flush_rows
        self._max_rows = max_rows
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # one flush at a time: the thread's, or close's
        self._wake = threading.Event()
        self._pending: list[tuple[str, Entry]] = []
        self._waiting_rows = 0  # in _pending
        self._rows = 0  # held in memory: pending, being written, or kept after a failed write
        self._bytes = 0
        self._kept: list[_File] = []
        self._dropped: dict[str, int] = {}  # by endpoint, not yet counted in telemetry
        self.written = 0
        self.dropped = 0
        self.offered = 0
        self._told_dropped_at = -TELL_EVERY_S
        self._failing: str | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        self._process = uuid.uuid4().hex[:12]  # no two processes name a file alike
        self._sequence = itertools.count()
        self._on_exit = on_exit

    def offer(self, endpoint: str, entry: Entry) -> None:
        """Keep ``entry`` for the next flush, or drop and count it when the buffer is full."""
        rows, size = entry.rows, entry.size
        with self._lock:
            self.offered += rows
            if (
                self._closed
                or self._rows + rows > self._max_rows
                or self._bytes + size > self._max_bytes
            ):
                self.dropped += rows
                self._dropped[endpoint] = self._dropped.get(endpoint, 0) + rows
                now = time.monotonic()
                tell = now - self._told_dropped_at >= TELL_EVERY_S
                if tell:
                    self._told_dropped_at = now
                wake = False
            else:
                tell = False
                self._pending.append((endpoint, entry))
                self._waiting_rows += rows
                self._rows += rows
                self._bytes += size
                wake = self._waiting_rows >= self._flush_rows
                if self._thread is None:
                    self._start()
        if wake:
            self._wake.set()
        if tell:
            log.warning(
                "payload log: records dropped (%d so far): the buffer is full, %d rows "
                "waiting for %s%s",
                self.dropped,
                self._rows,
                self.destination,
                f" ({self._failing})" if self._failing else "",
            )

    def flush(self) -> bool:
        """Write what waits, and what an earlier flush could not: True when nothing is left."""
        with self._flushing:
            with self._lock:
                taken, self._pending, self._waiting_rows = self._pending, [], 0
                dropped, self._dropped = self._dropped, {}
            tel = telemetry.current()
            for endpoint, count in dropped.items():
                tel.payload_logged(endpoint, 0, count)
            self._kept += self._files(taken)
            while self._kept:
                file = self._kept[0]
                try:
                    self.destination.write(file.path, file.data)
                except (MlfnError, OSError) as exc:
                    file.tries += 1
                    self._failed(exc)
                    if file.tries < MAX_TRIES:
                        return False
                    self._kept.pop(0)
                    self._lose(file.endpoint, file.rows, file.size)
                    log.warning("payload log: %s dropped after %d tries (%d records)",
                                file.path, file.tries, file.rows)  # fmt: skip
                    continue
                self._kept.pop(0)
                with self._lock:
                    self._rows -= file.rows
                    self._bytes -= file.size
                    self.written += file.rows
                tel.payload_logged(file.endpoint, file.rows, 0)
            if self._failing is not None:
                log.info("payload log: %s can be written again", self.destination)
                self._failing = None
            return True

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Write what waits (at the process's end): later records are dropped and counted."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake.set()
        deadline = time.monotonic() + timeout
        done = False
        while not done and time.monotonic() < deadline:
            done = self.flush()
            if not done:
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        unwritten = sum(f.rows for f in self._kept)
        log.info(
            "payload log: %d records written to %s, %d dropped%s",
            self.written,
            self.destination,
            self.dropped,
            f", {unwritten} not written ({self._failing})" if unwritten else "",
        )

    def _files(self, taken: list[tuple[str, Entry]]) -> list[_File]:
        """The files of one flush: one per endpoint and hour."""
        groups: dict[tuple[str, str], list[Entry]] = {}
        for endpoint, entry in taken:
            hour = time.strftime("date=%Y-%m-%d/hour=%H", time.gmtime(entry.time))
            groups.setdefault((endpoint, hour), []).append(entry)
        files = []
        for (endpoint, hour), entries in groups.items():
            rows = sum(e.rows for e in entries)
            size = sum(e.size for e in entries)
            try:
                data = parquet_bytes(self._layouts[endpoint].table(entries))
            except Exception:  # a bug of ours: said, counted, and the thread goes on
                log.exception("payload log: %d records of %s could not be made a file", rows,
                              endpoint)  # fmt: skip
                self._lose(endpoint, rows, size)
                continue
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(entries[0].time))
            name = f"{stamp}-{self._process}-{next(self._sequence):06d}.parquet"
            files.append(_File(endpoint, f"{endpoint}/{hour}/{name}", data, rows, size))
        return files

    def _lose(self, endpoint: str, rows: int, size: int) -> None:
        """Records held that will never be written: no longer held, counted as dropped."""
        with self._lock:
            self._rows -= rows
            self._bytes -= size
            self.dropped += rows
        telemetry.current().payload_logged(endpoint, 0, rows)

    def _failed(self, exc: BaseException) -> None:
        reason = exc.message if isinstance(exc, MlfnError) else str(exc)
        if reason != self._failing:
            log.warning(
                "payload log: %s cannot be written (%s); %d rows kept and tried again",
                self.destination,
                reason,
                sum(f.rows for f in self._kept),
            )
        self._failing = reason

    def _start(self) -> None:
        """The flush thread, on the first record; the end of the process flushes too."""
        self._thread = threading.Thread(target=self._run, name="mlfn-payload-log", daemon=True)
        self._thread.start()
        if self._on_exit:
            atexit.register(self.close)
            self._catch_sigterm()

    def _run(self) -> None:
        while not self._closed:
            wait = RETRY_S if self._kept else self._flush_s
            self._wake.wait(wait)
            self._wake.clear()
            if self._closed:
                return
            try:
                self.flush()
            except Exception:  # never the end of the thread: records would pile up unwritten
                log.exception("payload log: a flush failed")

    def _catch_sigterm(self) -> None:
        """On SIGTERM (a scale-in, a restart), write what waits, then end as SIGTERM would.
        Only where nothing else handles SIGTERM: a host that does (uvicorn, for mlfn serve)
        ends the process its own way, and the exit flushes."""
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            # The handler runs between two bytecodes of the main thread, which may hold the
            # buffer's lock: it takes none, and leaves the writing to a thread of its own.
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            threading.Thread(target=end, name="mlfn-payload-log-end", daemon=True).start()

        def end() -> None:
            try:
                self.close()
            finally:
                os.kill(os.getpid(), signal.SIGTERM)  # as SIGTERM would have, now

        signal.signal(signal.SIGTERM, on_sigterm)

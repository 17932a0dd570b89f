"""The lines the local host writes about each invocation, as ``func start`` writes them, so an
operator reads the same story locally and on Azure:

    Executing 'Functions.iris_predict' (Reason='...', Id=8f0c...)       (at DEBUG)
    Executed 'Functions.iris_predict' (Succeeded, Id=8f0c..., Duration=12ms)

Each record also carries ``function``, ``invocation_id`` and ``duration_ms`` as attributes, which
the JSON log format (``MLFN_LOG_FORMAT=json``) writes as fields.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from runtime.host.invoke import new_invocation_id

log = logging.getLogger("mlfn.host.functions")


class InvocationLog:
    """One invocation's start and end lines."""

    def __init__(self, function: str, reason: str, invocation_id: str | None = None) -> None:
        self.function = function
        self.id = invocation_id or new_invocation_id()
        # Why it failed, when its caller decides that after the call (an HTTP answer that
        # could not be sent): the failure, and the exception if one was raised.
        self.why = ""
        self.error: BaseException | None = None
        self._started = time.perf_counter()
        # At DEBUG: the Executed line says all of it again, and a line per request costs
        # several percent of the host's throughput (bench/RESULTS.md, host profile).
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "Executing 'Functions.%s' (Reason='%s', Id=%s)",
                function,
                reason,
                self.id,
                extra=self._fields(),
            )

    def _fields(self, **more: Any) -> dict[str, Any]:
        return {"function": self.function, "invocation_id": self.id, **more}

    @property
    def duration_ms(self) -> int:
        return round((time.perf_counter() - self._started) * 1000)

    def succeeded(self, detail: str = "") -> None:
        ms = self.duration_ms
        log.info(
            "Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%dms)%s",
            self.function,
            self.id,
            ms,
            f" {detail}" if detail else "",
            extra=self._fields(duration_ms=ms, outcome="Succeeded"),
        )

    def failed(self, why: BaseException | str, traceback: bool = False) -> None:
        ms = self.duration_ms
        error = self.error if self.error is not None else why
        log.error(
            "Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms): %s",
            self.function,
            self.id,
            ms,
            why,
            exc_info=error if traceback and isinstance(error, BaseException) else None,
            extra=self._fields(duration_ms=ms, outcome="Failed"),
        )


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and the invocation's fields when
    the line is about one (for log shippers that index fields, not text)."""

    FIELDS = ("function", "invocation_id", "duration_ms", "outcome")

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in self.FIELDS:
            if hasattr(record, name):
                doc[name] = getattr(record, name)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:  # set already when redaction rewrote the traceback
            doc["exception"] = record.exc_text
        return json.dumps(doc, default=str)

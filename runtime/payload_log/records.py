"""An endpoint's payload log as the request paths see it: whether a request is sampled, and its
record handed to the buffer in one append. Nothing here converts or writes: the instances and
predictions are kept as they are (validated models, encoded JSON, tensors) and made into
columns by the flush thread (``columns.py``)."""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from runtime import telemetry
from runtime.errors import MlfnError

if TYPE_CHECKING:
    from runtime.payload_log.buffer import PayloadLog
    from runtime.scored import ModelInfo

HTTP, V2, QUEUE, FILE = "http", "v2", "queue", "file"
_SPAN = float(1 << 64)
MAX_ID = 128  # characters of a caller's request id kept: it is the caller's text
ROW_BYTES = 256  # what an instance held as Python objects costs, roughly, beside its text


def bounded_id(request_id: str | None) -> str | None:
    """A caller's request id as the log keeps it (and samples by): at most MAX_ID characters."""
    return request_id[:MAX_ID] if request_id is not None else None


class Entry(NamedTuple):
    """One request's record, as the buffer holds it until a flush: made on the request path,
    so a tuple of what was at hand."""

    time: float  # seconds since the epoch, when it was answered
    source: str
    model: ModelInfo | None
    invocation_id: str | None
    trace_id: str | None
    request_id: str | None
    status: int
    latency_ms: float
    error: str | None
    inputs: Sequence[Any] | Mapping[str, Any] | None  # instances, or tensors by name
    predictions: Sequence[bytes] | Mapping[str, Any] | None  # encoded JSON, or tensors
    rows: int
    size: int  # bytes, roughly: what the entry keeps alive
    offset: int = 0  # the first row's number in its request (a file's row)


class EndpointLog:
    """One endpoint's sampling and records. ``sample`` applies to requests (HTTP, V2, queue
    messages), each logged with all its instances; ``bulk_sample`` to batch-file rows."""

    __slots__ = ("_buffer", "_cut", "bulk_sample", "name", "sample")

    def __init__(self, name: str, sample: float, bulk_sample: float, buffer: PayloadLog) -> None:
        self.name = name
        self.sample = sample
        self.bulk_sample = bulk_sample
        self._cut = sample * _SPAN
        self._buffer = buffer

    def sampled(self, key: str | None = None) -> bool:
        """Whether a request is logged: by its id when it has one (so a retried request is
        logged, or not, again), else at random."""
        if self.sample >= 1.0:
            return True
        if self.sample <= 0.0:
            return False
        if key:
            digest = hashlib.blake2b(key[:MAX_ID].encode(), digest_size=8).digest()
            return int.from_bytes(digest, "big") < self._cut
        return random.random() < self.sample

    def bulk_rows(self, n: int) -> list[int]:
        """Which of ``n`` batch-file rows are logged."""
        rate = self.bulk_sample
        if rate <= 0.0:
            return []
        if rate >= 1.0:
            return list(range(n))
        return [i for i in range(n) if random.random() < rate]

    def scored(
        self,
        source: str,
        started: float,
        inputs: Sequence[Any] | Mapping[str, Any],
        predictions: Sequence[bytes] | Mapping[str, Any],
        model: ModelInfo | None,
        rows: int,
        size: int,
        request_id: str | None = None,
    ) -> None:
        """A request answered: its instances (or tensors) and predictions, ``started`` by
        ``time.perf_counter()``."""
        self._add(source, started, 200, None, inputs, predictions, model, rows, size, request_id)

    def file_row(
        self,
        path: str,
        row: int,
        raw: Any,
        prediction: bytes | None,
        error: BaseException | None,
        model: ModelInfo | None,
    ) -> None:
        """Row ``row`` of batch file ``path``: its raw values (None when unreadable) and its
        prediction, or its error."""
        status = 200 if error is None else error.status if isinstance(error, MlfnError) else 500
        size = ROW_BYTES + (len(prediction) if prediction else 0)
        if isinstance(raw, dict):
            size += sum(len(v) for v in raw.values() if isinstance(v, str | bytes))
        entry = Entry(
            time.time(),
            FILE,
            model,
            None,
            None,
            path,
            status,
            0.0,
            None if error is None else type(error).__name__,
            None if raw is None else [raw],
            None if prediction is None else [prediction],
            1,
            size,
            row,
        )
        self._buffer.offer(self.name, entry)

    def failed(
        self,
        source: str,
        started: float,
        error: BaseException,
        request_id: str | None = None,
        inputs: Sequence[Any] | Mapping[str, Any] | None = None,
        rows: int = 1,
    ) -> None:
        """A request that failed: one record per instance when they were read, else one, with
        the error's type and status (500 for what is not an ``MlfnError``: a bug)."""
        status = error.status if isinstance(error, MlfnError) else 500
        name = type(error).__name__
        self._add(source, started, status, name, inputs, None, None, rows, 0, request_id)

    def _add(
        self,
        source: str,
        started: float,
        status: int,
        error: str | None,
        inputs: Sequence[Any] | Mapping[str, Any] | None,
        predictions: Sequence[bytes] | Mapping[str, Any] | None,
        model: ModelInfo | None,
        rows: int,
        size: int,
        request_id: str | None,
    ) -> None:
        latency_ms = (time.perf_counter() - started) * 1000.0
        invocation = telemetry.current_invocation()
        invocation_id = trace_id = None
        if invocation is not None:
            invocation_id, trace_id = invocation.id, invocation.trace_id()
        entry = Entry(
            time.time(),
            source,
            model,
            invocation_id,
            trace_id,
            bounded_id(request_id),
            status,
            latency_ms,
            error,
            inputs,
            predictions,
            max(rows, 1),
            size,
        )
        self._buffer.offer(self.name, entry)

"""The jobs service: where a queue message becomes a result. Parse, fetch a claim-checked
payload, score through the predict service (micro-batched with HTTP requests), answer.

Transport-neutral: the queue trigger hands in the message body and sends the returned text to
the results queue. A message that can never succeed gets an error result; a transient failure
raises, so the host retries it and finally moves it to the poison queue.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runtime.errors import MlfnError
from runtime.payload_log.records import QUEUE, ROW_BYTES, EndpointLog
from runtime.protocol import jobs
from runtime.services.predict import PredictService
from runtime.storage.payloads import Payloads

if TYPE_CHECKING:
    from runtime.services.columns import ColumnService


@dataclass(frozen=True)
class JobResult:
    """The result message for one request message, and the error it reports, if any."""

    text: str
    error: MlfnError | None = None


@dataclass
class _Record:
    """A sampled message's record, begun as it arrived: by the message's job id, else the
    queue's id for it."""

    log: EndpointLog
    request_id: str | None
    size: int
    started: float = field(default_factory=time.perf_counter)


# From this many instances a message is scored as columns where the endpoint has a columnar
# predict; fewer share model calls with HTTP requests through the batcher.
COLUMNS_FROM = 256


class JobService:
    def __init__(
        self,
        predict: PredictService,
        payloads: Payloads,
        columns: Callable[[], ColumnService] | None = None,
        logs: Mapping[str, EndpointLog] | None = None,
    ) -> None:
        self._predict = predict
        self._payloads = payloads
        self._columns = columns  # built on first use: numpy and pyarrow
        self._logs = logs or {}

    async def process(self, name: str, body: bytes, message_id: str | None = None) -> JobResult:
        """The result message (JSON text) for one request message. Raises only for transient
        failures (``err.retryable``) and bugs, which the host retries. Error results carry the
        queue's message id too, for messages whose own id could not be read."""
        log = self._logs.get(name)
        record = None
        if log is not None and log.sampled(message_id):  # the same for each delivery
            record = _Record(log, message_id, len(body))
        try:
            try:
                return JobResult(await self._process(name, body, record))
            except MlfnError as err:
                wait = self._predict.retry_in(name) if err.retryable else 0.0
                if not wait:
                    raise
                # A load failed moments ago and its error is being repeated until Retry-After.
                # A message must not spend its deliveries on that: it waits, then really tries.
                await asyncio.sleep(wait)
                return JobResult(await self._process(name, body, record))
        except MlfnError as err:
            if record is not None and not err.retryable:  # the message's last word
                request_id = jobs.job_id_of(body) or message_id
                record.log.failed(QUEUE, record.started, err, request_id)
            if err.retryable:
                raise
            return JobResult(jobs.encode_error(jobs.job_id_of(body), message_id, err), err)

    async def _process(self, name: str, body: bytes, record: _Record | None = None) -> str:
        job = jobs.parse_job(body)
        if record is not None:
            record.request_id = job.id or record.request_id
        raw: list[Any] | None = job.instances
        if job.instances_blob is not None:
            limit = self._predict.endpoint(name).endpoint.limits.max_request_bytes
            raw = await asyncio.to_thread(self._payloads.read_instances, job.instances_blob, limit)
        assert raw is not None
        scored = None
        if len(raw) >= COLUMNS_FROM and self._columns is not None:
            # Many rows: validated and scored as columns, without a Python object per row.
            scored = await asyncio.to_thread(self._columns().score_instances, name, raw)
        if scored is None:
            scored = await self._predict.predict(name, raw)
        if record is not None:  # its raw instances: validated again by the log's own thread
            # A claim-checked message's instances came from a blob, not the message.
            size = 2 * record.size + sum(map(len, scored.predictions)) + ROW_BYTES * len(raw)
            record.log.scored(
                QUEUE, record.started, raw, scored.predictions, scored.model, len(raw), size,
                record.request_id,
            )  # fmt: skip
        text = jobs.encode_result(job.id, scored)
        if jobs.fits_in_message(text):
            return text
        path = await asyncio.to_thread(self._payloads.write_result, name, job.id, text)
        return jobs.encode_blob_result(job.id, path, scored)

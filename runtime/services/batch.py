"""The batch-file service: one version of a blob in ``NAME-batch`` scored row by row into
``NAME-batch-results``, streaming (docs/batch.md).

Rows are read in slabs of whole batches, scored through the rows service (validation, the
batcher and the predict function the HTTP and queue requests use), and written in order as
staged blocks while later slabs are scored. An endpoint with a columnar predict has its slabs
read, scored as columns (``runtime.services.columns``) and written by three threads of the
file's own, a slab at a time each (``runtime.services.slabs`` says why). The output and its
summary are committed at the end: a file scored again (a host restarted mid-file, an event
delivered twice) rewrites them whole, never appends. A file that cannot be read at all gets
an error summary; a failure a retry may cure (the store, the model's download) is raised, so
the host tries again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from runtime.config import STORAGE_SETTING, Settings
from runtime.errors import (
    BadRequest,
    CommitSuperseded,
    FileUnreadable,
    InputChanged,
    InternalError,
    MlfnError,
    StorageRefused,
    VersionChanged,
)
from runtime.payload_log.records import EndpointLog
from runtime.protocol import batch, batch_formats
from runtime.protocol.batch_formats import ColumnOutcomes, Outcome, Outcomes, RawRow, RowWriter
from runtime.scored import ModelInfo
from runtime.services.rows import RowService
from runtime.storage import blob_files, clients

if TYPE_CHECKING:
    from pydantic import BaseModel

    from runtime.services.columns import ColumnService
    from runtime.storage.clients import BlobClient

log = logging.getLogger("mlfn.batch")

SLAB_ROWS = 1024  # rows read, validated and handed to the batcher at once (whole batches)
COLUMN_SLAB_ROWS = 16384  # the same, scored as columns
IN_FLIGHT = 4  # slabs being scored while the oldest is written


# A slab's outcomes, the model that scored it, and what the writer made of them ahead.
_Done = tuple[Outcomes, ModelInfo | None, Any]


class BatchService:
    def __init__(
        self,
        rows: RowService,
        settings: Settings,
        columns: Callable[[], ColumnService] | None = None,
        logs: Mapping[str, EndpointLog] | None = None,
    ) -> None:
        self._rows = rows
        self._settings = settings
        self._ready: set[str] = set()
        self._columns = columns  # built on first use: numpy and pyarrow
        # The payload logs that take batch-file rows (Log(bulk_sample=...)).
        self._logs = {n: log for n, log in (logs or {}).items() if log.bulk_sample > 0}

    async def score_blob(self, name: str, path: str, results: str) -> batch.Summary | None:
        """Score the current version of the file at ``path`` of the endpoint's batch container
        into ``results``, named by its ETag. None when the blob is gone or was overwritten
        while it was read (its new version is scored by its own event).

        An event's own version is not asked for: the worker may hand a function the reference
        it decoded for an earlier event of the same name (the Python worker for 3.9-3.12
        caches them by container and name), and an older version cannot be read anyway."""
        bound = self._rows.endpoint(name)
        source = self._blob(bound.batch_container, path)
        try:
            return await self._score(name, source, path, results)
        except InputChanged:
            log.info("%s/%s changed while it was scored; its new version is scored on its own",
                     bound.batch_container, path)  # fmt: skip
            return None

    async def _score(
        self, name: str, source: BlobClient, path: str, results: str
    ) -> batch.Summary | None:
        started = time.perf_counter()
        version = await asyncio.to_thread(blob_files.current_version, source)
        if version is None:
            log.info("%s is gone; nothing to score", source.url)
            return None
        current = version.etag
        summary = batch.Summary(path, current, None, "")
        try:
            with blob_files.version_errors():
                fmt = batch.format_of(path)
                summary.format = fmt.value
                output = batch.result_path(path, current)
                target = await asyncio.to_thread(self._blob, results, output, True)
                sink = blob_files.BlockWriter(target, batch.CONTENT_TYPES[fmt])
                reader = blob_files.open_version(
                    source,
                    version.size,
                    current,
                    version.content_encoding,
                    seekable=fmt is batch.Format.PARQUET,
                )
                try:
                    model = await self._stream(name, fmt, reader, sink, summary)
                    summary.model = _model_doc(model)
                    summary.output = output
                    summary.seconds = time.perf_counter() - started
                    rows = str(summary.rows)
                    metadata = {"mlfn_input_etag": batch.bare_etag(current), "mlfn_rows": rows}
                    await asyncio.to_thread(sink.commit, metadata)
                finally:
                    await asyncio.to_thread(sink.close)
        except VersionChanged:
            raise InputChanged from None
        except CommitSuperseded:
            # Another delivery of this version committed its output meanwhile: that output
            # is whole, and its delivery writes the summary.
            log.info("%s: another delivery committed its results first", path)
            return None
        except StorageRefused as exc:
            refused = BadRequest(f"the storage refused the file's results for good: {exc.code}")
            _failed(summary, refused)
            log.warning("%s: %s", path, refused.message)
        except MlfnError as err:
            if err.retryable:
                raise
            # Nothing in the file can be scored: a retry would only say it again.
            _failed(summary, err)
            log.warning("%s: %s", path, err.message)
        except Exception as exc:
            if clients.is_storage_error(exc):
                raise  # the storage, or bytes damaged on the way: a retry may cure it
            # A bug of mlfn's: said in the summary (not five full re-scorings, then poison).
            log.exception("scoring %s failed", path)
            _failed(summary, InternalError())
        summary.seconds = time.perf_counter() - started
        await asyncio.to_thread(self._write_summary, results, path, current, summary)
        return summary

    async def _stream(
        self,
        name: str,
        fmt: batch.Format,
        reader: Any,
        sink: blob_files.BlockWriter,
        summary: batch.Summary,
    ) -> ModelInfo | None:
        size = self._rows.max_batch_size(name)
        limit = self._rows.endpoint(name).endpoint.limits.max_request_bytes
        columnar = self._columns is not None and self._columns().plan(name) is not None
        # Columns cost per slab, not per row: longer slabs (still bounded by bytes, below).
        rows = COLUMN_SLAB_ROWS if columnar else SLAB_ROWS
        slab = max(size, rows // size * size)
        endpoint = self._rows.endpoint(name).endpoint
        writer = await asyncio.to_thread(batch_formats.writer, fmt, sink, endpoint.output)
        # A slab holds at most a quarter of a request's bytes: wide rows (embeddings, images)
        # make short slabs, so the slabs in flight stay within one request's memory.
        slab_bytes = max(64 * 1024, limit // IN_FLIGHT)
        columns = batch_formats.input_columns(endpoint.input)
        chunks: Iterator[Sequence[RawRow]] = batch_formats.read_rows(
            fmt,
            reader,
            slab,
            limit,
            slab_bytes,
            columns,
            _columns_checker(endpoint.input, fmt, summary),
        )
        if columnar:
            return await self._stream_columns(name, chunks, writer, summary)
        pending: deque[tuple[int, asyncio.Task[_Done]]] = deque()
        model: ModelInfo | None = None
        start = 0
        try:
            while True:
                chunk = await asyncio.to_thread(next, chunks, None)
                if chunk is not None:
                    task = asyncio.ensure_future(
                        self._score_slab(name, chunk, start, writer, summary.input)
                    )
                    pending.append((start, task))
                    start += len(chunk)
                while pending and (chunk is None or len(pending) >= IN_FLIGHT):
                    first, oldest = pending.popleft()
                    outcomes, scored_by, prepared = await oldest
                    model = scored_by or model
                    summary.rows += len(outcomes)
                    summary.errors += batch_formats.error_count(outcomes)
                    summary.errors += await asyncio.to_thread(
                        writer.write, first, outcomes, prepared
                    )
                if chunk is None:
                    break
            await asyncio.to_thread(writer.close)
        finally:
            for _, task in pending:
                task.cancel()
        return model

    async def _stream_columns(
        self,
        name: str,
        chunks: Iterator[Sequence[RawRow]],
        writer: RowWriter,
        summary: batch.Summary,
    ) -> ModelInfo | None:
        """A columnar endpoint's slabs read, scored as columns and written by three threads
        of the file's own, a slab at a time each (``runtime.services.slabs`` says why)."""
        from runtime.services.slabs import Slabs

        assert self._columns is not None
        columns = self._columns()
        loop = asyncio.get_running_loop()
        models: list[ModelInfo] = []

        read_rows = 0

        def read() -> tuple[int, Sequence[RawRow]] | None:
            nonlocal read_rows
            chunk = next(chunks, None)
            if chunk is None:
                return None
            read_rows += len(chunk)
            return read_rows - len(chunk), chunk

        def score(read: tuple[int, Sequence[RawRow]]) -> tuple[Outcomes, ModelInfo | None]:
            first, chunk = read
            done = _score_columns(columns, name, chunk)
            if done is None:
                # Rows the columns do not hold: the rows service's, on the loop (its batcher).
                future = asyncio.run_coroutine_threadsafe(self._score_rows(name, chunk), loop)
                done = slabs.wait(future)
            self._log_rows(name, summary.input, first, chunk, *done)
            return done

        start = 0

        def write(scored: tuple[Outcomes, ModelInfo | None]) -> None:
            nonlocal start
            outcomes, model = scored
            if model is not None:
                models[:] = [model]
            summary.rows += len(outcomes)
            summary.errors += batch_formats.error_count(outcomes)
            summary.errors += writer.write(start, outcomes, writer.prepare(start, outcomes))
            start += len(outcomes)

        slabs = Slabs(read, score, write, held=IN_FLIGHT)
        try:
            await slabs.run_aside()
            await asyncio.to_thread(writer.close)
        finally:
            slabs.stop()  # cancelled: the threads stop after the slab they are at
        return models[0] if models else None

    async def _score_slab(
        self, name: str, chunk: Sequence[RawRow], start: int, writer: RowWriter, path: str
    ) -> _Done:
        """A slab scored, and made ready for the writer (beside the slabs still scored)."""
        outcomes, model = await self._score_rows(name, chunk)
        self._log_rows(name, path, start, chunk, outcomes, model)
        return outcomes, model, await asyncio.to_thread(writer.prepare, start, outcomes)

    def _log_rows(
        self,
        name: str,
        path: str,
        start: int,
        chunk: Sequence[RawRow],
        outcomes: Outcomes,
        model: ModelInfo | None,
    ) -> None:
        """The sampled rows of a slab (its first row the file's ``start``) to the payload
        log, if the endpoint logs batch-file rows."""
        log = self._logs.get(name)
        picked = log.bulk_rows(len(chunk)) if log is not None else []
        if not picked or log is None:
            return
        done = batch_formats.as_outcomes(outcomes)
        for i in picked:
            raw, (prediction, error) = chunk[i], done[i]
            log.file_row(path, start + i, None if isinstance(raw, MlfnError) else raw,
                         prediction, error or (raw if isinstance(raw, MlfnError) else None),
                         model)  # fmt: skip

    async def _score_rows(
        self, name: str, chunk: Sequence[RawRow]
    ) -> tuple[Outcomes, ModelInfo | None]:
        """A chunk's readable rows scored by the rows service (the batcher, pydantic)."""
        readable = [r for r in chunk if not isinstance(r, MlfnError)]
        scored = await self._rows.score(name, readable) if readable else None
        rows = iter(scored.rows if scored else ())
        outcomes: list[Outcome] = []
        for raw in chunk:
            if isinstance(raw, MlfnError):
                outcomes.append((None, raw))
            else:
                row = next(rows)
                outcomes.append((row.prediction, row.error))
        return outcomes, scored.model if scored else None

    def _write_summary(self, results: str, path: str, etag: str, summary: batch.Summary) -> None:
        blob = self._blob(results, batch.summary_path(path, etag), create=True)
        with clients.storage_errors(f"{results}/{path}"):
            blob_files.write_json(blob, summary.to_json())

    def _blob(self, container: str, path: str, create: bool = False) -> BlobClient:
        conn = clients.require(self._settings.storage_connection, STORAGE_SETTING)
        if create and container not in self._ready:
            with (
                clients.storage_errors(container),
                clients.container(conn, container, self._settings) as client,
            ):
                clients.create_if_missing(client.create_container)
            self._ready.add(container)
        return clients.blob(conn, container, path, self._settings)


def _columns_checker(
    model: type[BaseModel], fmt: batch.Format, summary: batch.Summary
) -> Callable[[list[str]], None]:
    """What the reader tells a file's columns (a CSV header, a Parquet file's columns) to,
    before any row is read: a file with no column for a required field of ``model`` would
    fail every row for it, a million rows of "Field required" where one line says what is
    wrong (``FileUnreadable``, the file's error summary). So would a file with a column for no
    field at all (a header of other names: "Age" for "age"), though every field is optional:
    each row would take the defaults and score alike. Optional fields no column fills are
    named in the summary (``absent``): every row took their default."""

    def check(names: list[str]) -> None:
        found = f"; its header: {', '.join(names[:20])}" if fmt is batch.Format.CSV else ""
        missing = batch_formats.column_names(model, batch_formats.missing_columns(model, names))
        if missing:
            raise FileUnreadable(
                f"the file has no column for the required field(s) {', '.join(missing)}, so "
                f"every row would fail{found}",
                detail={"missing": missing},
            )
        unfilled = batch_formats.column_names(model, batch_formats.unfilled_fields(model, names))
        if unfilled and len(unfilled) == len(model.model_fields):
            raise FileUnreadable(
                f"the file has a column for none of the input fields ({', '.join(unfilled)}): "
                f"every row would take their defaults and score alike{found}",
                detail={"missing": unfilled},
            )
        if unfilled:
            summary.extra["absent"] = unfilled

    return check


def _failed(summary: batch.Summary, error: MlfnError) -> None:
    """The file ends in ``error`` with no output: no rows either, whatever was scored before
    (the summary tells what the output holds)."""
    summary.error, summary.output = error.to_dict(), None
    summary.rows = summary.errors = 0


def _model_doc(model: ModelInfo | None) -> dict[str, str] | None:
    if model is None:
        return None
    return {"name": model.name, "version": model.version, "sha256": model.sha256}


def _score_columns(
    columns: ColumnService, name: str, chunk: Sequence[RawRow]
) -> tuple[Outcomes, ModelInfo | None] | None:
    """A chunk's readable rows scored as columns (``runtime.services.columns``): a Parquet
    chunk's Arrow columns as they are, other rows made columns; None when they do not make
    columns (values of mixed kinds), for the rows service to score."""
    import numpy as np

    from runtime.columnar.arrow import from_dicts, scatter
    from runtime.protocol.csv_rows import CsvRows
    from runtime.protocol.parquet_rows import ArrowRows, valid_text

    plans = columns.plan(name)
    assert plans is not None
    keys = plans.input.keys()
    forbid = plans.input.forbid_extra
    if isinstance(chunk, ArrowRows):
        if forbid and not keys.issuperset(chunk.batch.schema.names):
            return None  # columns the model refuses: each row's nulls decide, row by row
        errors: dict[int, MlfnError] = dict(chunk.errors)
        readable = chunk.readable
        batch = chunk.batch
        names = set(batch.schema.names) & keys
        given = {key: batch.column(key) for key in names}
        if not all(map(valid_text, given.values())):
            return None  # a string that is not UTF-8: each row's own error, row by row
        suspect = None

        def raw_rows(picked: list[int]) -> list[Any]:
            return chunk.rows_at(picked)

    elif (
        isinstance(chunk, CsvRows)
        and not (forbid and not keys.issuperset(h for h in chunk.header if h))
        and (parsed := chunk.columns(keys))
    ):
        given, readable, errors = parsed  # text: the checks read plain numbers
        suspect = None

        def raw_rows(picked: list[int]) -> list[Any]:
            return chunk.rows_at([readable[i] for i in picked])

    else:
        errors = {i: raw for i, raw in enumerate(chunk) if isinstance(raw, MlfnError)}
        readable = [i for i in range(len(chunk)) if i not in errors]
        rows = [chunk[i] for i in readable]
        made = from_dicts(rows, keys, forbid) if rows else None
        if made is None:
            return None
        given, suspect = made

        def raw_rows(picked: list[int]) -> list[Any]:
            return [rows[i] for i in picked]

    if not readable:
        return None
    scored = columns.score_sync(
        name,
        given,
        len(readable),
        raw_rows,
        null_is_missing=True,  # an empty CSV cell, a Parquet null: the key left out
        suspect=suspect,
    )
    errors.update({readable[i]: error for i, error in scored.errors.items()})
    if scored.outputs is None:  # pydantic wrote each row's JSON, as the row path does
        at = dict(zip(readable, scored.predictions or (), strict=False))
        outcomes: list[Outcome] = [(at.get(i), errors.get(i)) for i in range(len(chunk))]
        return outcomes, scored.model
    output = columns.output_names(name)
    if len(readable) == len(chunk):  # every row read: the columns' rows are the chunk's
        outputs = {written: scored.outputs[field] for field, written in output.items()}
        return ColumnOutcomes(outputs, errors, len(chunk)), scored.model
    order = np.full(len(chunk), -1, dtype=np.int64)
    order[readable] = np.arange(len(readable))
    outputs = {written: scatter(scored.outputs[field], order) for field, written in output.items()}
    return ColumnOutcomes(outputs, errors, len(chunk)), scored.model

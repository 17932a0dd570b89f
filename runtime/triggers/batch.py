"""The blob trigger adapter: a file landed in an endpoint's batch container; the batch service
scores it into the results container. Only the blob's name and ETag are used: the service
reads the file itself, in ranges, so memory stays bounded whatever the file's size."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import azure.functions as func

from runtime import telemetry
from runtime.protocol import batch
from runtime.services import Services
from runtime.telemetry import Invocation
from runtime.triggers.invocation import DETACHED

BlobFunction = Callable[[func.InputStream, func.Context], Awaitable[None]]

log = logging.getLogger("mlfn.batch")


def batch_function(name: str, results: str, services: Services) -> BlobFunction:
    """Score each file of endpoint NAME's batch container into ``results``."""

    async def score_file(blob: func.InputStream, context: func.Context = DETACHED) -> None:
        invocation = Invocation(context.invocation_id or None, context.thread_local_storage)
        token = telemetry.enter(invocation)
        try:
            _, path = batch.split_trigger_name(blob.name or "")
            # The worker's InputStream has the trigger's blob properties (not in the stubs).
            properties = getattr(blob, "blob_properties", None) or {}
            found = properties.get("ETag")
            # Only a string ETag pins the version; anything else, the current version is read.
            etag = found if isinstance(found, str) and found.strip('"') else None
            summary = await services.batch.score_blob(name, path, results, etag)
            if summary is not None:
                log.info(
                    "%s: %d rows, %d errors in %.1f s -> %s/%s",
                    blob.name,
                    summary.rows,
                    summary.errors,
                    summary.seconds,
                    results,
                    summary.output or batch.summary_path(path, summary.etag),
                )
        finally:
            telemetry.leave(token)

    return score_file

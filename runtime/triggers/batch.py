"""The blob trigger adapter: a file landed in an endpoint's batch container; the batch service
scores it into the results container. The worker hands over a reference (container and
name), never the bytes: the service reads the file itself, in ranges, so memory stays bounded
whatever the file's size, on Azure as locally."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import azure.functions as func

from runtime.protocol import batch
from runtime.services import Services
from runtime.triggers.blob_reference import BlobReference
from runtime.triggers.invocation import DETACHED, Scope

BlobFunction = Callable[[BlobReference, func.Context], Awaitable[None]]

log = logging.getLogger("mlfn.batch")


def batch_function(name: str, results: str, services: Services) -> BlobFunction:
    """Score each file of endpoint NAME's batch container into ``results``."""

    async def score_file(blob: BlobReference, context: func.Context = DETACHED) -> None:
        scope = Scope(context)
        try:
            path = blob.name
            summary = await services.batch.score_blob(name, path, results)
            if summary is not None:
                log.info(
                    "%s/%s: %d rows, %d errors in %.1f s -> %s/%s",
                    blob.container,
                    path,
                    summary.rows,
                    summary.errors,
                    summary.seconds,
                    results,
                    summary.output or batch.summary_path(path, summary.etag),
                )
        finally:
            scope.close()

    return score_file

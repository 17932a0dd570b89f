"""The payload log (docs/payload-log.md): a sampled record of what each endpoint was asked and
what it answered, written as Parquet files to Blob Storage off the request path.

``logs(endpoints, settings)`` gives each endpoint that logs its ``EndpointLog``; the services
hand it their requests. Nothing here is imported unless a log is on: the settings and
``Endpoint(log=...)`` decide.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from runtime.payload_log.declared import Log, NotLogged

if TYPE_CHECKING:
    from pydantic import BaseModel

    from runtime.config import Settings
    from runtime.payload_log.buffer import PayloadLog
    from runtime.payload_log.records import EndpointLog

Declared = tuple[Log | None, "type[BaseModel] | None", "type[BaseModel] | None"]
"""An endpoint's ``log=``, input model and output model."""

__all__ = ["Log", "NotLogged", "logs"]

log = logging.getLogger("mlfn.payload_log")


def logs(
    endpoints: Mapping[str, Declared], settings: Settings
) -> tuple[dict[str, EndpointLog], PayloadLog | None]:
    """Each logging endpoint's log, and the buffer they share (None: no endpoint logs). An
    endpoint logs when ``MLFN_PAYLOAD_LOG`` names a destination or it declares
    ``Endpoint(log=Log(...))``, unless it says ``Log(enabled=False)``."""
    wanted = {}
    for name, (declared, model, output) in endpoints.items():
        if declared is not None and not declared.enabled:
            continue
        if declared is None and settings.payload_log is None:
            continue
        sample = settings.payload_log_sample
        bulk = 0.0
        if declared is not None:
            sample = declared.sample if declared.sample is not None else sample
            bulk = declared.bulk_sample
        if sample > 0 or bulk > 0:
            wanted[name] = (model, output, sample, bulk)
    if not wanted:
        return {}, None
    import importlib.util

    if importlib.util.find_spec("pyarrow") is None:  # said once; requests go on unlogged
        log.error(
            "the payload log of %s is off: it writes Parquet with pyarrow, which is not "
            "installed: pip install 'mlfn[payload-log]' (on Azure, add pyarrow to "
            "requirements.txt)",
            ", ".join(sorted(wanted)),
        )
        return {}, None

    from runtime.payload_log.buffer import PayloadLog
    from runtime.payload_log.columns import Layout
    from runtime.payload_log.destinations import DEFAULT, destination
    from runtime.payload_log.records import EndpointLog

    where = destination(settings.payload_log or DEFAULT, settings)
    layouts = {name: Layout(name, model, output) for name, (model, output, _, _) in wanted.items()}
    buffer = PayloadLog(
        where,
        layouts,
        flush_s=settings.payload_log_flush_s,
        flush_rows=settings.payload_log_flush_rows,
        max_rows=settings.payload_log_buffer_rows,
        max_bytes=int(settings.payload_log_buffer_mb * 1024 * 1024),
    )
    found = {
        name: EndpointLog(name, sample, bulk, buffer)
        for name, (_, _, sample, bulk) in wanted.items()
    }
    return found, buffer

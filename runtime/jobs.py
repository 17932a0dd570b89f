"""Where a queue message becomes a result: parse, validate, score (micro-batched), answer.

Transport-neutral: the queue trigger adapter hands in the message body and sends the returned
text to the results queue. A message that can never succeed gets an error result; a transient
failure raises, so the host retries it and finally moves it to the poison queue.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runtime.batching import Batcher
from runtime.errors import BadRequest, MlfnError
from runtime.payloads import Payloads
from runtime.protocol import v1
from runtime.serving import Scorer

# A queue message holds 64 KB, about 48 KB of payload once base64-encoded.
INLINE_RESULT_LIMIT = 48 * 1024
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class Job:
    id: str
    instances: list[Any] | None
    instances_blob: str | None


def parse_job(body: bytes) -> Job:
    """Read a request message: ``{"id", "instances"}`` or ``{"id", "instances_blob"}``."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"the message is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest('the message must be a JSON object {"id": ..., "instances": [...]}')
    job_id = doc.get("id")
    if not isinstance(job_id, str) or not _ID.match(job_id):
        raise BadRequest(
            '"id" must be a string of 1-128 letters, digits, ".", "_" or "-" (it names the result)',
            detail=[{"field": "id", "message": "missing or invalid"}],
        )
    has_list, has_blob = "instances" in doc, "instances_blob" in doc
    if has_list == has_blob:
        raise BadRequest(
            'the message needs exactly one of "instances" and "instances_blob"',
            detail=[{"field": "instances", "message": "exactly one of instances, instances_blob"}],
        )
    if has_list and not isinstance(doc["instances"], list):
        raise BadRequest(
            '"instances" must be a list',
            detail=[{"field": "instances", "message": "expected a list"}],
        )
    if has_blob and not isinstance(doc["instances_blob"], str):
        raise BadRequest('"instances_blob" must be a string "container/path"')
    return Job(job_id, doc.get("instances"), doc.get("instances_blob"))


def _job_id_of(body: bytes) -> str | None:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    job_id = doc.get("id") if isinstance(doc, dict) else None
    return job_id if isinstance(job_id, str) else None


class JobRunner:
    def __init__(
        self, scorer: Scorer, batchers: Mapping[str, Batcher[Any, Any]], payloads: Payloads
    ) -> None:
        self._scorer = scorer
        self._batchers = batchers
        self._payloads = payloads

    async def process(self, name: str, body: bytes, message_id: str | None = None) -> str:
        """The result message (JSON text) for one request message. Raises only for transient
        failures (``err.retryable``) and bugs, which the host retries. Error results carry the
        queue's message id too, for messages whose own id could not be read."""
        try:
            return await self._process(name, body)
        except MlfnError as err:
            if err.retryable:
                raise
            doc = {"id": _job_id_of(body), "message_id": message_id, "error": err.to_dict()}
            return json.dumps(doc, separators=(",", ":"))

    async def _process(self, name: str, body: bytes) -> str:
        job = parse_job(body)
        raw = job.instances
        if job.instances_blob is not None:
            raw = await asyncio.to_thread(self._payloads.read_instances, job.instances_blob)
        assert raw is not None
        # Validating hundreds of claim-checked instances is CPU work: keep it off the event loop.
        instances = await asyncio.to_thread(self._scorer.validate, name, raw)
        scored = await self._batchers[name].submit(instances)
        doc = {"id": job.id, **v1.encode_response(scored)}
        text = json.dumps(doc, separators=(",", ":"))
        if len(text.encode()) <= INLINE_RESULT_LIMIT:
            return text
        path = await asyncio.to_thread(self._payloads.write_result, name, job.id, text)
        return json.dumps({"id": job.id, "predictions_blob": path, "model": doc["model"]})

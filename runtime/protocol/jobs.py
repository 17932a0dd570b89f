"""The queue wire contract, in one place: the names of an endpoint's queues, functions and
claim-check blobs, the request and result message formats, and their size limits.

The queue function, the jobs service, the storage clients and the CLI all read and write
messages through this module, so producer and consumer cannot drift apart.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from runtime.errors import BadRequest, MlfnError
from runtime.protocol import json_input
from runtime.scored import Scored

# A queue message holds 64 KB, about 48 KB of payload once base64-encoded.
MESSAGE_LIMIT = 64 * 1024
INLINE_RESULT_LIMIT = 48 * 1024
# Claim checks: inputs too large for a message, and results too large for one.
REQUESTS_CONTAINER = "requests"
RESULTS_CONTAINER = "results"

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# Azure's rule for queue and blob container names alike: 3-63 lowercase letters, digits and
# single hyphens, starting and ending with a letter or digit.
_AZURE_NAME = re.compile(r"(?=.{3,63}\Z)[a-z0-9](?:[a-z0-9]|-(?!-))*[a-z0-9]")
_QUEUE_FUNCTION_SUFFIX = "_queue"


# --- names ------------------------------------------------------------------------------------


def check_queue_name(name: str) -> None:
    """Raise ValueError unless ``name`` follows Azure's queue naming rules."""
    if not _AZURE_NAME.fullmatch(name):
        raise ValueError(
            f"queue name {name!r} is invalid: Azure queue names are 3-63 lowercase letters, "
            "digits and single hyphens, starting and ending with a letter or digit"
        )


def is_container_name(name: str) -> bool:
    """Azure's blob container naming rules (those of queues)."""
    return _AZURE_NAME.fullmatch(name) is not None


HOST_CONTAINER_PREFIX = "azure-webjobs-"


def is_host_container(name: str) -> bool:
    """A container of the Functions host's own (its keys, leases and blob receipts live in
    ``azure-webjobs-*``) or of the service (``$logs``, ``$web``): never the app's to read
    from or write to, by claim check or batch file."""
    return name.startswith(HOST_CONTAINER_PREFIX) or name.startswith("$")


def requests_queue(endpoint: str) -> str:
    """The default request queue of an endpoint: ``NAME-requests`` (``_`` becomes ``-``)."""
    return f"{endpoint.replace('_', '-')}-requests"


def results_queue(endpoint: str) -> str:
    return f"{endpoint.replace('_', '-')}-results"


def queue_function_name(endpoint: str) -> str:
    """The name of the function that scores an endpoint's request queue."""
    return endpoint + _QUEUE_FUNCTION_SUFFIX


def endpoint_of_queue_function(function_name: str) -> str | None:
    """The endpoint a queue function serves, or None for any other function."""
    if function_name.endswith(_QUEUE_FUNCTION_SUFFIX):
        return function_name.removesuffix(_QUEUE_FUNCTION_SUFFIX)
    return None


def request_blob(endpoint: str, job_id: str) -> str:
    """Where a claim-checked request's instances go: ``requests/NAME/<id>.jsonl``."""
    return f"{REQUESTS_CONTAINER}/{endpoint}/{job_id}.jsonl"


def result_blob(endpoint: str, job_id: str) -> str:
    """Where a result too large for a message goes: ``results/NAME/<id>.json``."""
    return f"{RESULTS_CONTAINER}/{endpoint}/{job_id}.json"


def split_blob_ref(ref: str, field: str = "instances_blob") -> tuple[str, str]:
    """``container/path`` as (container, path); a BadRequest naming ``field`` otherwise."""
    container, _, path = ref.partition("/")
    if not container or not path:
        raise BadRequest(
            f'"{field}" must be "container/path", got {ref!r}',
            detail=[{"field": field, "message": "expected container/path"}],
        )
    return container, path


# --- request messages -------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    id: str
    instances: list[Any] | None
    instances_blob: str | None
    traceparent: str | None = None


def parse_job(body: bytes) -> Job:
    """Read a request message: ``{"id", "instances"}`` or ``{"id", "instances_blob"}``, and
    optionally the producer's W3C ``traceparent`` (a string; anything else is ignored, as the
    trace context spec asks: a bad one starts a new trace, it never fails the job)."""
    doc = json_input.loads(body, "the message")
    if not isinstance(doc, dict):
        raise BadRequest('the message must be a JSON object {"id": ..., "instances": [...]}')
    job_id = check_job_id(doc.get("id"))
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
    traceparent = doc.get("traceparent")
    return Job(
        job_id,
        doc.get("instances"),
        doc.get("instances_blob"),
        traceparent if isinstance(traceparent, str) else None,
    )


def check_job_id(job_id: Any) -> str:
    """``job_id`` if it can name a job (and its result blob); BadRequest otherwise."""
    if not isinstance(job_id, str) or not _ID.fullmatch(job_id):
        raise BadRequest(
            '"id" must be a string of 1-128 letters, digits, ".", "_" or "-" (it names the result)',
            detail=[{"field": "id", "message": "missing or invalid"}],
        )
    return job_id


def job_id_of(body: bytes) -> str | None:
    """The ``id`` of a message that could not be read as a job, if it has one at all: read
    leniently (NaN, Infinity), so the error result of a job refused for them still names it."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None
    job_id = doc.get("id") if isinstance(doc, dict) else None
    return job_id if isinstance(job_id, str) else None


def traceparent_of(body: bytes) -> str | None:
    """The ``traceparent`` of a request message, read before (and whether or not) the message
    is a valid job: the invocation's trace starts before the job is parsed."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None
    found = doc.get("traceparent") if isinstance(doc, dict) else None
    return found if isinstance(found, str) else None


def encode_request(job_id: str, instances: list[Any], traceparent: str | None = None) -> str:
    return _dumps(_traced({"id": job_id, "instances": instances}, traceparent))


def encode_claim_check(job_id: str, instances_blob: str, traceparent: str | None = None) -> str:
    return _dumps(_traced({"id": job_id, "instances_blob": instances_blob}, traceparent))


def _traced(doc: dict[str, Any], traceparent: str | None) -> dict[str, Any]:
    return doc if traceparent is None else {**doc, "traceparent": traceparent}


def encode_instances(instances: list[Any]) -> bytes:
    """A claim-checked request's instances, as JSON Lines."""
    return "\n".join(_dumps(i) for i in instances).encode()


def parse_instances(data: bytes, ref: str) -> list[Any]:
    """The instances in a claim-check blob: a JSON list, or JSON Lines (one per line)."""
    what = f"inputs blob {ref}"
    try:
        text = data.decode()
        if text.lstrip().startswith("["):
            doc = json_input.loads(text, what)
            if isinstance(doc, list):
                return doc
        return [json_input.loads(line, what) for line in text.splitlines() if line.strip()]
    except (ValueError, BadRequest) as exc:
        reason = exc.message if isinstance(exc, BadRequest) else str(exc)
        raise BadRequest(
            f"inputs blob {ref} is neither a JSON list nor JSON Lines: {reason:.200}",
            detail=[{"field": "instances_blob", "message": "not JSON or JSON Lines"}],
        ) from None


# --- result messages --------------------------------------------------------------------------


def encode_result(job_id: str, scored: Scored) -> str:
    """``{"id", "predictions", "model"}``; it may be too large for a message (see
    ``fits_in_message``), in which case it goes to blob and ``encode_blob_result`` points there."""
    # The predictions are JSON already: joined, not parsed and dumped again.
    head = f'{{"id":{_dumps(job_id)},"predictions":'
    tail = f',"model":{scored.model.json.decode()}}}'
    return head + "[" + b",".join(scored.predictions).decode() + "]" + tail


def fits_in_message(text: str) -> bool:
    return len(text.encode()) <= INLINE_RESULT_LIMIT


def encode_blob_result(job_id: str, predictions_blob: str, scored: Scored) -> str:
    head = f'{{"id":{_dumps(job_id)},"predictions_blob":{_dumps(predictions_blob)},'
    return head + f'"model":{scored.model.json.decode()}}}'


def encode_error(job_id: str | None, message_id: str | None, err: MlfnError) -> str:
    """An error result. ``message_id`` is the queue's, for messages whose own id was unreadable."""
    return _dumps({"id": job_id, "message_id": message_id, "error": err.to_dict()})


def _dumps(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"))

"""The V1 predict body (KServe V1 / TF-Serving style): ``{"instances": [...]}`` in,
``{"predictions": [...], "model": {...}}`` out."""

from __future__ import annotations

from typing import Any

from runtime.errors import BadRequest, PayloadTooLarge
from runtime.protocol import json_input
from runtime.scored import Scored

# A request's key for its endpoint's release: the same key is always scored by the same version.
ROUTE_KEY_HEADER = "x-mlfn-route-key"
# The caller's id for a request, written with its payload-log records (and deciding, by its
# hash, whether a sampled log takes it: a retried request is taken or not again).
REQUEST_ID_HEADER = "x-request-id"
# A request's deadline, milliseconds from its arrival (docs/latency.md).
TIMEOUT_HEADER = "x-mlfn-timeout-ms"


def decode_request(body: bytes, *, max_bytes: int) -> list[Any]:
    """The raw instances of a predict body; size is checked before anything is parsed."""
    if len(body) > max_bytes:
        raise PayloadTooLarge(len(body), max_bytes)
    if not body.strip():
        raise BadRequest('the body is empty; send {"instances": [...]}')
    doc = json_input.loads(body, "the body")
    if not isinstance(doc, dict):
        raise BadRequest(
            f'the body must be a JSON object {{"instances": [...]}}, not {_kind(doc)}',
            detail=[{"field": "(body)", "message": f"expected an object, got {_kind(doc)}"}],
        )
    if "instances" not in doc:
        raise BadRequest(
            'the body has no "instances" field',
            detail=[{"field": "instances", "message": "field required"}],
        )
    instances = doc["instances"]
    if not isinstance(instances, list):
        raise BadRequest(
            f'"instances" must be a list, not {_kind(instances)}',
            detail=[{"field": "instances", "message": f"expected a list, got {_kind(instances)}"}],
        )
    return instances


def encode_response(scored: Scored) -> bytes:
    """``{"predictions": [...], "model": {...}}`` as JSON bytes."""
    predictions = b",".join(scored.predictions)
    return b'{"predictions":[' + predictions + b'],"model":' + scored.model.json + b"}"


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )

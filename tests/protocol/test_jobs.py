"""Queue request messages: what can never succeed is told apart from what may later."""

from __future__ import annotations

import pytest

from runtime.errors import BadRequest
from runtime.protocol.jobs import parse_job


def test_a_request_with_instances() -> None:
    job = parse_job(b'{"id": "a-1", "instances": [{"x": 1}]}')
    assert (job.id, job.instances, job.instances_blob) == ("a-1", [{"x": 1}], None)


def test_a_request_with_a_claim_check() -> None:
    job = parse_job(b'{"id": "a.2", "instances_blob": "requests/iris/a.2.jsonl"}')
    assert (job.instances, job.instances_blob) == (None, "requests/iris/a.2.jsonl")


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"not json", "not valid JSON"),
        (b"[1]", "JSON object"),
        (b'{"instances": []}', '"id"'),
        (b'{"id": "../../etc", "instances": []}', '"id"'),
        (b'{"id": 5, "instances": []}', '"id"'),
        (b'{"id": "x"}', "exactly one"),
        (b'{"id": "x", "instances": [], "instances_blob": "a/b"}', "exactly one"),
        (b'{"id": "x", "instances": {"a": 1}}', "must be a list"),
    ],
)
def test_messages_that_can_never_succeed_are_bad_requests(body: bytes, needle: str) -> None:
    with pytest.raises(BadRequest, match=needle):
        parse_job(body)

"""The V1 predict body: what a client sends is read or refused before any validation."""

from __future__ import annotations

import json

import pytest

from runtime.errors import BadRequest, PayloadTooLarge
from runtime.protocol import v1
from runtime.scored import ModelInfo, Scored


def test_the_instances_of_a_body_are_returned_as_sent() -> None:
    body = json.dumps({"instances": [{"x": 1}, {"x": 2.5}], "extra": True}).encode()
    assert v1.decode_request(body, max_bytes=1024) == [{"x": 1}, {"x": 2.5}]


def test_size_is_checked_before_parsing() -> None:
    with pytest.raises(PayloadTooLarge) as caught:
        v1.decode_request(b"{" * 11, max_bytes=10)  # not JSON either: size wins
    assert caught.value.status == 413 and caught.value.detail == {"size": 11, "limit": 10}
    at_limit = b'{"instances": [1]}'  # exactly the limit: read
    assert v1.decode_request(at_limit, max_bytes=len(at_limit)) == [1]


@pytest.mark.parametrize(
    ("body", "message", "field"),
    [
        (b"", "the body is empty", None),
        (b"  \n", "the body is empty", None),
        (b"{nope", "not valid JSON", None),
        (b"\xff\xfe", "not valid JSON", None),
        (b"[1, 2]", "not a list", "(body)"),
        (b'"text"', "not a string", "(body)"),
        (b"{}", 'no "instances" field', "instances"),
        (b'{"instances": {"x": 1}}', "must be a list, not an object", "instances"),
        (b'{"instances": 3}', "not a number", "instances"),
        (b'{"instances": null}', "not null", "instances"),
    ],
)
def test_a_body_that_is_not_a_predict_request_is_a_bad_request(
    body: bytes, message: str, field: str | None
) -> None:
    with pytest.raises(BadRequest, match=message) as caught:
        v1.decode_request(body, max_bytes=1024)
    assert caught.value.status == 400
    if field is not None:
        assert caught.value.detail[0]["field"] == field


def test_an_empty_instances_list_is_left_to_validation() -> None:
    assert v1.decode_request(b'{"instances": []}', max_bytes=1024) == []


def test_the_response_carries_predictions_and_the_model_that_made_them() -> None:
    scored = Scored([b'{"label":1}', b'{"label":0}'], ModelInfo("iris", "abc", "f" * 64))
    assert json.loads(v1.encode_response(scored)) == {
        "predictions": [{"label": 1}, {"label": 0}],
        "model": {"name": "iris", "version": "abc", "sha256": "f" * 64},
    }

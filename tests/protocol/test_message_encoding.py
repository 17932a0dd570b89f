"""Queue message bodies as host.json ``messageEncoding`` says: base64 (the default) or none."""

from __future__ import annotations

import pytest

from runtime.protocol import message_encoding

BODY = b'{"id": "j-1", "instances": [3, 1, 2]}\xc3\xa9'


def test_base64_bodies_round_trip_and_are_base64_on_the_wire() -> None:
    sent = message_encoding.encode(BODY, "base64")
    assert sent == "eyJpZCI6ICJqLTEiLCAiaW5zdGFuY2VzIjogWzMsIDEsIDJdfcOp"
    assert message_encoding.decode(sent, "base64") == BODY
    assert message_encoding.decode(sent.encode(), "base64") == BODY  # as the SDK may hand it


def test_unencoded_bodies_are_sent_as_text() -> None:
    assert message_encoding.encode(BODY, "none") == BODY.decode()
    assert message_encoding.decode(BODY.decode(), "none") == BODY


@pytest.mark.parametrize("content", ["plain text, not base64!", "eyJ", "eyJpZCI6IDF9\n!"])
def test_a_body_that_is_not_base64_is_refused_with_the_fix(content: str) -> None:
    with pytest.raises(message_encoding.NotEncoded, match="messageEncoding") as caught:
        message_encoding.decode(content, "base64")
    assert "TextBase64EncodePolicy" in str(caught.value)

"""Queue message bodies as the Functions queue bindings encode them (host.json
``messageEncoding``): base64 by default, or the text as is with ``none``."""

from __future__ import annotations

import base64
import binascii

from runtime.errors import NotEncoded

ENCODINGS = ("base64", "none")


def encode(data: bytes, encoding: str) -> str:
    return data.decode() if encoding == "none" else base64.b64encode(data).decode()


def decode(content: str | bytes, encoding: str) -> bytes:
    text = content if isinstance(content, str) else bytes(content).decode()
    if encoding == "none":
        return text.encode()
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise NotEncoded(
            "message is not base64 (host.json messageEncoding is base64): "
            "send with TextBase64EncodePolicy, or set messageEncoding to none"
        ) from None

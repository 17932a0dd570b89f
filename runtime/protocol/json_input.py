"""Reading JSON that a client sent: whatever the bytes hold, the answer is the value or a
``BadRequest`` that says why, never an exception the edge would answer with a 500."""

from __future__ import annotations

import json
from typing import Any

from runtime.errors import BadRequest


def loads(data: bytes | str, what: str) -> Any:
    """``data`` parsed; ``what`` names it in the error ("the body", "the message")."""
    try:
        return json.loads(data)
    except RecursionError:
        raise BadRequest(f"{what} is nested too deeply to read") from None
    except ValueError as exc:  # also bad UTF-8, and integers over Python's digit limit
        raise BadRequest(f"{what} is not valid JSON: {exc}") from None

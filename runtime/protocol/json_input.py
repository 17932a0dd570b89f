"""Reading JSON that a client sent: whatever the bytes hold, the answer is the value or a
``BadRequest`` that says why, never an exception the edge would answer with a 500."""

from __future__ import annotations

import json
import math
from typing import Any

from runtime.errors import BadRequest


class _NotFinite(ValueError):
    pass


def _not_json(token: str) -> Any:
    raise _NotFinite(token)


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _NotFinite(text[:40])
    return value


def loads(data: bytes | str, what: str) -> Any:
    """``data`` parsed; ``what`` names it in the error ("the body", "the message"). NaN and
    Infinity are not JSON, and a number too large for a float is not one either: both are
    refused here rather than reaching a model as a non-finite value."""
    try:
        return json.loads(data, parse_constant=_not_json, parse_float=_finite)
    except _NotFinite as exc:
        # json.dumps of a DataFrame's records writes its missing values as NaN.
        hint = (
            "; a missing value is null (pandas' to_json writes NaN so)" if str(exc) == "NaN" else ""
        )
        raise BadRequest(f"{what} holds {exc}, which is not a finite JSON number{hint}") from None
    except RecursionError:
        raise BadRequest(f"{what} is nested too deeply to read") from None
    except ValueError as exc:  # also bad UTF-8, and integers over Python's digit limit
        raise BadRequest(f"{what} is not valid JSON: {exc}") from None

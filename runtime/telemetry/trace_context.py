"""W3C Trace Context ``traceparent`` values, read and made without OpenTelemetry: a queue
producer stamps its messages with one whether or not telemetry is on, and the triggers choose
which parent to continue before anything of OpenTelemetry is needed."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


@dataclass(frozen=True)
class TraceParent:
    trace_id: str
    span_id: str
    flags: int

    def __str__(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags:02x}"


def parse(value: object) -> TraceParent | None:
    """The trace parent in ``value``, or None for anything the spec says to ignore (a
    malformed value restarts the trace; it never fails a request)."""
    if not isinstance(value, str):
        return None
    found = _TRACEPARENT.fullmatch(value.strip())
    if found is None:
        return None
    version, trace_id, span_id, flags, rest = found.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == _ZERO_TRACE:
        return None
    if span_id == _ZERO_SPAN:
        return None
    return TraceParent(trace_id, span_id, int(flags, 16))


def fresh() -> str:
    """A new trace's parent, sampled: what a producer sends when it is in no trace itself."""
    return str(TraceParent(secrets.token_hex(16), secrets.token_hex(8), 1))


Carrier = tuple[str | None, str | None]
"""A ``traceparent`` and its ``tracestate``, as a caller or the host sent them (either None)."""


def choose(caller: Carrier, host: Carrier) -> tuple[str, str] | None:
    """The parent an invocation continues, with its trace state: the caller's (an HTTP
    ``traceparent`` header, a queue message's field), unless the Functions host's own span for
    this invocation is in the same trace, and so sits between them (on Azure the host continues
    the caller's header); with no caller, the host's. None: a new trace. Locally the host makes
    up an unrelated parent per invocation, so the caller's wins there."""
    mine, theirs = parse(caller[0]), parse(host[0])
    if mine is not None and (theirs is None or theirs.trace_id != mine.trace_id):
        return str(mine), caller[1] or ""
    if theirs is not None:
        return str(theirs), host[1] or ""
    return None

"""Telemetry: which invocation a piece of work belongs to, and traces and metrics through
OpenTelemetry when its standard variables (or Application Insights' connection string) ask for
them (docs/observability.md).

Off, ``current()`` is ``OFF``: every method does nothing and returns shared objects, and nothing
of OpenTelemetry is imported. Hot paths take ``tel = telemetry.current()`` (a global read) and
guard what would allocate with ``if tel.on``.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from runtime.telemetry import trace_context
from runtime.telemetry.trace_context import Carrier

log = logging.getLogger("mlfn.telemetry")

HTTP, QUEUE = "http", "queue"


class Invocation:
    """One function invocation: its id as the Functions host knows it, the worker's thread-local
    storage that attributes log lines to it (``context.thread_local_storage``), and, with
    telemetry on, its span and start."""

    __slots__ = ("id", "span", "started", "thread_local", "token", "version")

    def __init__(self, invocation_id: str | None, thread_local: Any = None) -> None:
        self.id = invocation_id
        self.thread_local = thread_local
        self.span: Any = None
        self.token: Any = None
        self.started = 0.0
        self.version: str | None = None  # the model version a release routed it to

    def trace_id(self) -> str | None:
        """The W3C trace id of this invocation's span while it lasts (telemetry on), else
        None."""
        span = self.span
        if span is None:
            return None
        found = span.get_span_context()
        return f"{found.trace_id:032x}" if found.is_valid else None


@dataclass(frozen=True)
class Function:
    """What the spans and metrics of one function's invocations say about it, made once."""

    name: str
    trigger: str  # HTTP or QUEUE
    span_name: str
    attributes: Mapping[str, str] = field(default_factory=dict)


class Waiting(Protocol):
    """A request waiting in a batcher, as telemetry sees it."""

    invocation: Invocation | None
    queued_at: float


_invocation: contextvars.ContextVar[Invocation | None] = contextvars.ContextVar(
    "mlfn_invocation", default=None
)


def current_invocation() -> Invocation | None:
    return _invocation.get()


def enter(invocation: Invocation | None) -> contextvars.Token[Invocation | None]:
    """Make ``invocation`` current (for this task or thread) until ``leave``."""
    return _invocation.set(invocation)


def leave(token: contextvars.Token[Invocation | None]) -> None:
    _invocation.reset(token)


class InvocationOnThread:
    """``with InvocationOnThread():`` the current invocation's id in the worker's thread-local
    storage while the block runs, as the worker's ``run_sync_func`` does for sync functions:
    mlfn's triggers are async and hop to threads of their own, and the user's log lines in
    predict must be attributed to their invocation on Azure. A batch that merged several
    invocations is attributed to its first."""

    __slots__ = ("_before", "_local")

    def __enter__(self) -> None:
        invocation = _invocation.get()
        self._local = invocation.thread_local if invocation is not None else None
        if self._local is not None and invocation is not None:
            # The event loop's thread holds the worker's value for another invocation: restored.
            self._before = getattr(self._local, "invocation_id", None)
            self._local.invocation_id = invocation.id

    def __exit__(self, *exc: object) -> None:
        if self._local is not None:
            self._local.invocation_id = self._before


class Span:
    """A span as instrumented code sees it; this one records nothing."""

    __slots__ = ()

    def __enter__(self) -> Span:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def set(self, key: str, value: str | int | float | bool) -> None:
        return None


NOOP_SPAN = Span()


class Telemetry:
    """Telemetry that is off: every method does nothing. ``OtelTelemetry`` records."""

    on = False

    def span(self, name: str, attributes: Mapping[str, Any] | None = None) -> Span:
        """``with tel.span(name):`` a child of the current span for the block; an exception
        leaving the block is recorded on it with its class."""
        return NOOP_SPAN

    def begin(
        self, invocation: Invocation, function: Function, caller: Carrier, host: Carrier
    ) -> None:
        """Start ``invocation``'s span, continuing ``caller``'s trace or the host's, and make it
        current until ``end`` (called in the same task)."""

    def end(
        self,
        invocation: Invocation,
        function: Function,
        status: int | str,
        endpoint: str | None = None,
    ) -> None:
        """End the span; count the invocation and its duration by function, ``endpoint`` and
        ``status`` (an HTTP status, or a queue message's outcome)."""

    def batch(self, endpoint: str, waiting: Sequence[Waiting], size: int) -> Span:
        """The span of one model call for ``waiting`` requests (``size`` instances): a child of
        the first request's invocation, linked to the others."""
        return NOOP_SPAN

    def model_loaded(self, endpoint: str, version: str, report: Any) -> None:
        """Record a load (``report`` is its ``LoadReport``): duration and bytes as metrics,
        what was loaded and how on the current span (the load's)."""

    def shadow_compared(
        self, endpoint: str, live: str, shadow: str, rows: int, agreeing: int, difference: float
    ) -> None:
        """Count a shadowed request's rows (agreeing or not) and its largest difference."""

    def rolled_back(self, endpoint: str, version: str) -> None:
        """Count a canary the guardrails rolled back."""

    def payload_logged(self, endpoint: str, written: int, dropped: int) -> None:
        """Count an endpoint's payload-log records written to their files, and dropped (the
        buffer full: the destination slow or unreachable)."""

    def watch_models(self, resident: Callable[[], Mapping[str, int]], budget: int | None) -> None:
        """Report the models in memory (``resident()``: name -> bytes) against ``budget``."""

    def record_error(self, exc: BaseException) -> None:
        """Record ``exc`` on the current span (an error that became an answer, not a raise)."""

    def set(self, key: str, value: str | int | float | bool) -> None:
        """Set an attribute on the current invocation's span."""


OFF = Telemetry()
_current: Telemetry | None = None
_lock = threading.Lock()


def current() -> Telemetry:
    """The process's telemetry: configured on first use from the environment, then kept."""
    found = _current
    return found if found is not None else _configure()


def _configure() -> Telemetry:
    global _current
    from runtime.config.telemetry import wanted

    with _lock:
        if _current is None and not wanted():
            _current = OFF
        elif _current is None:
            from runtime.telemetry.setup import configure

            _current = configure()
        return _current


def start_in_background() -> None:
    """Configure telemetry in a thread now if its variables ask for it, so the first invocation
    does not wait for the SDK's imports (0.1 s for OTLP, 0.2 s for Azure Monitor)."""
    from runtime.config.telemetry import wanted

    if _current is None and wanted():
        threading.Thread(target=_configure, name="mlfn-telemetry", daemon=True).start()


def traceparent() -> str:
    """A ``traceparent`` for a message this process sends: the current span's when it is in a
    trace (mlfn's, or the producer's own OpenTelemetry), else a fresh trace's."""
    return _current_traceparent() or trace_context.fresh()


def _current_traceparent() -> str | None:
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:  # OpenTelemetry is not in use here: no span to continue, nothing imported
        return None
    found = trace.get_current_span().get_span_context()
    if not found.is_valid:
        return None
    return f"00-{found.trace_id:032x}-{found.span_id:016x}-{int(found.trace_flags):02x}"

"""Deadlines: when a request must be answered, read from the caller's header or the endpoint's
default (``Deadline.asked``), and the one cutoff that answers by it (``within``); the deadline
of the request a task or thread works for alone (``current_deadline``), which a run that gets
its slot late checks before it starts."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import math
import re
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from runtime.errors import BadRequest, DeadlineExceeded

T = TypeVar("T")


@dataclass(frozen=True)
class Deadline:
    """When a request must be answered (``time.monotonic()``), and the budget it was given."""

    at: float
    budget_ms: float

    @classmethod
    def after(cls, budget_ms: float, otherwise: float | None = None) -> Deadline:
        """``budget_ms`` from the request's arrival: when the host received it, where the
        host says (``arrived``), else ``otherwise`` (a ``time.monotonic()``), else now."""
        start = arrival()
        if start is None:
            start = time.monotonic() if otherwise is None else otherwise
        return cls(start + budget_ms / 1000, budget_ms)

    @classmethod
    def asked(cls, text: str | None, default_ms: float | None, name: str) -> Deadline | None:
        """A request's deadline from its arrival (``after``): ``text`` (its ``name`` header,
        milliseconds), else its endpoint's ``default_ms``, else none. Anything but a positive
        number of milliseconds is the caller's mistake, told by the header's name."""
        if text is None:
            return None if default_ms is None else cls.after(default_ms)
        # Plain decimal digits, as HTTP's own numbers are: not Python's float syntax (1_000,
        # 5e1, nan), nor another script's digits, which Python's float reads too.
        budget = float(text) if _DECIMAL.fullmatch(text.strip(" \t")) else math.nan
        if not 0 < budget <= MAX_BUDGET_MS:
            raise BadRequest(
                f"{name} must be a positive decimal number of milliseconds, at most a day "
                f"({MAX_BUDGET_MS:.0f}), not {text[:40]!a}",  # a header's bytes, as sent
                detail={"field": name},
            )
        return cls.after(budget)

    def passed(self) -> bool:
        return time.monotonic() >= self.at


MAX_BUDGET_MS = 86_400_000.0  # a day: a longer deadline is none, and overflows nothing
_DECIMAL = re.compile(r"[0-9]+(\.[0-9]*)?|\.[0-9]+")

# When the request the current task serves reached the process (``time.monotonic()``), where
# the host that received it says so: the local host does, from the first bytes of its head,
# so that a request that waited behind a busy event loop has that much less left. The
# Functions worker says nothing of it: on Azure a deadline starts when mlfn's function does.
_arrived: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "mlfn_arrived", default=None
)


def arrival() -> float | None:
    """When the request the current task or thread serves reached the process, where its host
    said so (``arrived``)."""
    return _arrived.get()


class arrived:  # a lower-case name: used as a function, ``with arrived(at):``
    """Within it, the request this task serves reached the process at ``at``. A class, not a
    generator's context manager, which costs several times as much: the host enters one for
    every request."""

    __slots__ = ("_at", "_token")

    def __init__(self, at: float) -> None:
        self._at = at

    def __enter__(self) -> None:
        self._token = _arrived.set(self._at)

    def __exit__(self, *exc: object) -> None:
        _arrived.reset(self._token)


# The deadline of the request a task or thread works for, where it has one to itself (not a
# batch's leader): a run that gets its slot after it has passed is not started.
_deadline: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "mlfn_deadline", default=None
)


def current_deadline() -> Deadline | None:
    return _deadline.get()


async def within(deadline: Deadline, work: Awaitable[T]) -> T:
    """``await work`` answered by ``deadline``: ``DeadlineExceeded`` at it, whatever is still
    going on (a request still in line leaves it), and for a result that came past it (a busy
    loop woke it late): never a late answer. Within a cutoff of the same deadline already (a
    request's, around the batcher's line), only ``await work``: the outer one answers by it."""
    if _deadline.get() is deadline:
        return await work
    left = deadline.at - time.monotonic()
    if left <= 0:
        if inspect.iscoroutine(work):
            work.close()
        raise DeadlineExceeded(deadline.budget_ms)
    token = _deadline.set(deadline)
    cutoff = asyncio.timeout(left)
    try:
        async with cutoff:
            result = await work
    except TimeoutError:
        if cutoff.expired():
            raise DeadlineExceeded(deadline.budget_ms) from None
        raise
    finally:
        _deadline.reset(token)
    if deadline.passed():
        raise DeadlineExceeded(deadline.budget_ms)
    return result

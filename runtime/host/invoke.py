"""Calling a user function the way the Python worker does: kwargs by binding name, a
``context`` when asked for, a fresh ``Out`` per output binding, sync functions on a thread pool
sized by ``PYTHON_THREADPOOL_THREAD_COUNT``, async ones on the event loop, and the invocation id
in ``context.thread_local_storage`` on the thread that runs the function."""

from __future__ import annotations

import asyncio
import functools
import os
import random
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func

from runtime.errors import FunctionTimedOut
from runtime.host.metadata import FunctionInfo

# Ids for every request the local host takes (an invocation's, a made-up trace's) come from
# Python's generator, not uuid.uuid4's os.urandom: a system call a request, three with the
# trace, each letting the GIL go and waiting to take it back, was 8 % of a busy host's loop
# (bench/NOTES.md, "Latency"). They name and correlate; nothing relies on their secrecy.
# A generator of the host's own: an app that seeds random would otherwise repeat the ids, and
# each request would move the app's sequence. Seeded anew in a forked child.
_ids = random.Random()
_bits = _ids.getrandbits
os.register_at_fork(after_in_child=_ids.seed)

# One for the process, as the worker has it: each thread sees the id of the invocation it runs.
_invocation_local = threading.local()


@dataclass(frozen=True)
class TraceContext:
    """W3C trace context. The host sends its activity's; the local host starts a trace per
    invocation."""

    trace_parent: str = field(default_factory=lambda: f"00-{_bits(128):032x}-{_bits(64):016x}-01")
    trace_state: str = ""
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RetryContext:
    """No retry policy runs locally: what the worker shows when the host sends none."""

    retry_count: int = 0
    max_retry_count: int = 0
    exception: Any = None


class Context(func.Context):
    def __init__(self, function_name: str, function_directory: str, invocation_id: str) -> None:
        self._name = function_name
        self._dir = function_directory
        self._id = invocation_id
        self._trace = TraceContext()
        self._retry = RetryContext()

    @property
    def invocation_id(self) -> str:
        return self._id

    @property
    def function_name(self) -> str:
        return self._name

    @property
    def function_directory(self) -> str:
        return self._dir

    @property
    def thread_local_storage(self) -> threading.local:  # type: ignore[override]  # azure.functions annotates type[local], the worker returns an instance
        return _invocation_local

    @property
    def trace_context(self) -> Any:
        return self._trace

    @property
    def retry_context(self) -> Any:
        return self._retry


def _run_sync(invocation_id: str, fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """A sync function on a pool thread, with the invocation id on that thread meanwhile."""
    _invocation_local.invocation_id = invocation_id
    try:
        return fn(**kwargs)
    finally:
        _invocation_local.invocation_id = None


def new_invocation_id() -> str:
    return str(uuid.UUID(int=_bits(128), version=4))


class Out(func.Out[Any]):
    def __init__(self) -> None:
        self._value: Any = None

    def set(self, val: Any) -> None:
        self._value = val

    def get(self) -> Any:
        return self._value


@dataclass(frozen=True)
class Invocation:
    """What a call produced: the return value and each output binding's value by name."""

    returned: Any
    outputs: dict[str, Any]


class Invoker:
    """Calls the app's functions. ``threads`` sizes the pool for sync functions (None:
    Python's default, min(32, cpus + 4), as the worker does when the setting is unset)."""

    def __init__(self, threads: int | None = None, timeout_s: float | None = None) -> None:
        self._timeout_s = timeout_s  # host.json functionTimeout
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="func")

    async def call(
        self, info: FunctionInfo, trigger_value: Any, invocation_id: str | None = None
    ) -> Invocation:
        """Run ``info``'s function once. ``invocation_id``: the id the caller logs the
        invocation under (a new one by default)."""
        kwargs: dict[str, Any] = {info.trigger.name: trigger_value}
        outs = {b.name: Out() for b in info.outputs if b.name != "$return"}
        kwargs.update(outs)
        invocation_id = invocation_id or new_invocation_id()
        if info.wants_context:
            kwargs["context"] = Context(info.name, info.directory, invocation_id)
        if info.is_async:
            # The loop's thread is shared: like the worker, set before each call (an async
            # function that awaits may find a later invocation's id there).
            _invocation_local.invocation_id = invocation_id
            running = info.fn(**kwargs)
        else:
            loop = asyncio.get_running_loop()
            call = functools.partial(_run_sync, invocation_id, info.fn, kwargs)
            running = loop.run_in_executor(self._pool, call)
        try:
            # A deadline on this task, not wait_for's task around the call (on Python 3.11):
            # resuming this one when that one ends is a turn of the loop, and a busy loop's
            # turn made answers late past their deadlines (bench/NOTES.md, "Latency").
            async with asyncio.timeout(self._timeout_s) as cutoff:
                returned = await running
        except TimeoutError:
            if not cutoff.expired():
                raise  # the function's own (a socket's, an SDK's): its failure, not the host's
            # As the host says it. A sync function's thread runs on (Python cannot stop it);
            # on Azure the host would restart the worker process.
            raise FunctionTimedOut(
                f"Timeout value of {self._timeout_s:g}s exceeded by function "
                f"'Functions.{info.name}'"
            ) from None
        if returned is not None and not any(b.name == "$return" for b in info.bindings):
            raise RuntimeError(
                f"function {info.name} returned a value but declares no $return binding"
            )
        return Invocation(returned, {name: out.get() for name, out in outs.items()})

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

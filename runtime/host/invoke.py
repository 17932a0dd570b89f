"""Calling a user function the way the Python worker does: kwargs by binding name, a
``context`` when asked for, a fresh ``Out`` per output binding, sync functions on a thread pool
sized by ``PYTHON_THREADPOOL_THREAD_COUNT``, async ones on the event loop."""

from __future__ import annotations

import asyncio
import functools
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import azure.functions as func

from runtime.host.metadata import FunctionInfo


class Context(func.Context):
    def __init__(self, function_name: str, function_directory: str) -> None:
        self._name = function_name
        self._dir = function_directory
        self._id = str(uuid.uuid4())
        self._tls = threading.local()

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
        return self._tls

    @property
    def trace_context(self) -> Any:
        return None

    @property
    def retry_context(self) -> Any:
        return None


class FunctionTimedOut(Exception):
    """An invocation ran past host.json's functionTimeout: it fails, as on Azure."""


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

    def __init__(
        self, function_directory: str, threads: int | None = None, timeout_s: float | None = None
    ) -> None:
        self._timeout_s = timeout_s  # host.json functionTimeout
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="func")
        self._dir = function_directory

    async def call(self, info: FunctionInfo, trigger_value: Any) -> Invocation:
        kwargs: dict[str, Any] = {info.trigger.name: trigger_value}
        outs = {b.name: Out() for b in info.outputs if b.name != "$return"}
        kwargs.update(outs)
        if info.wants_context:
            kwargs["context"] = Context(info.name, self._dir)
        if info.is_async:
            running = info.fn(**kwargs)
        else:
            loop = asyncio.get_running_loop()
            running = loop.run_in_executor(self._pool, functools.partial(info.fn, **kwargs))
        try:
            returned = await asyncio.wait_for(running, self._timeout_s)
        except TimeoutError:
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

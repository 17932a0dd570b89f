"""Whether a model could be served, for anonymous readiness probes: answered from what the
registry knows when it can, else from one store check a model at a time, remembered briefly.

Probes are anonymous and may come fast: they must never queue store calls, nor take the
threads that loads and predictions use (a hanging store would starve keyed requests)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

from runtime.errors import StoreUnavailable
from runtime.models.registry import ModelRegistry, ModelState

# A store's answer holds for the Retry-After a not-ready answer gives.
MEMORY_S = float(StoreUnavailable.retry_after_s)
# A probe waits this long for a store check in flight, then says "not ready": a store that
# hangs does not hang its probes.
WAIT_S = 2.0


class Readiness:
    """Per model: ready when loaded; not ready while a failed load of the store's is
    remembered; else the store is asked whether the file is there, by one check at a time on
    its own thread, whose answer is shared by every probe meanwhile and for ``memory_s``."""

    def __init__(
        self, registry: ModelRegistry, memory_s: float = MEMORY_S, wait_s: float = WAIT_S
    ) -> None:
        self._registry = registry
        self._memory_s = memory_s
        self._wait_s = wait_s
        self._lock = threading.Lock()
        self._checks: dict[str, Future[bool]] = {}
        self._known: dict[str, tuple[bool, float]] = {}

    async def ready(self, name: str, exists: Callable[[], object]) -> bool:
        """Whether ``name`` is loaded or its file is in the store; ``exists`` raises
        StoreUnavailable (ModelNotInStore included) when it is not."""
        if self._registry.state(name) is ModelState.READY:
            return True
        if self._registry.retry_in(name) > 0 and isinstance(
            self._registry.error(name), StoreUnavailable
        ):
            return False  # a load failed on the store just now: asking again tells nothing new
        check = self._check(name, exists)
        if isinstance(check, bool):
            return check
        try:
            # Not shielded: the future is running (set so below), so a probe that gives up
            # cancels only its own wait.
            return await asyncio.wait_for(asyncio.wrap_future(check), self._wait_s)
        except TimeoutError:
            return False

    def _check(self, name: str, exists: Callable[[], object]) -> bool | Future[bool]:
        """The remembered answer, or the check in flight, started if there is none."""
        with self._lock:
            known = self._known.get(name)
            if known is not None and time.monotonic() - known[1] < self._memory_s:
                return known[0]
            check = self._checks.get(name)
            if check is None:
                check = self._checks[name] = Future()
                check.set_running_or_notify_cancel()
                # A thread of its own (at most one a model), daemon: a store that never
                # answers holds neither the shared pool nor the process's exit.
                threading.Thread(
                    target=self._run, args=(name, exists, check), name="mlfn-ready", daemon=True
                ).start()
            return check

    def _run(self, name: str, exists: Callable[[], object], check: Future[bool]) -> None:
        try:
            exists()
            ready = True
        except StoreUnavailable:  # unreachable, or reached without the file (ModelNotInStore)
            ready = False
        except Exception as exc:  # an unexpected failure is said to the probes that wait
            with self._lock:
                self._checks.pop(name, None)
            check.set_exception(exc)
            return
        with self._lock:
            self._known[name] = (ready, time.monotonic())
            self._checks.pop(name, None)
        check.set_result(ready)

"""The local host as one ASGI app: HTTP functions served by ``HttpHost``, queue-triggered ones
run by listeners started and stopped through the ASGI lifespan, so every async function (and
the runtime's batchers) shares one event loop, as on the Python worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from runtime.host.http_server import HttpHost, Receive, Scope, Send
from runtime.host.metadata import FunctionInfo
from runtime.host.outages import RETRY_S, StorageOutages

log = logging.getLogger("mlfn.host")
RESTART_S = 5
MAX_RESTART_S = 60

DRAIN_S = 30.0


class Listener(Protocol):
    """A trigger the host runs itself: a queue's or a blob container's."""

    info: FunctionInfo
    setting: str  # the connection setting of its storage account
    address: str  # of the storage service it polls
    outages: StorageOutages  # shared by the listeners: an account down is said once

    @property
    def watches(self) -> str: ...

    async def run(self, stop: asyncio.Event) -> None: ...


class HostApp:
    def __init__(
        self,
        http: HttpHost,
        listeners: list[Listener],
        closers: list[Callable[[], None]],
        on_started: Callable[[], None] | None = None,
    ) -> None:
        self.http = http
        self.listeners = listeners
        self._closers = closers  # thread pools and the like, closed with the host
        self.on_started = on_started  # called once the host takes requests
        self._stop: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self.http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._stop = asyncio.Event()
                self._tasks = [
                    asyncio.create_task(self._guard(listener), name=listener.info.name)
                    for listener in self.listeners
                ]
                await send({"type": "lifespan.startup.complete"})
                log.info("host started")
                if self.on_started is not None:
                    self.on_started()
            elif message["type"] == "lifespan.shutdown":
                if self._stop is not None:
                    self._stop.set()
                if self._tasks:
                    # Stop fetching; let messages already running finish (within reason).
                    await asyncio.wait(self._tasks, timeout=DRAIN_S)
                for close in self._closers:
                    close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _guard(self, listener: Listener) -> None:
        assert self._stop is not None
        wait_s = RESTART_S
        while not self._stop.is_set():
            try:
                await listener.run(self._stop)
                wait_s = RESTART_S
            except Exception as exc:
                if listener.outages.failed(listener.setting, listener.address, exc):
                    # Unreachable or refusing: a setup step, not a crash, said once for all.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), RETRY_S)
                    continue
                log.exception(
                    "listener of %s failed; restarting in %ds", listener.info.name, wait_s
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), wait_s)
                wait_s = min(wait_s * 2, MAX_RESTART_S)

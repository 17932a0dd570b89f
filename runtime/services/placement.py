"""Where blocking work runs: on the event loop when it has proved shorter than a trip to a
worker thread and back, in a worker thread otherwise."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# A trip to a worker thread and back costs ~40 µs on the 2-core reference machine
# (bench/RESULTS.md); work shorter than a few of those is cheaper done in place, and blocks the
# loop no longer than parsing a small request body does.
INLINE_BELOW_S = 200e-6


class Placement:
    """Runs one kind of work (a model's runs, say) and learns what it costs per unit of size
    (instances, bytes): a moving average. Work runs in place only when its expected time is
    below ``inline_below_s``, and only when the caller allows it (a model load, which must
    never block the loop, is not allowed)."""

    def __init__(self, inline_below_s: float | None = None) -> None:
        self._limit = INLINE_BELOW_S if inline_below_s is None else inline_below_s
        self._per_unit_s: float | None = None

    def expected_s(self, size: int) -> float | None:
        return None if self._per_unit_s is None else self._per_unit_s * max(size, 1)

    async def run(self, fn: Callable[[], T], size: int, *, may_inline: bool = True) -> T:
        """Run ``fn`` on work of ``size`` units. ``may_inline`` False: it may block for long
        this time (a model load), so it runs in a thread and teaches nothing."""
        if not may_inline:
            return await asyncio.to_thread(fn)
        expected = self.expected_s(size)
        if expected is not None and expected < self._limit:
            return self._timed(fn, size)
        return await asyncio.to_thread(self._timed, fn, size)

    def _timed(self, fn: Callable[[], T], size: int) -> T:
        started = time.perf_counter()
        try:
            return fn()
        finally:
            per_unit = (time.perf_counter() - started) / max(size, 1)
            average = self._per_unit_s
            self._per_unit_s = per_unit if average is None else 0.8 * average + 0.2 * per_unit

"""Where blocking work runs: on the event loop when work of its size has proved shorter than a
trip to a worker thread and back, in a worker thread otherwise."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# A trip to a worker thread and back costs ~40 µs on the 2-core reference machine
# (bench/RESULTS.md); work shorter than a few of those is cheaper done in place, and blocks the
# loop no longer than parsing a small request body does.
INLINE_BELOW_S = 200e-6


class Placement:
    """Learns how long one kind of work (a model's runs, say) takes, per size class (sizes
    in powers of two: 1, 2-3, 4-7, ...), as a moving average of the runs that succeeded. Work
    of a size class measured below ``inline_below_s`` may run in place; the rest, and any size
    not measured yet, runs in a worker thread."""

    def __init__(self, inline_below_s: float | None = None) -> None:
        self._limit = INLINE_BELOW_S if inline_below_s is None else inline_below_s
        self._seconds: dict[int, float] = {}

    def fast(self, size: int) -> bool:
        """Work of ``size`` has proved shorter than the limit."""
        seconds = self._seconds.get(max(size, 1).bit_length())
        return seconds is not None and seconds < self._limit

    def timed(self, fn: Callable[[], T], size: int) -> T:
        """Run ``fn`` here and learn from its duration (not from a failure: a quick error says
        nothing about how long the work takes)."""
        started = time.perf_counter()
        result = fn()
        # A run stalled by something else (a collection, a descheduled process) counts as
        # twice the limit at most: one stall must not send a model's next runs to threads,
        # which slow them and are timed there, keeping the average up; runs that are slow
        # again and again still cross the limit in a few.
        took = min(time.perf_counter() - started, 2 * self._limit)
        key = max(size, 1).bit_length()
        average = self._seconds.get(key)
        self._seconds[key] = took if average is None else 0.8 * average + 0.2 * took
        return result

"""What the batcher learns of an endpoint's runs (``RunTimes``: a line through their times by
batch size), and how long bulk work rests beside interactive requests (``bulk_rest``)."""

from __future__ import annotations

import threading
import time

# While interactive requests came within RECENT_S, bulk work rests after each of its runs
# BULK_REST times as long as the run took, and up to BULK_REST_BUSY times more by the share of
# that time requests were in flight in mlfn's function (``Busy``): a quarter of the time is
# left to bulk work beside occasional requests, about a fifteenth beside requests one after
# another (in flight about half the time: the host's parsing and answers are the rest), whose
# runs, parsing and answers would otherwise queue for a core (and the GIL) behind the bulk
# work's threads (bench/NOTES.md, "Latency": an HTTP p99 beside a 400,000-row file).
RECENT_S = 0.5
BULK_REST = 3.0
BULK_REST_BUSY = 24.0


def bulk_rest(ran_s: float, interactive_at: float, busy: float = 0.0) -> float:
    """How long bulk work that ran ``ran_s`` rests, the last interactive request having come
    at ``interactive_at`` (a ``time.monotonic()``), interactive requests in flight for the
    ``busy`` share of the recent time."""
    if time.monotonic() - interactive_at >= RECENT_S:
        return 0.0
    return ran_s * (BULK_REST + BULK_REST_BUSY * min(busy, 1.0))


class Busy:
    """How busy an endpoint's interactive requests keep it: the seconds they were in flight
    (``seconds``, added to by their callers, with no call: the warm HTTP path crosses no
    module for it; predict requests to every version of the endpoint, and V2's to its own
    model) and, per window of at least RECENT_S, their share of it (``share``: it passes 1
    when several are at once). Bulk work asks for the share after each of its runs, on its
    own thread; the loop adds, an elapsed time computed first: a float's ``+=`` then runs no
    call, where another thread could end the window between its read and its write."""

    __slots__ = ("_at", "_lock", "_share", "seconds")

    def __init__(self) -> None:
        self.seconds = 0.0
        self._at = time.monotonic()
        self._share = 0.0
        self._lock = threading.Lock()  # one bulk thread ends a window

    def share(self) -> float:
        now = time.monotonic()
        if now - self._at >= RECENT_S:
            with self._lock:
                span = now - self._at
                if span >= RECENT_S:
                    self._share = self.seconds / span
                    self.seconds, self._at = 0.0, now
        return self._share


class RunTimes:
    """How long a run of ``n`` instances takes: ``a·n + b``, the line through the recent run
    times of each batch size seen (sizes by powers of two, each a moving average), as BentoML's
    adaptive batching fits its dispatcher. One size seen alone says nothing of the slope, so
    until a second is seen every size is expected to take as long (batching free until shown
    otherwise): an estimate that errs towards waiting and taking work, which deadlines bound,
    never towards shedding what could have been served. The time counted is the caller's: a
    thread's hop and the wait for the GIL included."""

    __slots__ = ("_learnt", "_line", "_runs", "_sizes")

    def __init__(self) -> None:
        self._sizes: dict[int, tuple[float, float]] = {}  # size class -> (mean n, mean s)
        self._runs = 0
        # (a, b), fitted on the first ``expect`` after a ``learn``: every request that a
        # target may shed asks, several times, and under overload most requests are shed.
        self._line: tuple[float, float] | None = None
        self._learnt = 0  # learns and forgets so far: a fit made meanwhile is not kept

    def learn(self, n: int, seconds: float) -> None:
        key = max(n, 1).bit_length()
        found = self._sizes.get(key)
        self._sizes[key] = (
            (n, seconds)
            if found is None
            else (0.8 * found[0] + 0.2 * n, 0.8 * found[1] + 0.2 * seconds)
        )
        self._runs += 1
        self._learnt += 1
        self._line = None

    def forget(self) -> None:
        """Learn again from the next runs, as at the start (what was learnt is stale)."""
        self._sizes.clear()
        self._runs = 0
        self._learnt += 1
        self._line = None

    def expect(self, n: int) -> float | None:
        """Seconds a run of ``n`` should take; None before a few runs were seen."""
        if self._runs < 3:
            return None
        line = self._line
        if line is None:
            # Runs are learnt on worker threads while the loop asks: a fit that a learn
            # overtook is used once, not kept.
            learnt = self._learnt
            line = self._fit()
            if learnt == self._learnt:
                self._line = line
        return line[0] * n + line[1]

    def _fit(self) -> tuple[float, float]:
        points = list(self._sizes.values())
        if len(points) == 1:
            return 0.0, points[0][1]
        k = len(points)
        mean_n = sum(p[0] for p in points) / k
        mean_t = sum(p[1] for p in points) / k
        spread = sum((p[0] - mean_n) ** 2 for p in points)
        a = max(sum((p[0] - mean_n) * (p[1] - mean_t) for p in points) / spread, 0.0)
        b = max(mean_t - a * mean_n, 0.0)
        return a, b

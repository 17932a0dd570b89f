"""Guardrails: each version's requests over a sliding window on this instance, and the verdict
that rolls a canary back. Every instance judges what it saw itself; the rollback is one
conditional write of the release document (``rollback``), so the first instance to judge wins
and the others find it done."""

from __future__ import annotations

import datetime
import logging
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from runtime.errors import StoreConflict
from runtime.model_store import ModelSource
from runtime.releases import edits
from runtime.releases.document import Guardrails, Release, RolledBack
from runtime.releases.stored import read_release

log = logging.getLogger("mlfn.releases")

# Requests remembered per version: a bound on memory, and on the judging's sort on the event loop
# (about a millisecond a second), whatever the rate; a busy version is judged on its latest.
MAX_KEPT = 10_000


@dataclass(frozen=True)
class Summary:
    requests: int
    errors: int
    p99_s: float

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


class Figures:
    """One version's requests (when, whether it failed, how long it took) over a window."""

    __slots__ = ("_kept", "window_s")

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._kept: deque[tuple[float, bool, float]] = deque(maxlen=MAX_KEPT)

    def record(self, now: float, failed: bool, seconds: float) -> None:
        self._kept.append((now, failed, seconds))

    def summary(self, now: float) -> Summary:
        kept, since = self._kept, now - self.window_s
        while kept and kept[0][0] < since:
            kept.popleft()
        if not kept:
            return Summary(0, 0, 0.0)
        # The latency of answers: a failure's (a traceback logged, say) is the error rate's.
        latencies = sorted(seconds for _, failed, seconds in kept if not failed)
        p99 = latencies[math.ceil(0.99 * len(latencies)) - 1] if latencies else 0.0
        return Summary(len(kept), sum(1 for _, failed, _ in kept if failed), p99)


def verdict(release: Release, seen: Mapping[str, Summary]) -> tuple[str, str] | None:
    """The canary to roll back and why, or None: a live version other than the stable one
    whose error rate or p99 (over enough requests) the guardrails refuse."""
    rails = release.guardrails
    if rails is None:
        return None
    stable = seen.get(release.stable, Summary(0, 0, 0.0))
    for label, _ in release.live:
        if label == release.stable:
            continue
        canary = seen.get(label, Summary(0, 0, 0.0))
        why = _refused(rails, canary, stable)
        if why is not None:
            return label, why
    return None


def _refused(rails: Guardrails, canary: Summary, stable: Summary) -> str | None:
    if canary.requests < rails.min_requests:
        return None
    enough = stable.requests >= rails.min_requests  # else the canary is judged on its own
    base = stable.error_rate if enough else 0.0
    if canary.error_rate > base + rails.max_error_rate_increase:
        return (
            f"error rate {canary.error_rate:.1%} over {canary.requests} requests against "
            f"{base:.1%} for the stable version (allowed: +{rails.max_error_rate_increase:.1%})"
        )
    slower = canary.p99_s - stable.p99_s > rails.min_p99_increase_ms / 1000
    if enough and slower and canary.p99_s > rails.max_p99_ratio * stable.p99_s > 0:
        return (
            f"p99 latency {canary.p99_s * 1e3:.1f} ms against {stable.p99_s * 1e3:.1f} ms for the "
            f"stable version (allowed: {rails.max_p99_ratio:g}x)"
        )
    return None


def rollback(source: ModelSource, canary: str, reason: str, endpoint: str) -> bool:
    """Take every request from ``canary`` back to the stable version by a conditional write
    of the document; False if the document no longer sends it traffic (another instance, or
    a person, got there first). A write that loses a race reads and decides again."""
    for _ in range(5):
        release, etag = read_release(source)
        if release is None or release.weights.get(canary, 0) <= 0 or canary == release.stable:
            return False
        at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        rolled = edits.rollback(release, RolledBack(canary, reason, at))
        try:
            source.write(rolled.to_json(), if_match=etag)
        except StoreConflict:
            continue
        log.warning("release of %s rolled back from %s: %s", endpoint, canary, reason)
        return True
    return False

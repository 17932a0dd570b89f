"""A shadow version's answers beside the live ones: compared row by row (labels and other text,
whole numbers and booleans must be equal; floats may differ, the largest difference is kept),
and tallied per endpoint into one log line a period."""

from __future__ import annotations

import json
import logging
import math
import operator
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from runtime import telemetry

log = logging.getLogger("mlfn.releases")

REPORT_EVERY_S = 30.0


@dataclass(frozen=True)
class Compared:
    rows: int
    agreeing: int
    max_difference: float


def compare(live: Sequence[bytes], shadow: Sequence[bytes]) -> Compared:
    """Each row's prediction (JSON, as the response holds it) from the live and the shadow
    version: how many agree, and the largest difference between their floats."""
    if len(live) != len(shadow):
        raise ValueError(f"{len(live)} live predictions against {len(shadow)} shadowed")
    differing = [i for i, (a, b) in enumerate(zip(live, shadow, strict=True)) if a != b]
    if not differing:  # the same bytes (a label-only output, mostly): nothing to parse
        return Compared(len(live), len(live), 0.0)
    # One parse of the differing rows each side: a parse call per row costs more.
    a_rows, b_rows = _rows([live[i] for i in differing]), _rows([shadow[i] for i in differing])
    agreeing, largest = len(live) - len(differing), 0.0
    for a, b in zip(a_rows, b_rows, strict=True):
        same, difference = _compare(a, b)
        agreeing += same
        largest = max(largest, difference)
    return Compared(len(live), agreeing, largest)


def _rows(predictions: Sequence[bytes]) -> list[Any]:
    rows: list[Any] = json.loads(b"[" + b",".join(predictions) + b"]")
    return rows


def _compare(a: Any, b: Any) -> tuple[bool, float]:
    if type(a) is list and type(b) is list and len(a) == len(b) and _floats(a) and _floats(b):
        # A tensor's row: the largest difference in C, not a call per value.
        differences = list(map(abs, map(operator.sub, a, b)))
        if any(map(math.isnan, differences)):
            return all(map(math.isnan, a)) == all(map(math.isnan, b)), 0.0
        return True, max(differences, default=0.0)
    if isinstance(a, float) or isinstance(b, float):
        if not _number(a) or not _number(b):
            return False, 0.0
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b), 0.0
        return True, abs(a - b)
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return False, 0.0
        return _all(_compare(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return False, 0.0
        return _all(_compare(x, y) for x, y in zip(a, b, strict=True))
    return a == b and type(a) is type(b), 0.0


def _floats(values: list[Any]) -> bool:
    return all(type(v) is float for v in values)


def _all(pairs: Any) -> tuple[bool, float]:
    same, largest = True, 0.0
    for ok, difference in pairs:
        same = same and ok
        largest = max(largest, difference)
    return same, largest


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class Tally:
    """What one endpoint's shadow compared (and could not) since the last report; a report
    (one log line) every ``REPORT_EVERY_S`` seconds while shadows run, and on demand."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._lock = threading.Lock()
        self._since = time.monotonic()
        self._reset()
        self.total = Compared(0, 0, 0.0)  # since the process started, for tests and tools

    def _reset(self) -> None:
        self.rows = self.agreeing = self.failed = self.skipped = 0
        self.max_difference = 0.0

    def add(self, live: str, shadow: str, compared: Compared) -> None:
        telemetry.current().shadow_compared(
            self.endpoint, live, shadow, compared.rows, compared.agreeing, compared.max_difference
        )
        with self._lock:
            self.rows += compared.rows
            self.agreeing += compared.agreeing
            self.max_difference = max(self.max_difference, compared.max_difference)
            t = self.total
            self.total = Compared(
                t.rows + compared.rows,
                t.agreeing + compared.agreeing,
                max(t.max_difference, compared.max_difference),
            )
        self._report_if_due(live, shadow)

    def fail(self, live: str, shadow: str, exc: BaseException) -> None:
        with self._lock:
            first = self.failed == 0
            self.failed += 1
        if first:
            log.warning("shadow %s of %s failed: %s", shadow, self.endpoint, exc)
        self._report_if_due(live, shadow)

    def skip(self) -> None:
        with self._lock:
            self.skipped += 1

    def _report_if_due(self, live: str, shadow: str) -> None:
        now = time.monotonic()
        if now - self._since < REPORT_EVERY_S:
            return
        self.report(live, shadow, now)

    def report(self, live: str, shadow: str, now: float | None = None) -> None:
        with self._lock:
            rows, agreeing, largest = self.rows, self.agreeing, self.max_difference
            failed, skipped = self.failed, self.skipped
            self._reset()
            self._since = now if now is not None else time.monotonic()
        if not (rows or failed or skipped):
            return
        share = f"{agreeing / rows:.2%}" if rows else "-"
        log.info(
            "shadow of %s: %s beside %s, rows=%d agreement=%s max_difference=%.6g failed=%d "
            "skipped_busy=%d",
            self.endpoint, shadow, live, rows, share, largest, failed, skipped,
        )  # fmt: skip

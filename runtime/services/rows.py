"""Rows: many independent rows (a file's, a Spark partition's), each with its own outcome: its
prediction, or the error that row alone caused. A bad row never fails the rows beside it.

Rows are validated one by one only when a chunk holds an invalid one, and the valid rows are
scored together through the predict service: on an event loop through its batcher, in line with
HTTP and queue requests but in runs of their own (a failure is halved here, once, never first
run again alone by the batcher); on the calling thread where there is none. A failure every row
would meet (the store unreachable, the model file refused, a predict function that fails on
every row) is raised, so the caller fails or retries the whole work instead of writing an error
for every row. Rows fewer than a handful that all fail alone are each that row's error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from runtime.endpoint import BoundEndpoint
from runtime.errors import MlfnError
from runtime.scheduling import finished
from runtime.scored import ModelInfo, Scored
from runtime.services.halving import Part, outcomes
from runtime.services.predict import PredictService


@dataclass(frozen=True, slots=True)
class Row:
    """One row's outcome: its prediction (JSON, by the output schema's aliases) or its error."""

    prediction: bytes | None = None
    error: MlfnError | None = None


@dataclass(frozen=True)
class ScoredRows:
    rows: list[Row]
    model: ModelInfo | None  # None when no row got as far as the model

    @property
    def errors(self) -> int:
        return sum(1 for r in self.rows if r.error is not None)


class RowService:
    def __init__(self, predict: PredictService) -> None:
        self._predict = predict

    def endpoint(self, name: str) -> BoundEndpoint:
        return self._predict.endpoint(name)

    def max_batch_size(self, name: str) -> int:
        """How many rows a caller should hand in at once: the endpoint's batch size."""
        return self._predict.endpoint(name).endpoint.limits.max_batch_size

    async def score(self, name: str, raw: Sequence[Any]) -> ScoredRows:
        """Score rows as decoded from a file; call from the event loop."""
        checked = await asyncio.to_thread(self._predict.validate_each, name, raw)

        async def call(instances: list[BaseModel]) -> Part:
            return _part(await self._predict.predict_valid(name, instances))

        return await _scored(checked, call)

    def score_sync(self, name: str, raw: Sequence[Any]) -> ScoredRows:
        """Score rows on this thread, which runs no event loop (a Spark worker, say)."""
        checked = self._predict.validate_each(name, raw)

        async def call(instances: list[BaseModel]) -> Part:  # never waits
            return _part(self._predict.predict_valid_sync(name, instances))

        return finished(_scored(checked, call))


async def _scored(
    checked: Sequence[BaseModel | MlfnError], call: Callable[[list[BaseModel]], Awaitable[Part]]
) -> ScoredRows:
    """The valid rows of ``checked`` scored by ``call``, halved down to the rows predict fails
    on (``halving``); for both shells, awaited or run to its end on a thread."""
    valid = _valid(checked)
    if not valid:
        return _errors_only(checked)
    results, model = await outcomes([m for _, m in valid], call)
    return _join_outcomes(checked, valid, results, model)


def _part(scored: Scored) -> Part:
    return Part(scored.predictions, scored.model)


def _valid(checked: Sequence[BaseModel | MlfnError]) -> list[tuple[int, BaseModel]]:
    return [(i, m) for i, m in enumerate(checked) if not isinstance(m, MlfnError)]


def _errors_only(checked: Sequence[BaseModel | MlfnError]) -> ScoredRows:
    return ScoredRows([Row(error=c) for c in checked if isinstance(c, MlfnError)], None)


def _join_outcomes(
    checked: Sequence[BaseModel | MlfnError],
    valid: list[tuple[int, BaseModel]],
    outcomes: list[bytes | MlfnError],
    model: ModelInfo | None,
) -> ScoredRows:
    rows = [Row(error=c) if isinstance(c, MlfnError) else Row() for c in checked]
    for (i, _), outcome in zip(valid, outcomes, strict=True):
        rows[i] = Row(error=outcome) if isinstance(outcome, MlfnError) else Row(outcome)
    return ScoredRows(rows, model)

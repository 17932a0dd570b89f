"""Rows: many independent rows (a file's, a Spark partition's), each with its own outcome: its
prediction, or the error that row alone caused. A bad row never fails the rows beside it.

Rows are validated one by one only when a chunk holds an invalid one, and the valid rows are
scored together through the predict service (micro-batched with HTTP and queue requests on an
event loop; on the calling thread where there is none). A failure every row would meet (the
store unreachable, the model file refused) is raised, so the caller fails or retries the whole
work instead of writing an error for every row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from runtime.endpoint import BoundEndpoint
from runtime.errors import MlfnError, PredictContractError, PredictFailed
from runtime.scored import ModelInfo, Scored
from runtime.services.predict import PredictService

# The faults of one row's values, not of the model or the store: another row may score.
ROW_FAULTS = (PredictFailed, PredictContractError)


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
        import asyncio

        checked = await asyncio.to_thread(self._predict.validate_each, name, raw)
        valid = _valid(checked)
        if not valid:
            return _join(checked, None)
        try:
            scored = await self._predict.predict_valid(name, [m for _, m in valid])
        except ROW_FAULTS:
            # Which rows? Each alone: costs a model call a row, and only when predict fails.
            singles = [await self._alone(name, m) for _, m in valid]
            return _join_singles(checked, valid, singles)
        return _join(checked, scored)

    def score_sync(self, name: str, raw: Sequence[Any]) -> ScoredRows:
        """Score rows on this thread, which runs no event loop (a Spark worker, say)."""
        checked = self._predict.validate_each(name, raw)
        valid = _valid(checked)
        if not valid:
            return _join(checked, None)
        try:
            scored = self._predict.predict_valid_sync(name, [m for _, m in valid])
        except ROW_FAULTS:
            singles = [self._alone_sync(name, m) for _, m in valid]
            return _join_singles(checked, valid, singles)
        return _join(checked, scored)

    async def _alone(self, name: str, instance: BaseModel) -> Scored | MlfnError:
        try:
            return await self._predict.predict_valid(name, [instance])
        except ROW_FAULTS as err:
            return err

    def _alone_sync(self, name: str, instance: BaseModel) -> Scored | MlfnError:
        try:
            return self._predict.predict_valid_sync(name, [instance])
        except ROW_FAULTS as err:
            return err


def _valid(checked: Sequence[BaseModel | MlfnError]) -> list[tuple[int, BaseModel]]:
    return [(i, m) for i, m in enumerate(checked) if not isinstance(m, MlfnError)]


def _join(checked: Sequence[BaseModel | MlfnError], scored: Scored | None) -> ScoredRows:
    predictions = iter(scored.predictions if scored else ())
    rows = [Row(error=c) if isinstance(c, MlfnError) else Row(next(predictions)) for c in checked]
    return ScoredRows(rows, scored.model if scored else None)


def _join_singles(
    checked: Sequence[BaseModel | MlfnError],
    valid: list[tuple[int, BaseModel]],
    singles: list[Scored | MlfnError],
) -> ScoredRows:
    rows = [Row(error=c) if isinstance(c, MlfnError) else Row() for c in checked]
    model = None
    for (i, _), single in zip(valid, singles, strict=True):
        if isinstance(single, MlfnError):
            rows[i] = Row(error=single)
        else:
            rows[i], model = Row(single.predictions[0]), single.model
    return ScoredRows(rows, model)

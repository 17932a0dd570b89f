"""Rows: many independent rows (a file's, a Spark partition's), each with its own outcome: its
prediction, or the error that row alone caused. A bad row never fails the rows beside it.

Rows are validated one by one only when a chunk holds an invalid one, and the valid rows are
scored together through the predict service (micro-batched with HTTP and queue requests on an
event loop; on the calling thread where there is none). A failure every row would meet (the
store unreachable, the model file refused, a predict function that fails on every row) is
raised, so the caller fails or retries the whole work instead of writing an error for every
row. Rows fewer than a handful that all fail alone are each that row's error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from runtime.endpoint import BoundEndpoint
from runtime.errors import MlfnError, PredictContractError, PredictFailed
from runtime.scored import ModelInfo
from runtime.services.predict import PredictService

# The faults of one row's values, not of the model or the store: another row may score.
ROW_FAULTS = (PredictFailed, PredictContractError)
# When predict fails on rows, this many of them spread over the rows are tried alone first: if
# none scores, predict is taken to fail on everything (a bug, a model it cannot use) and that is
# raised, at the cost of a few calls instead of halving down to an error (and a logged
# traceback) for every row. Fewer rows than this are always halved: they may all be bad rows.
FAILS_EVERYWHERE_AT = 8


Outcomes = tuple[list[bytes | MlfnError], ModelInfo | None]


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
            return _errors_only(checked)
        outcomes, model = await self._halves(name, [m for _, m in valid])
        return _join_outcomes(checked, valid, outcomes, model)

    def score_sync(self, name: str, raw: Sequence[Any]) -> ScoredRows:
        """Score rows on this thread, which runs no event loop (a Spark worker, say)."""
        checked = self._predict.validate_each(name, raw)
        valid = _valid(checked)
        if not valid:
            return _errors_only(checked)
        outcomes, model = self._halves_sync(name, [m for _, m in valid])
        return _join_outcomes(checked, valid, outcomes, model)

    async def _halves(self, name: str, instances: list[BaseModel], top: bool = True) -> Outcomes:
        """The rows' predictions; when predict fails on them, each half scored on its own,
        down to the rows that fail alone (a few model calls for one bad row among many),
        unless predict fails on every row: ``FAILS_EVERYWHERE_AT`` rows spread over them
        fail alone too. That is raised, not written as an error for every row."""
        try:
            scored = await self._predict.predict_valid(name, instances)
            return list(scored.predictions), scored.model
        except ROW_FAULTS as err:
            if len(instances) == 1:
                return [err], None
            if top and await self._fails_everywhere(name, instances):
                raise
            half = len(instances) // 2
            first, model = await self._halves(name, instances[:half], False)
            second, later = await self._halves(name, instances[half:], False)
            return first + second, model or later

    async def _fails_everywhere(self, name: str, instances: list[BaseModel]) -> bool:
        probes = _probes(instances)
        for probe in probes:
            try:
                await self._predict.predict_valid(name, [probe])
                return False
            except ROW_FAULTS:
                pass
        return bool(probes)

    def _halves_sync(self, name: str, instances: list[BaseModel], top: bool = True) -> Outcomes:
        try:
            scored = self._predict.predict_valid_sync(name, instances)
            return list(scored.predictions), scored.model
        except ROW_FAULTS as err:
            if len(instances) == 1:
                return [err], None
            if top and self._fails_everywhere_sync(name, instances):
                raise
            half = len(instances) // 2
            first, model = self._halves_sync(name, instances[:half], False)
            second, later = self._halves_sync(name, instances[half:], False)
            return first + second, model or later

    def _fails_everywhere_sync(self, name: str, instances: list[BaseModel]) -> bool:
        probes = _probes(instances)
        for probe in probes:
            try:
                self._predict.predict_valid_sync(name, [probe])
                return False
            except ROW_FAULTS:
                pass
        return bool(probes)


def _probes(instances: list[BaseModel]) -> list[BaseModel]:
    """``FAILS_EVERYWHERE_AT`` rows spread evenly over ``instances``, its ends included; none
    for fewer rows (they are halved whatever)."""
    n, k = len(instances), FAILS_EVERYWHERE_AT
    if n < k:
        return []
    return [instances[round(i * (n - 1) / (k - 1))] for i in range(k)]


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

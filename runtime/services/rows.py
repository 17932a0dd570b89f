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

import random
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from runtime.endpoint import BoundEndpoint
from runtime.errors import MlfnError, PredictContractError, PredictFailed
from runtime.scored import ModelInfo, Scored
from runtime.services.predict import PredictService

# The faults of one row's values, not of the model or the store: another row may score.
ROW_FAULTS = (PredictFailed, PredictContractError)
# When predict fails on rows, this many of them, drawn at random, are tried alone first: if
# none scores, predict is taken to fail on everything (a bug, a model it cannot use) and that is
# raised, at the cost of a few calls instead of halving down to an error (and a logged
# traceback) for every row. Fewer rows than this are always halved: they may all be bad rows.
FAILS_EVERYWHERE_AT = 8
Outcomes = tuple[list[bytes | MlfnError], ModelInfo | None]
# The predict calls that score rows are decided once (``_scoring``) for the two shells that
# make them (``score`` awaits the batcher, ``score_sync`` runs on a thread with no loop): each
# step yields the rows to call predict on and is sent that call's answer, its predictions or
# the row fault it raised.
Answer = Scored | PredictFailed | PredictContractError
Steps = Generator[list[BaseModel], Answer, Outcomes]


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
        steps = _scoring([m for _, m in valid])
        calls = next(steps)
        while True:
            try:
                answer: Answer = await self._predict.predict_valid(name, calls)
            except ROW_FAULTS as err:
                answer = err
            try:
                calls = steps.send(answer)
            except StopIteration as done:
                return _join_outcomes(checked, valid, *done.value)

    def score_sync(self, name: str, raw: Sequence[Any]) -> ScoredRows:
        """Score rows on this thread, which runs no event loop (a Spark worker, say)."""
        checked = self._predict.validate_each(name, raw)
        valid = _valid(checked)
        if not valid:
            return _errors_only(checked)
        steps = _scoring([m for _, m in valid])
        calls = next(steps)
        while True:
            try:
                answer: Answer = self._predict.predict_valid_sync(name, calls)
            except ROW_FAULTS as err:
                answer = err
            try:
                calls = steps.send(answer)
            except StopIteration as done:
                return _join_outcomes(checked, valid, *done.value)


# Why the probes are drawn at random. Whether predict fails on everything or only on some rows
# is told by rows tried alone. Rows at fixed places (the ends, an even spread) let whoever
# writes a file's rows put bad ones exactly there: eight rows sank a whole file. Drawn from the
# system's randomness, the probes are a sample whichever rows are bad: all of them fail alone
# only when most of the rows do (eight bad rows of 1,024: about 1 in 10^19; half the rows bad:
# 1 in 256). The cost of that: rows that nearly all fail alone cannot be told from a broken
# predict without a call for each, the very cost the probes avoid (2n - 1 failed calls, each
# a logged traceback, for a bug or a model predict cannot use); such rows fail the call as a
# broken predict does. A broken predict costs 1 + FAILS_EVERYWHERE_AT calls a chunk.
_random = random.SystemRandom()


def _scoring(instances: list[BaseModel]) -> Steps:
    """The rows' predictions; when predict fails on them, each half scored on its own, down
    to the rows that fail alone (a few model calls for one bad row among many), unless
    predict fails on every row: ``FAILS_EVERYWHERE_AT`` rows drawn at random fail alone
    too. That is raised, not written as an error for every row."""
    answer = yield instances
    if not isinstance(answer, ROW_FAULTS):
        return list(answer.predictions), answer.model
    probes = _probes(instances)
    for probe in probes:
        if not isinstance((yield [probe]), ROW_FAULTS):
            break
    else:
        if probes:
            raise answer
    return (yield from _halves(instances, answer))


def _halves(instances: list[BaseModel], failed: PredictFailed | PredictContractError) -> Steps:
    """After ``instances`` failed together with ``failed``: each half on its own."""
    if len(instances) == 1:
        return [failed], None
    half = len(instances) // 2
    first, model = yield from _part(instances[:half])
    second, later = yield from _part(instances[half:])
    return first + second, model or later


def _part(instances: list[BaseModel]) -> Steps:
    answer = yield instances
    if isinstance(answer, ROW_FAULTS):
        return (yield from _halves(instances, answer))
    return list(answer.predictions), answer.model


def _probes(instances: list[BaseModel]) -> list[BaseModel]:
    """``FAILS_EVERYWHERE_AT`` of ``instances`` drawn at random; none for fewer rows (they
    are halved whatever)."""
    if len(instances) < FAILS_EVERYWHERE_AT:
        return []
    return _random.sample(instances, FAILS_EVERYWHERE_AT)


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

"""Which predict calls score many independent rows when a call fails on some of them: each half
on its own, down to the rows that fail alone, unless predict fails on every row.

The calls are decided here, once (``scoring``: a step yields the items to call predict on and is
sent that call's answer, its per-item results or the row fault it raised), and made by one
driver (``outcomes``), handed the call: the rows service's awaits the batcher, or runs predict
on a thread with no event loop; the columns service's runs predict on a thread. Items are
whatever the caller scores: validated instances, or row indices.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import Any, TypeVar

from runtime.errors import ModelInputRefused, PredictContractError, PredictFailed
from runtime.scored import ModelInfo

T = TypeVar("T")

# The faults of one row's values, not of the model or the store: another row may score.
ROW_FAULTS = (PredictFailed, PredictContractError, ModelInputRefused)
RowFault = PredictFailed | PredictContractError | ModelInputRefused
# When predict fails on rows, this many of them, drawn at random, are tried alone first: if
# none scores, predict is taken to fail on everything (a bug, a model it cannot use) and that is
# raised, at the cost of a few calls instead of halving down to an error (and a logged
# traceback) for every row. Fewer rows than this are always halved: they may all be bad rows.
FAILS_EVERYWHERE_AT = 8


class Part:
    """What one call answered: a result per item, and the model that made them."""

    __slots__ = ("model", "results")

    def __init__(self, results: Sequence[Any], model: ModelInfo | None) -> None:
        self.results = results
        self.model = model


# Each item's result (a prediction, in whatever form the shell made it) or its error.
Steps = Generator[list[T], "Part | RowFault", tuple[list[Any], ModelInfo | None]]

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


def scoring(items: list[T]) -> Steps[T]:
    """The items' results; when predict fails on them, each half scored on its own, down to
    the items that fail alone (a few model calls for one bad row among many), unless predict
    fails on every item: ``FAILS_EVERYWHERE_AT`` items drawn at random fail alone too. That
    is raised, not written as an error for every row."""
    answer = yield items
    if not isinstance(answer, ROW_FAULTS):
        return list(answer.results), answer.model
    probes = _probes(items)
    for probe in probes:
        if not isinstance((yield [probe]), ROW_FAULTS):
            break
    else:
        if probes:
            raise answer
    return (yield from _halves(items, answer))


async def outcomes(
    items: list[T],
    call: Callable[[list[T]], Awaitable[Part]],
    failed: RowFault | None = None,
) -> tuple[list[Any], ModelInfo | None]:
    """Each item's result or error, and the model that made the results: ``scoring``'s calls,
    each made by ``call``, which answers with a ``Part`` or raises a row fault. A caller
    without an event loop hands a call that never waits and runs this to its end with
    ``placement.finished``. ``failed``: the fault a call on all ``items`` raised already (that
    call is not made again)."""
    steps = scoring(items)
    calls = next(steps)
    answer: Part | RowFault | None = failed
    while True:
        if answer is None:
            try:
                answer = await call(calls)
            except ROW_FAULTS as fault:
                answer = fault
        try:
            calls = steps.send(answer)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        answer = None


def _halves(items: list[T], failed: RowFault) -> Steps[T]:
    """After ``items`` failed together with ``failed``: each half on its own."""
    if len(items) == 1:
        return [failed], None
    half = len(items) // 2
    first, model = yield from _part(items[:half])
    second, later = yield from _part(items[half:])
    return first + second, model or later


def _part(items: list[T]) -> Steps[T]:
    answer = yield items
    if isinstance(answer, ROW_FAULTS):
        return (yield from _halves(items, answer))
    return list(answer.results), answer.model


def _probes(items: list[T]) -> list[T]:
    """``FAILS_EVERYWHERE_AT`` of ``items`` drawn at random; none for fewer (they are halved
    whatever)."""
    if len(items) < FAILS_EVERYWHERE_AT:
        return []
    return _random.sample(items, FAILS_EVERYWHERE_AT)

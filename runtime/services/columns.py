"""Columns: many independent rows as Arrow columns (a Spark batch, a file's slab), each row with
its own outcome, scored without a Python object per valid row.

The endpoint's input model is compiled once into column checks (``runtime.columnar``); the rows
the checks do not pass are validated by pydantic one by one, so each failing row gets the row
path's own error. The valid rows are scored in chunks of the batch size by the endpoint's
columnar predict, and its output columns are checked against the output model the same way.
A predict that fails on some rows is halved down to them (``runtime.services.halving``), as
the rows service does. An endpoint without a columnar predict, or whose input model holds what
the checks cannot decide, is served by the rows service instead (said once, with the reason).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runtime.errors import MlfnError
from runtime.scored import ModelInfo
from runtime.services.halving import ROW_FAULTS, Part, RowFault, Steps, scoring
from runtime.services.predict import PredictService

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    from numpy.typing import NDArray

    from runtime.columnar.schema import Compiled

log = logging.getLogger("mlfn.columns")

# Row ``i`` of the given columns, for each index asked, as the row path reads it (a dict).
RawRows = Callable[[list[int]], list[Any]]


@dataclass
class ScoredColumns:
    """The output model's fields as Arrow columns (by field name), a value per row and null
    where the row failed, and each failed row's error."""

    outputs: dict[str, pa.Array]
    errors: dict[int, MlfnError]
    model: ModelInfo | None


@dataclass
class _Plans:
    input: Compiled
    output: Compiled | None  # None: every output row is validated by pydantic


class ColumnService:
    def __init__(self, predict: PredictService) -> None:
        self._predict = predict
        self._plans: dict[str, _Plans | None] = {}

    def plan(self, name: str) -> _Plans | None:
        """The endpoint's compiled models, or None when the rows service must serve it."""
        if name in self._plans:
            return self._plans[name]
        from runtime.columnar.frame import compiled
        from runtime.columnar.schema import NotCompiled

        endpoint = self._predict.endpoint(name).endpoint
        plans: _Plans | None = None
        output = endpoint.output if endpoint.columns_fn is not None else None
        if output is not None and (
            output.model_computed_fields or any(f.exclude for f in output.model_fields.values())
        ):
            # Computed and excluded fields are an instance's: each row is made one.
            log.info("endpoint %r: outputs are made row by row (computed or excluded fields)",
                     name)  # fmt: skip
        elif endpoint.columns_fn is not None:
            found = compiled(endpoint.input)
            if isinstance(found, NotCompiled):
                log.info("endpoint %r: rows are validated one by one (%s)", name, found)
            else:
                out = compiled(endpoint.output)
                plans = _Plans(found, None if isinstance(out, NotCompiled) else out)
        self._plans[name] = plans
        return plans

    def output_names(self, name: str) -> dict[str, str]:
        """Each output field's name and the name it is written under (its alias)."""
        output = self._predict.endpoint(name).endpoint.output
        return {n: f.serialization_alias or f.alias or n for n, f in output.model_fields.items()}

    def score_sync(
        self,
        name: str,
        given: Mapping[str, pa.Array],
        n: int,
        raw_rows: RawRows,
        batch_size: int | None = None,
        null_is_missing: bool = False,
        suspect: NDArray[np.bool_] | None = None,
    ) -> ScoredColumns:
        """Score ``n`` rows of ``given`` columns (by the keys a row would use) on this thread,
        which runs no event loop. ``raw_rows`` reads rows the way the caller's row path does:
        pydantic validates those the checks do not pass (and the ``suspect`` ones); see
        ``runtime.columnar.validate`` for ``null_is_missing``. Call only when
        ``plan(name)`` is not None."""
        import numpy as np

        from runtime.columnar.validate import validate

        plans = self.plan(name)
        assert plans is not None, "ask plan(name) first"
        checked = validate(
            plans.input,
            given,
            n,
            lambda rows: self._predict.validate_each(name, raw_rows(rows)),
            null_is_missing,
            suspect,
        )
        errors = checked.errors
        size = batch_size or self._predict.endpoint(name).endpoint.limits.max_batch_size
        valid = checked.valid()
        order = np.full(n, -1, dtype=np.int64)  # each row's index into the joined outputs
        parts: list[dict[str, pa.Array]] = []
        model: ModelInfo | None = None
        run = _Runner(self._predict, name, plans, checked.columns, parts)
        for start in range(0, len(valid), size):
            rows = valid[start : start + size]
            model = run.chunk(rows, order, errors) or model
        return ScoredColumns(_joined(run, order), errors, model)


class _Runner:
    """The predict calls of one set of columns: each call's checked outputs kept in ``parts``,
    a row's index into them written in ``order``."""

    def __init__(
        self,
        predict: PredictService,
        name: str,
        plans: _Plans,
        columns: dict[str, NDArray[Any]],
        parts: list[dict[str, pa.Array]],
    ) -> None:
        self.predict, self.name, self.plans = predict, name, plans
        self.columns, self.parts = columns, parts
        self.joined = 0  # outputs kept so far
        self.output = predict.endpoint(name).endpoint.output

    def chunk(
        self, rows: NDArray[np.intp], order: NDArray[np.int64], errors: dict[int, MlfnError]
    ) -> ModelInfo | None:
        try:
            part = self.call(rows.tolist())
        except ROW_FAULTS as fault:
            return self._halved(rows.tolist(), fault, order, errors)
        for row, result in zip(rows.tolist(), part.results, strict=True):
            if isinstance(result, MlfnError):
                errors[row] = result
            else:
                order[row] = result
        return part.model

    def _halved(
        self,
        rows: list[int],
        fault: RowFault,
        order: NDArray[np.int64],
        errors: dict[int, MlfnError],
    ) -> ModelInfo | None:
        steps: Steps[int] = scoring(rows)
        next(steps)
        answer: Part | RowFault = fault
        while True:
            try:
                calls = steps.send(answer)
            except StopIteration as done:
                results, model = done.value
                for row, result in zip(rows, results, strict=True):
                    if isinstance(result, MlfnError):
                        errors[row] = result
                    else:
                        order[row] = result
                return model  # type: ignore[no-any-return]
            try:
                answer = self.call(calls)
            except ROW_FAULTS as err:
                answer = err

    def call(self, rows: list[int]) -> Part:
        """One predict call on ``rows``: each row's index into the joined outputs, or the
        error of a row whose output the output model refuses."""
        from runtime.columnar.frame import take

        n = len(rows)  # a list: numpy takes it as indices
        returned, model = self.predict.predict_columns_sync(self.name, take(self.columns, rows), n)
        arrays, refused = self._checked(returned, n)
        if refused:  # their values out, and with them the type they may have forced
            arrays = {f: _nulled(a, refused) for f, a in arrays.items()}
        self.parts.append(arrays)
        first = self.joined
        self.joined += n
        results: list[Any] = list(range(first, first + n))
        for i, error in refused.items():
            results[i] = error
        return Part(results, model)

    def _checked(
        self, returned: dict[str, Any], n: int
    ) -> tuple[dict[str, pa.Array], dict[int, MlfnError]]:
        """The output columns as Arrow arrays, and the rows whose output the output model
        refuses (checked by columns where it compiles; else by pydantic, row by row)."""
        import numpy as np

        from runtime.columnar.arrow import to_arrow
        from runtime.columnar.checks import check
        from runtime.columnar.frame import invalid_output, to_rows
        from runtime.errors import PredictContractError

        try:
            arrays = {field: to_arrow(column) for field, column in returned.items()}
        except Exception as exc:  # pyarrow's refusals (ArrowInvalid, TypeError, ...)
            raise PredictContractError(
                f"predict of endpoint {self.name!r} returned columns Arrow cannot hold: {exc}"
            ) from None
        plan = self.plans.output
        if plan is None:
            suspects = list(range(n))
        else:
            given = {f.keys[0]: arrays[f.name] for f in plan.fields if f.name in arrays}
            suspects = np.flatnonzero(check(plan, given, n).suspect).tolist()
        refused: dict[int, MlfnError] = {}
        if suspects:
            picked = {f: a.take(suspects) for f, a in arrays.items()}
            who = f"predict of endpoint {self.name!r}"
            from pydantic import ValidationError

            for j, row in enumerate(to_rows(picked, len(suspects))):
                try:
                    self.output.model_validate(row, by_name=True)
                except ValidationError as exc:
                    refused[suspects[j]] = invalid_output(who, suspects[j], exc)
        return arrays, refused


def _joined(run: _Runner, order: NDArray[np.int64]) -> dict[str, pa.Array]:
    import pyarrow as pa

    from runtime.columnar.arrow import scatter

    fields = list(run.output.model_fields)
    if not run.parts:
        return {f: pa.nulls(len(order)) for f in fields}
    joined = {}
    for field in fields:
        pieces = [part[field] for part in run.parts]
        kind = next((p.type for p in pieces if p.type != pa.null()), pa.null())
        same = [p if p.type == kind else p.cast(kind) for p in pieces]
        joined[field] = scatter(pa.concat_arrays(same), order)
    return joined


def _nulled(values: pa.Array, rows: dict[int, MlfnError]) -> pa.Array:
    """``values`` with a null at ``rows``, made again from the other values."""
    import pyarrow as pa

    python = values.to_pylist()
    for row in rows:
        python[row] = None
    return pa.array(python)

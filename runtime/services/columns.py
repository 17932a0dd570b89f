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

import importlib.util
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from runtime.errors import MlfnError, NotCompiled, PredictContractError
from runtime.scheduling import finished
from runtime.scored import ModelInfo, Scored
from runtime.services.halving import ROW_FAULTS, Part, RowFault, outcomes
from runtime.services.predict import PredictService

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    from numpy.typing import NDArray

    from runtime.columnar.schema import Compiled, Field

log = logging.getLogger("mlfn.columns")

# Row ``i`` of the given columns, for each index asked, as the row path reads it (a dict).
RawRows = Callable[[list[int]], list[Any]]


@dataclass
class ScoredColumns:
    """The output model's fields as Arrow columns (by field name), a value per row and null
    where the row failed, and each failed row's error. Where the output model is not one the
    checks compile (a dict, a nested model, its own serializer), ``outputs`` is None and
    ``predictions`` holds each row's JSON, made by pydantic as the row path makes it."""

    outputs: dict[str, pa.Array] | None
    errors: dict[int, MlfnError]
    model: ModelInfo | None
    predictions: list[bytes | None] | None = None


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

        endpoint = self._predict.endpoint(name).endpoint
        plans: _Plans | None = None
        if endpoint.columns_fn is not None and importlib.util.find_spec("pyarrow") is None:
            log.info("endpoint %r: rows are scored one by one: pyarrow, which holds the "
                     "columns, is not installed (pip install 'mlfn[parquet]')", name)  # fmt: skip
            self._plans[name] = None
            return None
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
                out = compiled(endpoint.output, output=True)
                plans = _Plans(found, None if isinstance(out, NotCompiled) else out)
        self._plans[name] = plans
        return plans

    def score_instances(self, name: str, raw: Sequence[Any]) -> Scored | None:
        """Instances as decoded from JSON (a queue message's, a claim check's) scored as
        columns when every one is valid and scores: their predictions as JSON, as the predict
        service makes them. None otherwise, for the predict service to score them (or to say
        exactly what is wrong, as it says it for any request); None too when the endpoint has
        no columns (``plan``)."""

        from runtime.columnar.arrow import from_dicts
        from runtime.protocol.batch_formats import ColumnOutcomes, as_outcomes

        plans = self.plan(name)
        if plans is None or not raw or not all(type(r) is dict for r in raw):
            return None
        made = from_dicts(list(raw), plans.input.keys(), plans.input.forbid_extra)
        if made is None:
            return None
        given, suspect = made
        rows = list(raw)
        scored = self.score_sync(
            name,
            given,
            len(rows),
            lambda picked: [rows[i] for i in picked],
            null_is_missing=True,  # a key left out; a JSON null is marked suspect above
            suspect=suspect,
        )
        if scored.errors or scored.model is None:
            return None
        if scored.outputs is None:  # pydantic wrote each row, as the predict service does
            return Scored([p for p in scored.predictions or () if p is not None], scored.model)
        names = self.output_names(name)
        outputs = {names[f]: a for f, a in scored.outputs.items()}
        outcomes = as_outcomes(ColumnOutcomes(outputs, {}, len(rows)))
        return Scored([p for p, _ in outcomes if p is not None], scored.model)

    def output_names(self, name: str) -> dict[str, str]:
        """Each output field's name and the name it is written under (its alias)."""
        from runtime.protocol.batch_formats import output_columns

        output = self._predict.endpoint(name).endpoint.output
        # No excluded or computed field here (``plan``): the fields and the columns pair up.
        written = [column for column, _ in output_columns(output)]
        return dict(zip(output.model_fields, written, strict=True))

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
        # The endpoint's bound on runs holds here too: each call takes a run's slot, behind the
        # requests waiting for one (predicting_columns).
        with self._predict.predicting_columns(name) as (call, model):
            run = _Runner(name, checked.columns, call)
            valid = checked.valid()
            if len(valid) == n:  # every row: slices, views of the columns
                for start in range(0, n, size):
                    run.chunk(slice(start, min(start + size, n)), errors)
            else:
                for start in range(0, len(valid), size):
                    run.chunk(valid[start : start + size], errors)
        output = self._predict.endpoint(name).endpoint.output
        outputs, predictions = run.joined(output, plans.output, n, errors)
        return ScoredColumns(outputs, errors, model, predictions)


class _Runner:
    """The predict calls on one set of columns: the outputs of each call kept, with the rows
    they answer, and joined once at the end (one Arrow array and one check per field)."""

    def __init__(
        self,
        name: str,
        columns: dict[str, NDArray[Any]],
        call: Callable[[dict[str, Any], int], dict[str, Any]],
    ) -> None:
        from runtime.columnar.frame import Slab

        self.name = name
        self.slab = Slab(columns)  # each call's columns a part of it
        self.call = call
        self.rows: list[NDArray[np.intp] | slice] = []  # the rows each kept output answers
        self.outputs: list[dict[str, Any]] = []
        # While every call answered the slice after the one before, from row 0: the outputs
        # then answer rows 0 .. ``ahead`` in order, with no index a row to keep (the usual
        # case, a slab of valid rows; a call costs little more than predict itself).
        self.ahead: int | None = 0

    def chunk(self, rows: NDArray[np.intp] | slice, errors: dict[int, MlfnError]) -> None:
        try:
            self._call(rows)
        except ROW_FAULTS as fault:
            self._halved(_indices(rows).tolist(), fault, errors)

    def _call(self, rows: NDArray[np.intp] | slice | list[int]) -> None:
        if isinstance(rows, slice):
            self.outputs.append(self.call(self.slab.part(rows), rows.stop - rows.start))
            self.rows.append(rows)
            if self.ahead is not None:
                self.ahead = rows.stop if rows.start == self.ahead else None
            return
        index = _indices(rows)
        self.outputs.append(self.call(self.slab.part(index), len(index)))
        self.rows.append(index)
        self.ahead = None

    def _halved(self, rows: list[int], fault: RowFault, errors: dict[int, MlfnError]) -> None:
        async def call(picked: list[int]) -> Part:  # never waits: this thread runs no loop
            self._call(picked)
            return Part(picked, None)  # each row's result: itself, its output kept

        results, _ = finished(outcomes(rows, call, fault))
        for row, result in zip(rows, results, strict=True):
            if isinstance(result, MlfnError):
                errors[row] = result

    def joined(
        self,
        output: type[BaseModel],
        plan: Compiled | None,
        n: int,
        errors: dict[int, MlfnError],
    ) -> tuple[dict[str, pa.Array] | None, list[bytes | None] | None]:
        """Each output field over all ``n`` rows as an array of its declared type (float32
        kept for a float field: ``_declared``; null where a row failed); a row whose output the
        output model refuses gets that error. Where the checks cannot decide the outputs (the
        model does not compile, or its values are of kinds no one array holds), each row's JSON
        instead, made by pydantic."""
        import numpy as np
        import pyarrow as pa

        from runtime.columnar.arrow import scatter

        fields = list(output.model_fields)
        if not self.outputs:
            return {f: pa.nulls(n) for f in fields}, None
        if self.ahead is not None:
            answered = np.arange(self.ahead)
        else:
            answered = np.concatenate([_indices(r) for r in self.rows])
        pieces = {f: [o[f] for o in self.outputs] for f in fields}
        if plan is not None:
            try:
                arrays = {
                    f.name: _joined_map(self.name, pieces[f.name], f)
                    if f.mapped
                    else _joined_column(self.name, pieces[f.name])
                    for f in plan.fields
                }
                refused = _refused(self.name, output, plan, arrays, answered)
                if refused:
                    arrays = {f: _nulled(a, refused) for f, a in arrays.items()}
                arrays = {f.name: _declared(arrays[f.name], f) for f in plan.fields}
            except (PredictContractError, pa.ArrowException):
                pass  # row by row, below
            else:
                if self.ahead == n and not refused:  # each row answered, in order
                    return arrays, None
                order = np.full(n, -1, dtype=np.int64)
                order[answered] = np.arange(len(answered))
                for i, error in refused.items():
                    errors[int(answered[i])] = error
                    order[answered[i]] = -1
                return {f: scatter(a, order) for f, a in arrays.items()}, None
        return None, self._encoded(output, pieces, answered, n, errors)

    def _encoded(
        self,
        output: type[BaseModel],
        pieces: dict[str, list[Any]],
        answered: NDArray[np.intp],
        n: int,
        errors: dict[int, MlfnError],
    ) -> list[bytes | None]:
        """Each answered row's output validated and written as JSON by pydantic, as the row
        path writes it; a row it refuses gets that error."""
        from pydantic import ValidationError

        from runtime.columnar.frame import input_keys, invalid_output, to_rows
        from runtime.services.predict import encode_output

        python = {f: _python(values) for f, values in pieces.items()}
        predictions: list[bytes | None] = [None] * n
        who = f"predict of endpoint {self.name!r}"
        for j, row in enumerate(to_rows(python, len(answered), input_keys(output))):
            at = int(answered[j])
            try:
                predictions[at] = encode_output(output.model_validate(row))
            except ValidationError as exc:
                errors[at] = invalid_output(who, at, exc)
            except PredictContractError as err:
                errors[at] = err
        return predictions


_KINDS = {"float": "float64", "int": "int64", "bool": "bool_", "str": "string"}


def _declared(values: pa.Array, field: Field) -> pa.Array:
    """``values`` as the Arrow type of the field's declared type (``_item_type``), as pydantic
    would have made them: an int for an int field, even where predict returned whole
    floats."""
    import pyarrow as pa

    item = _item_type(field, _items(values.type))
    if field.mapped:
        kind = pa.map_(pa.string(), item)
    elif field.width is not None or field.ragged is not None:
        kind = pa.list_(item)
    else:
        kind = item
    return values if values.type == kind else values.cast(kind)


def _item_type(field: Field, given: pa.DataType | None = None) -> pa.DataType:
    """The Arrow type of a field's values (of its items, for a list or dict field); float32
    for a float field whose values predict ``given`` as float32: the precision the model
    computed (text formats write its shortest digits, not its float64 widening:
    docs/columns.md)."""
    import pyarrow as pa

    item = getattr(pa, _KINDS[field.value.kind])()
    return pa.float32() if item == pa.float64() and given == pa.float32() else item


def _items(kind: pa.DataType) -> pa.DataType:
    """The type of the values a list or map type holds; ``kind`` itself for other types."""
    import pyarrow as pa

    from runtime.protocol.batch_formats import is_list_type

    if pa.types.is_map(kind):
        return kind.item_type
    return kind.value_type if is_list_type(kind) else kind


def _indices(rows: NDArray[np.intp] | slice | list[int]) -> NDArray[np.intp]:
    """The row indices a call answered, as an array."""
    import numpy as np

    if isinstance(rows, slice):
        return np.arange(rows.start, rows.stop, dtype=np.intp)
    return np.asarray(rows, dtype=np.intp)


def _joined_column(name: str, pieces: list[Any]) -> pa.Array:
    """One output field's pieces (one a predict call) as one Arrow array."""
    import numpy as np

    from runtime.columnar.arrow import to_arrow
    from runtime.errors import PredictContractError

    try:
        if all(isinstance(p, np.ndarray) and p.dtype != object for p in pieces):
            return to_arrow(pieces[0] if len(pieces) == 1 else np.concatenate(pieces))
        return to_arrow(_python(pieces))
    except Exception as exc:  # pyarrow's refusals (ArrowInvalid, TypeError, ...)
        raise PredictContractError(
            f"predict of endpoint {name!r} returned columns Arrow cannot hold: {exc}"
        ) from None


def _python(pieces: list[Any]) -> list[Any]:
    """One output field's pieces as one list of plain values."""
    from runtime.columnar.frame import values_of

    values: list[Any] = []
    for piece in pieces:
        values += values_of(piece)
    return values


def _joined_map(name: str, pieces: list[Any], field: Field) -> pa.Array:
    """A dict field's pieces as one Arrow map column of its value type: pieces that each give
    a column per key (the same keys, in the same order, for every row: what a classifier's
    probabilities are) without a Python object a row; others (a dict a row) through Arrow."""
    import numpy as np
    import pyarrow as pa

    from runtime.columnar.arrow import to_arrow
    from runtime.errors import PredictContractError

    try:
        keyed = [p for p in pieces if isinstance(p, Mapping)]
        keys = list(keyed[0]) if keyed else []
        if keys and len(keyed) == len(pieces) and all(list(p) == keys for p in keyed):
            if not all(type(k) is str for k in keys):
                raise TypeError("a key that is not text")  # pydantic decides: the row path
            matrix = np.column_stack(
                [np.concatenate([np.asarray(p[k]) for p in pieces]) for k in keys]
            )
            n = len(matrix)
            offsets = pa.array(np.arange(0, n * len(keys) + 1, len(keys), dtype=np.int32))
            flat_keys = pa.array(keys * n, pa.string())
            values = to_arrow(matrix.ravel())
            values = values.cast(_item_type(field, values.type))
            return pa.MapArray.from_arrays(offsets, flat_keys, values)
        rows = _python(pieces)
        # Every value a float32 (a float32 array's row zipped with the class names): kept so.
        kinds = {type(v) for row in rows if isinstance(row, Mapping) for v in row.values()}
        given = pa.float32() if kinds == {np.float32} else None
        return pa.array(rows, type=pa.map_(pa.string(), _item_type(field, given)))
    except Exception as exc:  # pyarrow's refusals (ArrowInvalid, TypeError, ...)
        raise PredictContractError(
            f"predict of endpoint {name!r} returned a dict column Arrow cannot hold: {exc}"
        ) from None


def _refused(
    name: str,
    output: type[BaseModel],
    plan: Compiled | None,
    arrays: Mapping[str, Any],
    answered: NDArray[np.intp],
) -> dict[int, MlfnError]:
    """The rows whose output the output model refuses: checked by columns where it compiles,
    else by pydantic, row by row; the rows the checks do not pass by pydantic too."""
    import numpy as np
    from pydantic import ValidationError

    from runtime.columnar.checks import check, passes_by_type
    from runtime.columnar.frame import input_keys, invalid_output, to_rows

    n = len(answered)
    if plan is None:  # ``arrays`` may be lists here
        suspects = list(range(n))
    elif all(f.name in arrays and passes_by_type(f, arrays[f.name]) for f in plan.fields):
        suspects = []  # numbers the output model takes whatever their values (its usual case)
    else:
        given = {f.keys[0]: arrays[f.name] for f in plan.fields if f.name in arrays}
        suspects = np.flatnonzero(check(plan, given, n).suspect).tolist()
    refused: dict[int, MlfnError] = {}
    if suspects:
        picked = {f: _take(a, suspects) for f, a in arrays.items()}
        who = f"predict of endpoint {name!r}"
        for j, row in enumerate(to_rows(picked, len(suspects), input_keys(output))):
            try:
                output.model_validate(row)
            except ValidationError as exc:
                refused[suspects[j]] = invalid_output(who, int(answered[suspects[j]]), exc)
    return refused


def _take(values: Any, rows: list[int]) -> Any:
    if isinstance(values, list):
        return [values[i] for i in rows]
    return values.take(rows)


def _nulled(values: pa.Array, rows: dict[int, MlfnError]) -> pa.Array:
    """``values`` with a null at ``rows``, made again from the other values (a refused value
    may have forced the array's type)."""
    import pyarrow as pa

    if pa.types.is_map(values.type):  # a map's type is its own: dicts back into it
        python = values.to_pylist(maps_as_pydicts="strict")
        for row in rows:
            python[row] = None
        return pa.array(python, type=values.type)
    python = values.to_pylist()
    for row in rows:
        python[row] = None
    return pa.array(python)

"""Columnar validation decides every row as the row path does: the same values for a valid
row, the same field path and message for an invalid one, whatever the column's Arrow type."""

from __future__ import annotations

import math
import random
from typing import Annotated, Any, Literal

import numpy as np
import pyarrow as pa
import pytest
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from runtime.columnar.checks import passes_by_type
from runtime.columnar.frame import from_instances
from runtime.columnar.schema import compile_model
from runtime.columnar.validate import validate
from runtime.element_types import FLOAT32_MAX, Float32
from runtime.errors import NotCompiled


class Strict(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False, populate_by_name=True)

    ratio: float = Field(gt=0, le=5)
    count: int = Field(ge=-3, lt=1000)
    flag: bool
    color: Literal["red", "green"]
    code: Literal[1, 2, 3] = 2
    note: str = Field(default="n/a", min_length=1, max_length=4, alias="Note")
    vector: list[float] = Field(min_length=3, max_length=3)
    maybe: float | None = None
    loose: float = 1.5


class Plain(BaseModel):
    x: float
    n: int = 0
    s: str | None = None


# Values of every kind a column may hold for a field: good, bad, on the edge.
CANDIDATES: dict[str, list[Any]] = {
    "ratio": [1.0, 5.0, 5.000001, 0.0, -1.0, math.nan, math.inf, None, 2, 3.25],
    "count": [0, -3, -4, 999, 1000, 7, None, 2**62],
    "flag": [True, False, None],
    "color": ["red", "green", "blue", "", None, "Red"],
    "code": [1, 2, 3, 4, 0, None],
    "Note": ["a", "abcd", "abcde", "", None, "é€😀x", "é€😀xy"],
    "vector": [[1.0, 2.0, 3.0], [1.0, 2.0], [1.0, None, 3.0], None, [0.0, -0.0, 1e300],
               [math.nan, 1.0, 2.0], [1.0, 2.0, 3.0, 4.0]],
    "maybe": [None, 0.5, math.nan, -math.inf],
    "loose": [None, math.nan, math.inf, -2.0],
}  # fmt: skip
# As text (a CSV cell, a string column): forms pydantic reads and forms it refuses.
TEXTS: dict[str, list[str]] = {
    "ratio": [" 1.5", "+1", "1_000", "1e0", ".5", "5.", "Infinity", "0x10", "abc", "-0.0",
              "4.9999999999999999999", "1E+0"],
    "count": [" 42", "+4", "4.0", "1_0", "-0", "007", "1e3", "99999999999999999999", "12"],
    "flag": ["yes", "off", "t", "TRUE", " true", "2", "true", "0", "False"],
}  # fmt: skip
TYPES: dict[str, list[pa.DataType]] = {
    "ratio": [pa.float64(), pa.float32(), pa.int64(), pa.string()],
    "count": [pa.int64(), pa.int32(), pa.float64(), pa.uint64(), pa.string()],
    "flag": [pa.bool_(), pa.int8(), pa.string()],
    "color": [pa.string(), pa.large_string()],
    "code": [pa.int64(), pa.float64()],
    "Note": [pa.string()],
    "vector": [pa.list_(pa.float64()), pa.list_(pa.float32()), pa.large_list(pa.int64())],
    "maybe": [pa.float64()],
    "loose": [pa.float64(), pa.float32()],
}


def _arrow(values: list[Any], kind: pa.DataType) -> pa.Array:
    """``values`` as a column of ``kind``: each cast as a writer of that type would (a float
    into an int column truncated away: skipped), so the row path sees what the column holds."""

    def cell(v: Any) -> Any:
        if v is None:
            return None
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            return str(v)
        if pa.types.is_integer(kind):
            if isinstance(v, list):
                return v
            info = np.iinfo(kind.to_pandas_dtype())
            fits = isinstance(v, (int, float)) and float(v).is_integer()
            return int(v) if fits and info.min <= int(v) <= info.max else 0
        if pa.types.is_floating(kind):
            return float(v)
        if pa.types.is_list(kind) or pa.types.is_large_list(kind):
            if pa.types.is_integer(kind.value_type):
                return [None if x is None or not math.isfinite(x) else int(x) % 1000 for x in v]
            return v
        return v

    if pa.types.is_large_list(kind) or pa.types.is_list(kind):
        return pa.array([cell(v) for v in values], type=kind)
    return pa.array([cell(v) for v in values], type=kind)


def _rows(columns: dict[str, pa.Array], indices: list[int]) -> list[dict[str, Any]]:
    # As the Spark worker reads a row: a null left out, so the default applies.
    lists = {k: c.to_pylist() for k, c in columns.items()}
    return [{k: v[i] for k, v in lists.items() if v[i] is not None} for i in indices]


def _row_path(model: type[BaseModel], columns: dict[str, pa.Array]) -> Any:
    adapter = TypeAdapter(model)

    def rows(indices: list[int]) -> list[Any]:
        out: list[Any] = []
        for raw in _rows(columns, indices):
            try:
                out.append(adapter.validate_python(raw))
            except ValidationError as exc:
                out.append(_Failed(exc))
        return out

    return rows


class _Failed(Exception):
    """Stands for the row path's error: its errors compared whole."""

    def __init__(self, exc: ValidationError) -> None:
        super().__init__()
        self.errors = exc.errors(include_url=False, include_input=False)


def _same(column: Any, value: Any) -> bool:
    if isinstance(value, float) and math.isnan(value):
        return isinstance(column, float) and math.isnan(column)
    if isinstance(value, list):
        return list(column) == value or all(map(_same, column, value))
    return bool(column == value)


def test_every_row_is_decided_as_the_row_path_decides_it() -> None:
    decided = [_decided_alike(seed) for seed in range(24)]
    failed = sum(decided)
    assert 0 < failed < 24 * 400  # both kinds of row were tried, many of each
    assert sum(1 for f in decided if 0 < f < 400) >= 8


def _decided_alike(seed: int) -> int:
    """Columns drawn from ``seed``, decided by both paths alike; how many rows failed."""
    from runtime.errors import MlfnError

    rng = random.Random(seed)
    n = 400
    columns = {}
    for key, values in CANDIDATES.items():
        if rng.random() < 0.08:
            continue  # a column missing altogether: a default, or "Field required"
        # Mostly the first (a good value), so that rows of both kinds are many.
        kind = rng.choice(TYPES[key])
        if pa.types.is_string(kind) and key in TEXTS:
            values = [*values, *TEXTS[key]]
        picks = [values[0] if rng.random() < 0.8 else rng.choice(values) for _ in range(n)]
        columns[key] = _arrow(picks, kind)
    plan = compile_model(Strict)
    row_path = _row_path(Strict, columns)

    class Error(MlfnError):
        pass

    def rows(indices: list[int]) -> list[Any]:
        return [Error("x", detail=o.errors) if isinstance(o, _Failed) else o
                for o in row_path(indices)]  # fmt: skip

    got = validate(plan, columns, n, rows)
    expected = row_path(list(range(n)))
    assert set(got.errors) == {i for i, e in enumerate(expected) if isinstance(e, _Failed)}
    for i in got.errors:
        assert got.errors[i].detail == expected[i].errors  # the row path's own error
    for i in got.valid().tolist():
        instance = expected[i]
        for name in Strict.model_fields:
            value = getattr(instance, name)
            if name == "maybe" and value is None:
                value = math.nan  # None of an optional float is NaN in its column
            assert _same(got.columns[name][i], value), (i, name, got.columns[name][i], value)
    # The same columns reach predict from instances (an HTTP body) as from Arrow columns.
    valid = got.valid()
    if len(valid):
        gathered = from_instances(Strict, [expected[i] for i in valid.tolist()])
        for name, column in gathered.items():
            assert column.dtype == got.columns[name].dtype, name
            assert column.shape == got.columns[name][valid].shape, name
            for a, b in zip(column.tolist(), got.columns[name][valid].tolist(), strict=True):
                assert _same(a, b), (name, a, b)
    return len(got.errors)


def test_a_valid_column_is_checked_without_the_row_path() -> None:
    columns = {"x": pa.array(np.linspace(-1, 1, 1000)), "n": pa.array(np.arange(1000))}
    got = validate(compile_model(Plain), columns, 1000, lambda rows: pytest.fail(str(rows)))
    assert not got.errors
    assert got.columns["x"].dtype == np.float64 and got.columns["n"].dtype == np.int64
    assert got.columns["s"].tolist() == [None] * 1000


class WithValidator(BaseModel):
    x: float

    @field_validator("x")
    @classmethod
    def positive(cls, v: float) -> float:
        return abs(v)


class Inner(BaseModel):
    a: float


class Nested(BaseModel):
    inner: Inner


class Union_(BaseModel):
    x: int | str


class Ragged(BaseModel):
    v: list[float]


class Pattern(BaseModel):
    s: str = Field(pattern="^a")


class StrictMode(BaseModel):
    model_config = ConfigDict(strict=True)
    x: float


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (WithValidator, "field 'x' has a validator"),
        (Nested, "field 'inner' has a nested model"),
        (Union_, "field 'x' has a union"),
        (Ragged, "no fixed length"),
        (Pattern, "pattern"),
        (StrictMode, "strict"),
    ],
)
def test_what_the_checks_cannot_decide_is_not_compiled_and_says_why(
    model: type[BaseModel], reason: str
) -> None:
    with pytest.raises(NotCompiled, match=reason):
        compile_model(model)


def test_ragged_rows_of_a_model_that_does_not_compile_are_gathered_as_objects() -> None:
    # The model's input check then refuses them (a 400), as the row form's model.run did.
    rows = [Ragged(v=[1.0, 2.0]), Ragged(v=[1.0])]
    column = from_instances(Ragged, rows)["v"]
    assert column.dtype == object and column.tolist() == [[1.0, 2.0], [1.0]]


def _decides_alike(model: type[BaseModel], columns: dict[str, pa.Array], n: int) -> None:
    """Each row decided by the columns as pydantic decides the row the file would make (a
    null a key left out)."""
    from runtime.errors import MlfnError

    row_path = _row_path(model, columns)

    class Error(MlfnError):
        pass

    def rows(indices: list[int]) -> list[Any]:
        return [Error("x", detail=o.errors) if isinstance(o, _Failed) else o
                for o in row_path(indices)]  # fmt: skip

    got = validate(compile_model(model), columns, n, rows, null_is_missing=True)
    expected = row_path(list(range(n)))
    assert set(got.errors) == {i for i, e in enumerate(expected) if isinstance(e, _Failed)}
    for i in got.valid().tolist():
        for name in model.model_fields:
            assert _same(got.columns[name][i], getattr(expected[i], name)), (i, name)


class Sized(BaseModel):
    """What ``mlfn new`` writes for a float32 input: items within what float32 holds."""

    model_config = ConfigDict(allow_inf_nan=False)
    x: Annotated[list[Float32], Field(min_length=2, max_length=2)]
    y: Float32 = 0.0


def test_items_bounded_to_float32_compile_and_fail_as_pydantic_fails_them() -> None:
    plan = compile_model(Sized)
    assert not isinstance(plan, NotCompiled)
    assert [f.value.le for f in plan.fields] == [FLOAT32_MAX, FLOAT32_MAX]
    x = [[1.0, 2.0], [1e308, 0.0], [-1e39, 1.0], [FLOAT32_MAX, -FLOAT32_MAX], [0.0, 3.5e38]]
    y = [0.0, 1.0, None, 1e300, -3.4e38]
    columns = {"x": pa.array(x), "y": pa.array(y)}
    _decides_alike(Sized, columns, len(x))


class ByBoth(BaseModel):
    model_config = ConfigDict(validate_by_name=True)
    x: float = Field(default=0.0, alias="X")


def test_a_field_given_by_alias_and_by_name_is_read_as_pydantic_reads_it() -> None:
    # A null alias cell is a key left out: pydantic reads the name's column instead.
    columns = {"X": pa.array([None, 1.0, None]), "x": pa.array([5.0, 2.0, None])}
    _decides_alike(ByBoth, columns, 3)


class Huge(BaseModel):
    n: int = Field(le=9007199254740992.0)  # a float bound, as pydantic keeps it


def test_ints_past_what_floats_hold_are_bounded_exactly_and_past_int64_decided_by_pydantic() -> (
    None
):
    columns = {"n": pa.array([2**53, 2**53 + 1, 2**63 + 5, 3], type=pa.uint64())}
    _decides_alike(Huge, columns, 4)


class Forbids(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x: float


def test_a_row_with_a_key_a_forbidding_model_refuses_gets_pydantics_error() -> None:
    from runtime.columnar.arrow import from_dicts

    rows = [{"x": 1.0}, {"x": 2.0, "typo": 1}]
    made = from_dicts(rows, compile_model(Forbids).keys(), forbid_extra=True)
    assert made is not None and made[1].tolist() == [False, True]


class OddDefault(BaseModel):
    n: int = 1.5  # type: ignore[assignment]  # pydantic keeps the default as it is


def test_a_default_no_column_of_the_fields_type_holds_is_not_compiled() -> None:
    with pytest.raises(NotCompiled, match="a default of another type"):
        compile_model(OddDefault)


def test_an_int_past_64_bits_gathered_into_columns_is_the_requests_error() -> None:
    from runtime.errors import ValidationFailed

    with pytest.raises(ValidationFailed) as raised:
        from_instances(Plain, [Plain(x=1.0, n=1), Plain(x=1.0, n=2**63)])
    assert raised.value.status == 422
    assert raised.value.detail[0]["field"] == "instances[1].n"  # type: ignore[index]


class IntRows(BaseModel):
    v: Annotated[list[int], Field(min_length=2, max_length=2)]


def test_an_int_past_64_bits_in_a_list_field_is_the_requests_error_naming_its_row() -> None:
    from runtime.errors import ValidationFailed

    with pytest.raises(ValidationFailed) as raised:
        from_instances(IntRows, [IntRows(v=[1, 2]), IntRows(v=[3, 2**63])])
    assert raised.value.detail[0]["field"] == "instances[1].v"  # type: ignore[index]
    columns = from_instances(IntRows, [IntRows(v=[1, 2]), IntRows(v=[3, 2**62])])
    assert columns["v"].tolist() == [[1, 2], [3, 2**62]] and columns["v"].dtype == np.int64


class Outputs(BaseModel):
    score: float
    bounded: float = Field(ge=0)
    finite: float = Field(allow_inf_nan=False)
    label: int
    flag: bool
    probabilities: list[float] = Field(min_length=3, max_length=3)
    any_length: list[float]


def test_outputs_pass_by_their_type_only_where_the_field_takes_every_value_of_it() -> None:
    fields = {f.name: f for f in compile_model(Outputs, output=True).fields}
    floats, ints = pa.array([0.5, math.nan, -2.0]), pa.array([1, 2, 3])
    rows = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(9.0)), 3)

    def passes(field: str, column: pa.Array) -> bool:
        return passes_by_type(fields[field], column)

    assert passes("score", floats) and passes("score", ints) and passes("label", ints)
    assert passes("flag", pa.array([True, False]))
    assert passes("probabilities", rows) and passes("any_length", rows)
    # Values to look at: a bound, finiteness, a float for an int, a null, a length.
    assert not passes("bounded", floats) and not passes("finite", floats)
    assert not passes("label", floats) and not passes("score", pa.array([1.0, None]))
    assert not passes("label", pa.array([1], pa.uint64()))
    assert not passes("probabilities", pa.FixedSizeListArray.from_arrays(pa.array([1.0, 2]), 2))
    assert not passes("probabilities", pa.array([[1.0, 2.0, 3.0]]))  # a list: lengths vary

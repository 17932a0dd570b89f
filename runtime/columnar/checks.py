"""The compiled checks run over whole Arrow columns: each field's values as a numpy array, and
which rows the checks cannot pass.

A row the checks pass is one pydantic would accept with the very same values. A row they do
not pass is only a suspect: pydantic decides it (``runtime.columnar.validate``), so its error
is the row path's own, and a value pydantic accepts in a form the checks do not know (a number
in a string, "yes" for a bool) is still accepted. The checks may be stricter than pydantic,
never looser.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from runtime.columnar.frame import DTYPES, empty_column
from runtime.columnar.schema import Compiled, Field, Scalar

if TYPE_CHECKING:
    from numpy.typing import NDArray

_INT64_MAX = np.iinfo(np.int64).max


@dataclass
class Checked:
    """Every field's column over all rows (a placeholder where a row is suspect), and the
    suspects."""

    columns: dict[str, NDArray[Any]]
    suspect: NDArray[np.bool_]


def check(
    compiled: Compiled,
    given: Mapping[str, pa.Array | pa.ChunkedArray],
    n: int,
    null_is_missing: bool = False,
) -> Checked:
    """Check ``given`` columns (by the keys a row would use) of ``n`` rows against the model.

    null_is_missing: a null is a key the row left out (an empty CSV cell, a Parquet null),
        so only a default stands in for it; else it is None to a field that takes None (a
        Spark null)."""
    suspect = np.zeros(n, dtype=np.bool_)
    if compiled.forbid_extra and set(given) - compiled.keys():
        suspect[:] = True  # every row carries a key the model refuses
    columns: dict[str, NDArray[Any]] = {}
    for field in compiled.fields:
        present = [k for k in field.keys if k in given]
        if len(present) > 1:
            # By alias and by name at once: pydantic takes whichever a row holds, alias
            # first, and a null (a key left out) falls through to the other. Its call.
            suspect[:] = True
        key = present[0] if present else None
        if key is None:
            columns[field.name] = _absent(field, n, suspect)
            continue
        column = given[key]
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        if pa.types.is_dictionary(column.type):  # Parquet's text, each value held once
            column = column.dictionary_decode()
        values, bad = _field(field, column, null_is_missing)
        columns[field.name] = values
        suspect |= bad
    return Checked(columns, suspect)


def passes_by_type(field: Field, column: pa.Array) -> bool:
    """Whether every value of ``column`` passes the field's checks by the column's type
    alone: no null, and numbers of a kind the field takes whatever their value (no bounds, no
    choices; NaN allowed for a float), as a columnar predict's outputs mostly are; ``check``
    need not look at the values."""
    if column.null_count or field.mapped:
        return False
    kind = column.type
    if field.width is not None or field.ragged is not None:
        if not pa.types.is_fixed_size_list(kind):
            return False
        size: int = kind.list_size
        if field.width is not None and size != field.width:
            return False
        if field.ragged is not None and not _fits(size, *field.ragged):
            return False
        if column.values.null_count:  # the items of every row (more than a slice's: never fewer)
            return False
        kind = kind.value_type
    rule = field.value
    if rule.choices is not None or any(
        bound is not None for bound in (rule.gt, rule.ge, rule.lt, rule.le)
    ):
        return False
    t = pa.types
    if rule.kind == "float":
        return rule.allow_inf_nan and bool(t.is_floating(kind) or t.is_integer(kind))
    if rule.kind == "int":
        return bool(t.is_integer(kind)) and kind != pa.uint64()
    return rule.kind == "bool" and bool(t.is_boolean(kind))


def _fits(length: int, shortest: int, longest: int | None) -> bool:
    return shortest <= length and (longest is None or length <= longest)


def _absent(field: Field, n: int, suspect: NDArray[np.bool_]) -> NDArray[Any]:
    if field.has_default:
        column = empty_column(field, n)
        column[:] = _null_value(field) if field.default is None else field.default
        return column
    suspect[:] = True  # "Field required", every row: pydantic says so
    return empty_column(field, n)


def _null_value(field: Field) -> Any:
    return np.nan if field.value.kind == "float" else None


def _field(
    field: Field, column: pa.Array, null_is_missing: bool
) -> tuple[NDArray[Any], NDArray[np.bool_]]:
    n = len(column)
    if field.mapped:
        return np.empty(n, dtype=object), _map(field, column)
    if field.width is not None:
        return _list(field, column)
    if field.ragged is not None:
        return np.empty(n, dtype=object), _ragged(field, column)
    values, bad = _scalar(field.value, column)
    if column.null_count:
        nulls = column.is_null().to_numpy(zero_copy_only=False)
        if field.has_default or (field.nullable and not null_is_missing):
            default = field.default if field.has_default else None
            if not values.flags.writeable:  # Arrow's memory, zero-copy
                values = values.copy()
            values[nulls] = _null_value(field) if default is None else default
            bad = bad & ~nulls
        else:
            bad = bad | nulls
    assert len(values) == n
    return values, bad


def _list(field: Field, column: pa.Array) -> tuple[NDArray[Any], NDArray[np.bool_]]:
    n, width = len(column), field.width
    assert width is not None
    kind = column.type
    if not _is_list(kind):
        return empty_column(field, n), np.ones(n, dtype=np.bool_)
    lengths = pc.list_value_length(column)
    fits = pc.fill_null(pc.equal(lengths, width), False).to_numpy(zero_copy_only=False)
    every = bool(fits.all())
    kept = column if every else column.filter(pa.array(fits))
    items = kept.flatten()
    flat, bad = _scalar(field.value, items)
    if items.null_count:
        bad = bad | _nulls(items)
    rows_bad = np.asarray(bad.reshape(-1, width).any(axis=1))
    if every:  # the usual case: the items as they are, a view where Arrow allows
        return flat.reshape(n, width), rows_bad
    values = empty_column(field, n)
    values[fits] = flat.reshape(-1, width)
    suspect = ~fits
    suspect[fits] = rows_bad
    return values, suspect


def _ragged(field: Field, column: pa.Array) -> NDArray[np.bool_]:
    """The rows of an output list that the checks cannot pass: a length out of bounds, a
    null, an item its rule refuses."""
    assert field.ragged is not None
    n, (shortest, longest) = len(column), field.ragged
    kind = column.type
    if not _is_list(kind):
        return np.ones(n, dtype=np.bool_)
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    with np.errstate(invalid="ignore"):
        bad = ~(lengths >= shortest)  # a null list's NaN length fails too
        if longest is not None:
            bad |= lengths > longest
    items = column.flatten()
    _, item_bad = _scalar(field.value, items)
    if items.null_count:
        item_bad = item_bad | _nulls(items)
    if item_bad.any():
        parents = pc.list_parent_indices(column).to_numpy(zero_copy_only=False)
        bad[parents[item_bad]] = True
    return np.asarray(bad, dtype=np.bool_)


def _map(field: Field, column: pa.Array) -> NDArray[np.bool_]:
    """The rows of an output dict that the checks cannot pass: a null, a value its rule
    refuses (text keys are Arrow's own: a map holds no null key)."""
    n = len(column)
    if not pa.types.is_map(column.type):
        return np.ones(n, dtype=np.bool_)
    if column.offset:  # a slice: its offsets do not start at its items' start
        column = pa.concat_arrays([column])
    bad = _nulls(column) if column.null_count else np.zeros(n, dtype=np.bool_)
    offsets = column.offsets.to_numpy(zero_copy_only=False)
    items = column.items.slice(0, int(offsets[-1]))
    _, item_bad = _scalar(field.value, items)
    if items.null_count:
        item_bad = item_bad | _nulls(items)
    if item_bad.any():  # each bad item's row (list_parent_indices aborts on a map in Arrow)
        bad[np.searchsorted(offsets, np.flatnonzero(item_bad), side="right") - 1] = True
    return np.asarray(bad, dtype=np.bool_)


def _is_list(kind: pa.DataType) -> bool:
    t = pa.types
    return bool(t.is_list(kind) or t.is_large_list(kind) or t.is_fixed_size_list(kind))


def _nulls(column: pa.Array) -> NDArray[np.bool_]:
    nulls: NDArray[np.bool_] = column.is_null().to_numpy(zero_copy_only=False)
    return nulls


def _scalar(rule: Scalar, column: pa.Array) -> tuple[NDArray[Any], NDArray[np.bool_]]:
    """The values as the field's numpy type and the rows whose value the checks cannot pass
    (nulls are placeholders here: ``_field`` decides them)."""
    kind, n = column.type, len(column)
    if rule.kind != "str" and (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        column, parsed = _from_text(rule, column)
        if column is None:
            return np.zeros(n, dtype=DTYPES[rule.kind]), np.ones(n, dtype=np.bool_)
        values, bad = _scalar(rule, column)
        return values, bad | ~parsed
    if rule.kind == "float":
        if not (pa.types.is_floating(kind) or pa.types.is_integer(kind)):
            return np.zeros(n), np.ones(n, dtype=np.bool_)
        values = pc.cast(column, pa.float64(), safe=False).to_numpy(zero_copy_only=False)
        bad = np.zeros(n, dtype=np.bool_) if rule.allow_inf_nan else ~np.isfinite(values)
        return values, bad | _out_of_bounds(rule, values)
    if rule.kind == "int":
        return _int(rule, column)
    if rule.kind == "bool":
        if pa.types.is_boolean(kind):
            return column.to_numpy(zero_copy_only=False).astype(np.bool_), np.zeros(n, np.bool_)
        if pa.types.is_integer(kind):
            raw = pc.cast(column, pa.int64(), safe=False).to_numpy(zero_copy_only=False)
            return raw == 1, ~np.isin(raw, (0, 1))
        return np.zeros(n, dtype=np.bool_), np.ones(n, dtype=np.bool_)
    return _str(rule, column)


# Text pydantic reads as a number or a bool, in forms it reads exactly as Arrow does; any other
# text (" 1", "1_000", "yes", "Infinity") is a suspect, for pydantic to decide.
_TEXT = {
    "float": r"^-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$",
    "int": r"^-?[0-9]{1,18}$",
}
_TRUE, _FALSE = ("true", "True", "1"), ("false", "False", "0")


def _from_text(rule: Scalar, column: pa.Array) -> tuple[pa.Array | None, NDArray[np.bool_]]:
    """A text column as the rule's Arrow type: the texts of the plain forms parsed, the rest
    (and nulls) a placeholder and False in the mask."""
    if rule.kind == "bool":
        true = pc.fill_null(pc.is_in(column, pa.array(_TRUE)), False)
        false = pc.fill_null(pc.is_in(column, pa.array(_FALSE)), False)
        parsed = pc.or_(true, false).to_numpy(zero_copy_only=False)
        return pc.if_else(column.is_null(), None, true), parsed
    pattern = _TEXT.get(rule.kind)
    if pattern is None or rule.choices is not None:
        return None, np.zeros(len(column), dtype=np.bool_)
    if rule.kind == "float":
        # Most number columns are all numbers: Arrow's cast reads each form as pydantic
        # does, but its spellings of infinity and NaN, left to pydantic (a suspect).
        try:
            floats = pc.cast(column, pa.float64())
        except pa.ArrowInvalid:
            pass  # some text is no number: each value by the plain forms, below
        else:
            return floats, pc.fill_null(pc.is_finite(floats), False).to_numpy(zero_copy_only=False)
    plain = pc.fill_null(pc.match_substring_regex(column, pattern), False)
    target = pa.float64() if rule.kind == "float" else pa.int64()
    kept = pc.if_else(plain, column, None)  # a null where the text is not plain
    return pc.cast(kept, target), plain.to_numpy(zero_copy_only=False)


def _int(rule: Scalar, column: pa.Array) -> tuple[NDArray[Any], NDArray[np.bool_]]:
    kind, n = column.type, len(column)
    if pa.types.is_integer(kind):
        bad = np.zeros(n, dtype=np.bool_)
        if kind == pa.uint64():
            past = pc.greater(column, pa.scalar(_INT64_MAX, pa.uint64()))
            bad |= pc.fill_null(past, False).to_numpy(zero_copy_only=False)
        values = pc.cast(column, pa.int64(), safe=False).fill_null(0).to_numpy()
    elif pa.types.is_floating(kind) and rule.choices is None:
        floats = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
        with np.errstate(invalid="ignore"):
            whole = np.isfinite(floats) & (np.floor(floats) == floats) & (np.abs(floats) < 2.0**63)
        values = np.where(whole, floats, 0).astype(np.int64)
        bad = ~whole
    else:  # a literal of ints takes ints only here; text and the rest: pydantic decides
        return np.zeros(n, dtype=np.int64), np.ones(n, dtype=np.bool_)
    if rule.choices is not None:
        bad |= ~np.isin(values, rule.choices)
    return values, bad | _out_of_bounds(rule, values)


def _str(rule: Scalar, column: pa.Array) -> tuple[NDArray[Any], NDArray[np.bool_]]:
    kind, n = column.type, len(column)
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return np.empty(n, dtype=object), np.ones(n, dtype=np.bool_)
    bad = np.zeros(n, dtype=np.bool_)
    if rule.min_length is not None or rule.max_length is not None:
        lengths = pc.utf8_length(column).fill_null(0).to_numpy(zero_copy_only=False)
        if rule.min_length is not None:
            bad |= lengths < rule.min_length
        if rule.max_length is not None:
            bad |= lengths > rule.max_length
    if rule.choices is not None:
        bad |= ~pc.fill_null(pc.is_in(column, pa.array(rule.choices)), True).to_numpy(
            zero_copy_only=False
        )
    values: NDArray[Any] = column.to_numpy(zero_copy_only=False).astype(object)
    return values, bad


def _out_of_bounds(rule: Scalar, values: NDArray[Any]) -> NDArray[np.bool_]:
    bad = np.zeros(len(values), dtype=np.bool_)
    with np.errstate(invalid="ignore"):  # NaN fails every bound, as in pydantic
        if rule.gt is not None:
            bad |= ~(values > rule.gt)
        if rule.ge is not None:
            bad |= ~(values >= rule.ge)
        if rule.lt is not None:
            bad |= ~(values < rule.lt)
        if rule.le is not None:
            bad |= ~(values <= rule.le)
    return bad

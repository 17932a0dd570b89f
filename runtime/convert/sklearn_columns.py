"""A scikit-learn model fitted on a DataFrame: its named, typed columns, as ONNX inputs.

Each column becomes its own ONNX input shaped ``[None, 1]`` (a number, or a string for a
categorical column), so one name addresses a JSON row's field, a CSV header, a Parquet or Spark
column and a V2 input alike. The columns, their types and an encoder's categories are recorded in
the model's ``mlfn.columns`` metadata, which ``mlfn new`` turns into one typed field each.
"""

from __future__ import annotations

import contextlib
import json
import numbers
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from runtime.errors import ConversionError


@dataclass(frozen=True)
class Column:
    """One input column: ``float``, ``int``, ``bool`` or ``str``; the categories an encoder
    knows (None for a plain number), and whether that encoder refuses any other value;
    ``optional``: a value the model imputes when it is missing, which a row may leave out (a
    number is fed as NaN then, a string as ``MISSING_TEXT``)."""

    name: str
    type: str
    categories: tuple[Any, ...] | None = None
    closed: bool = False
    optional: bool = False
    replaced: tuple[Any, ...] = ()  # values an imputer turns into a category: taken too

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.categories is not None:
            out["categories"] = list(self.categories)
            out["closed"] = self.closed
            # Written whenever categories are (empty too): a served model refuses a value its
            # closed encoder never took only when its metadata says what else it takes.
            out["replaced"] = list(self.replaced)
        if self.optional:
            out["optional"] = True
            if self.type == "str":  # what the model is fed for a missing string
                out["missing"] = MISSING_TEXT
        return out


# A string column's missing value, as the converted model takes it: ONNX strings have no NaN, so
# a SimpleImputer of strings is converted to replace this text (skl2onnx converts one that
# replaces a text, not NaN), and a missing value is fed as it. No category a person names: ""
# is one scikit-learn takes as it is (an unknown category, or one it learnt), not as missing,
# and onnxruntime reads "\x00" as "".
MISSING_TEXT = "<mlfn:missing>"


def dumps(columns: list[Column]) -> str:
    return json.dumps([c.as_json() for c in columns], ensure_ascii=False)


def columns_of(model: Any, sample: Any) -> list[Column] | None:
    """The columns ``model`` was fitted on (``feature_names_in_``), typed by the sample's dtypes
    when it is a DataFrame, else by the encoders; None for a model fitted on an array."""
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        return None
    names = _as_sampled(model, [str(n) for n in names], sample)
    encoders = _encoded(model, names)
    imputed = _imputed(model, names)
    unknown_alike = _missing_as_unknown(model, names)
    dtypes = _sample_dtypes(sample)
    columns = []
    for name in names:
        categories, closed, replaced = encoders.get(name, (None, False, ()))
        kind = dtypes.get(name)
        if kind is None:  # no sample column: the encoder's categories say
            kind = "float"
            if categories is not None and len(categories):
                kind = _kind_of_values(categories)
        if categories is not None:
            categories = tuple(_plain(v) for v in categories)
        optional = name in imputed or (kind == "str" and name in unknown_alike)
        if optional and kind != "str":
            kind = "float"  # a missing number is NaN: a float, as pandas reads the column
        columns.append(Column(name, kind, categories, closed, optional, replaced))
    return columns


def _as_sampled(model: Any, names: list[str], sample: Any) -> list[str]:
    """The fitted column names, as the sample's DataFrame spells them: LightGBM fitted on a
    DataFrame keeps ``annual income`` as ``annual_income`` (its own rule: each space an
    underscore), though the user's rows, CSV headers and JSON keys carry the space and
    LightGBM's predict takes them so."""
    import pandas as pd  # type: ignore[import-untyped,unused-ignore]

    first = model
    while getattr(first, "steps", None):
        first = first.steps[0][1]
    if not type(first).__module__.startswith("lightgbm") or not isinstance(sample, pd.DataFrame):
        return names
    given = [str(c) for c in sample.columns]
    spelt = []
    for name in names:
        alike = [c for c in given if c != name and c.replace(" ", "_") == name]
        spelt.append(alike[0] if name not in given and len(alike) == 1 else name)
    return spelt


def frame(model: Any, columns: list[Column], sample: Any, rows: int) -> Any:
    """The rows to prove on as a DataFrame of ``columns``: the sample's (a DataFrame, or an
    array in the columns' order), else rows synthesised like the training data: numbers around
    a fitted scaler's centre and spread, categories drawn from the encoder's."""
    import numpy as np
    import pandas as pd  # type: ignore[import-untyped,unused-ignore]

    names = [c.name for c in columns]
    if sample is not None:
        if isinstance(sample, pd.DataFrame):
            missing = [n for n in names if n not in sample.columns]
            if missing:
                raise ConversionError(
                    f"the sample has no column {', '.join(map(repr, missing))}; the model was "
                    f"fitted on {', '.join(names)}"
                )
            return sample[names].reset_index(drop=True)
        array = np.asarray(sample)
        if array.ndim != 2 or array.shape[1] != len(names):
            raise ConversionError(
                f"a sample for this model is a DataFrame or a [rows, {len(names)}] matrix of "
                f"its columns ({', '.join(names)}), not shaped {array.shape}"
            )
        return pd.DataFrame(array, columns=names)
    rng = np.random.default_rng(0)
    stats = _scaled(model, names)
    data: dict[str, Any] = {}
    for column in columns:
        if column.categories:
            picks = rng.integers(0, len(column.categories), rows)
            data[column.name] = np.array(column.categories, dtype=object)[picks]
            if column.type != "str":
                data[column.name] = data[column.name].astype(np.float64)
        elif column.type == "bool":
            data[column.name] = rng.integers(0, 2, rows).astype(bool)
        else:
            centre, spread = stats.get(column.name, (0.0, 1.0))
            data[column.name] = centre + spread * rng.standard_normal(rows)
    return pd.DataFrame(data)


def feeds(rows: Any, columns: list[Column], dtype: Any) -> dict[str, Any]:
    """One ``[rows, 1]`` array per column: strings as objects (a missing one of an optional
    column as ``MISSING_TEXT``), numbers as ``dtype``."""
    import numpy as np

    out = {}
    for column in columns:
        values = rows[column.name]
        if column.type == "str" and column.optional:
            values = values.astype(object).where(values.notna(), MISSING_TEXT)  # a category too
        try:
            array = (
                values.astype(str).to_numpy(dtype=object)
                if column.type == "str"
                else values.to_numpy(dtype=dtype)
            )
        except (TypeError, ValueError) as exc:
            raise ConversionError(
                f"the sample's column {column.name!r} is not {column.type}: {exc}"
            ) from None
        out[column.name] = np.ascontiguousarray(array.reshape(-1, 1))
    return out


def initial_types(columns: list[Column], number_type: Any) -> list[tuple[str, Any]]:
    """skl2onnx's ``initial_types``: a string or a number tensor ``[None, 1]`` per column."""
    from skl2onnx.common.data_types import StringTensorType

    return [
        (c.name, StringTensorType([None, 1]) if c.type == "str" else number_type([None, 1]))
        for c in columns
    ]


def joined(model: Any, columns: list[Column], rows: Any) -> Any:
    """``model``, or for numbers alone reaching an estimator that takes one matrix (skl2onnx
    joins several inputs for a scaler, not for a regressor), a pipeline that first joins the
    columns in their order (a passthrough ColumnTransformer, as scikit-learn reads them)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    names = [c.name for c in columns]
    if _column_transformer(model) is not None or any(c.type == "str" for c in columns):
        return model  # a ColumnTransformer leads, or an encoder reads strings
    join = ColumnTransformer([("columns", "passthrough", names)]).fit(rows)
    return Pipeline([("mlfn_join_columns", join), ("model", model)])


def restore_names(model: Any, columns: list[Column]) -> None:
    """Give an ``onnx.ModelProto``'s inputs the columns' own names: skl2onnx makes names such as
    ``annual income`` identifiers (``annual_income``), which a CSV header or a JSON row would
    then miss. The inputs come in the columns' order."""
    inputs = list(model.graph.input)
    if len(inputs) != len(columns):
        raise ConversionError(
            f"skl2onnx made {len(inputs)} inputs of the model's {len(columns)} columns"
        )
    taken = {o for node in model.graph.node for o in node.output}
    for graph_input, column in zip(inputs, columns, strict=True):
        old, new = graph_input.name, column.name
        if old == new:
            continue
        if new in taken:
            raise ConversionError(
                f"column {new!r} has the name of a value inside the converted graph: rename it"
            )
        graph_input.name = new
        for node in model.graph.node:
            node.input[:] = [new if name == old else name for name in node.input]


@contextlib.contextmanager
def strings_missing_as_text(model: Any) -> Iterator[None]:
    """Meanwhile, each fitted SimpleImputer of strings in ``model`` that replaces NaN replaces
    ``MISSING_TEXT`` instead, as skl2onnx can convert it; as it was afterwards."""
    import numpy as np
    from sklearn.impute import SimpleImputer

    changed = [
        step
        for step in steps(model)
        if isinstance(step, SimpleImputer)
        and _is_nan(step.missing_values)
        and np.asarray(getattr(step, "statistics_", [])).dtype.kind in "OUS"
    ]
    before = [step.missing_values for step in changed]
    for step in changed:
        step.missing_values = MISSING_TEXT
    try:
        yield
    finally:
        for step, value in zip(changed, before, strict=True):
            step.missing_values = value


def steps(model: Any) -> Iterator[Any]:
    """Every estimator inside ``model``: pipelines' steps and column transformers' parts."""
    yield model
    for _, step in getattr(model, "steps", ()):
        yield from steps(step)
    for _, part, _ in getattr(model, "transformers_", ()):
        if not isinstance(part, str):  # "drop", "passthrough"
            yield from steps(part)


def _routes(model: Any, names: list[str]) -> list[tuple[list[str], Any]]:
    """Which transformer first sees which columns: a ColumnTransformer's parts (through a
    pipeline's first steps; ``"passthrough"`` for those it passes on as they are), else the
    whole model for every column."""
    first = _column_transformer(model)
    if first is None:
        return [(names, model)]
    indices = getattr(first, "_transformer_to_input_indices", {})
    return [
        ([names[i] for i in indices.get(label, ())], part)
        for label, part, _ in first.transformers_
        if not isinstance(part, str) or part == "passthrough"
    ]


def _column_transformer(model: Any) -> Any:
    """The ColumnTransformer ``model`` starts with (through pipelines' first steps), or None."""
    from sklearn.compose import ColumnTransformer

    first = model
    while hasattr(first, "steps"):
        first = first.steps[0][1]
    return first if isinstance(first, ColumnTransformer) else None


def _leading(part: Any) -> Iterator[Any]:
    """``part``, or a pipeline's steps up to the first that changes what a column means:
    imputers keep a column a column."""
    from sklearn.impute import SimpleImputer

    for step in [s for _, s in part.steps] if hasattr(part, "steps") else [part]:
        if hasattr(step, "steps"):
            yield from _leading(step)
            return
        yield step
        if not isinstance(step, SimpleImputer):
            return


def _encoded(model: Any, names: list[str]) -> dict[str, tuple[Any, bool, tuple[Any, ...]]]:
    """The categories of each column an encoder reads, whether it refuses others, and the
    values an imputer before it replaces (its ``missing_values`` when that is no NaN: ``-1``,
    ``"?"``), which the encoder never sees but the column may hold."""
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    found: dict[str, tuple[Any, bool, tuple[Any, ...]]] = {}
    for columns, part in _routes(model, names):
        replaced: list[Any] = []
        for step in _leading(part):
            if isinstance(step, SimpleImputer) and not _missing(step.missing_values):
                replaced.append(_plain(step.missing_values))
            if isinstance(step, OneHotEncoder | OrdinalEncoder):
                closed = step.handle_unknown == "error"
                for name, categories in zip(columns, step.categories_, strict=False):
                    known = [v for v in categories if not _missing(v)]
                    found[name] = (known, closed, tuple(replaced))
    return found


def refuse_none_categories(model: Any, columns: list[Column]) -> None:
    """ConversionError for an optional string column whose encoder learnt None as a category:
    the imputer replaces NaN, not the None a DataFrame made from records or SQL holds, so
    scikit-learn answers None as a category of its own, which a missing value served as
    missing would not match."""
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    optional = {c.name for c in columns if c.optional and c.type == "str"}
    for names, part in _routes(model, [c.name for c in columns]):
        for step in _leading(part):
            if not isinstance(step, OneHotEncoder | OrdinalEncoder):
                continue
            for name, categories in zip(names, step.categories_, strict=False):
                if name in optional and any(v is None for v in categories):
                    raise ConversionError(
                        f"column {name!r} held None when the model was fitted: its imputer "
                        "replaces NaN only, so the encoder learnt None as a category, which a "
                        "served request cannot send apart from a missing value; fit it again "
                        "with None as NaN (df[col] = df[col].fillna(np.nan)), or impute None "
                        "(SimpleImputer(missing_values=None))"
                    )


def _imputed(model: Any, names: list[str]) -> set[str]:
    """The columns whose NaN every step reading them first replaces (a SimpleImputer of NaN) or
    takes as missing (XGBoost's and LightGBM's trees, whose converted trees send it where the
    library does; through a ColumnTransformer's passthrough too): a row may leave them out, fed
    to the model as NaN. A column any other step reads first is not, nor one another part of a
    ColumnTransformer reads as well: NaN would reach that step as a value."""
    from sklearn.impute import SimpleImputer

    def takes_nan(part: Any) -> bool:
        for step in _leading(part):
            if isinstance(step, SimpleImputer) and _is_nan(step.missing_values):
                return True
            if _trees_take_nan(step):
                return True
        return False

    after = _after_columns(model)

    def reads(part: Any) -> bool:
        reader = after if _passes(part) else part  # passed on as it is: the next step reads it
        return reader is not None and takes_nan(reader)

    return _on_every_route(model, names, reads)


def _on_every_route(model: Any, names: list[str], holds: Callable[[Any], bool]) -> set[str]:
    """The columns for which ``holds`` is true of every part of ``model`` that reads them
    first (``_routes``): a column another part reads as well must hold there too."""
    each: dict[str, list[bool]] = {}
    for columns, part in _routes(model, names):
        held = holds(part)
        for name in columns:
            each.setdefault(name, []).append(held)
    return {name for name, found in each.items() if all(found)}


def _passes(part: Any) -> bool:
    """A ColumnTransformer's part that passes its columns on as they are: ``"passthrough"``, as
    declared, or the identity FunctionTransformer scikit-learn fits in its place (one that
    validates its input refuses NaN itself)."""
    from sklearn.preprocessing import FunctionTransformer

    if isinstance(part, str):
        return part == "passthrough"
    return isinstance(part, FunctionTransformer) and part.func is None and not part.validate


def _missing_as_unknown(model: Any, names: list[str]) -> set[str]:
    """The columns whose encoder answers a missing value as it answers an unknown one, so that
    the converted model, fed ``MISSING_TEXT`` (a category it never saw), answers as the
    original does NaN: an OrdinalEncoder giving both the same code (``unknown_value`` and
    ``encoded_missing_value``), a OneHotEncoder ignoring unknown categories that never learnt
    NaN as one. Only where every route reading the column starts with such an encoder."""
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    def alike(part: Any) -> bool:
        step = part.steps[0][1] if hasattr(part, "steps") else part
        if isinstance(step, OrdinalEncoder):
            missing, unknown = step.encoded_missing_value, step.unknown_value
            return (
                step.handle_unknown == "use_encoded_value"
                and isinstance(missing, numbers.Real)
                and not _is_nan(missing)
                and missing == unknown
            )
        if isinstance(step, OneHotEncoder):
            learnt = [v for categories in step.categories_ for v in categories]
            return step.handle_unknown == "ignore" and not any(map(_missing, learnt))
        return False

    return _on_every_route(model, names, lambda part: not _passes(part) and alike(part))


def _after_columns(model: Any) -> Any:
    """The step a leading ColumnTransformer's output goes to (the next step of the pipeline
    that starts with it), or None."""
    if not hasattr(model, "steps"):
        return None
    first = model.steps[0][1]
    inner = _after_columns(first) if hasattr(first, "steps") else None
    if inner is not None:
        return inner
    return model.steps[1][1] if len(model.steps) > 1 else None


def _trees_take_nan(step: Any) -> bool:
    """An XGBoost estimator whose ``missing`` is NaN, or a LightGBM one using missing values
    (both their defaults; LightGBM's flags may be given as text, as its own parameters)."""
    library = type(step).__module__.partition(".")[0]
    if library == "xgboost":
        return _is_nan(getattr(step, "missing", None))
    if library == "lightgbm":
        return _flag(getattr(step, "use_missing", True)) and not _flag(
            getattr(step, "zero_as_missing", False)
        )
    return False


def _flag(value: Any) -> bool:
    """A LightGBM boolean parameter: a bool, or text such as ``"false"``."""
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "-", "")
    return bool(value)


def with_missing(rows: Any, columns: list[Column]) -> Any:
    """``rows`` and, when some columns are optional, ``MISSING_ROWS`` more: copies of the first
    with every optional column missing (NaN), so that the proof shows the converted model
    answers a missing value as the original does."""
    import numpy as np
    import pandas as pd  # type: ignore[import-untyped,unused-ignore]

    optional = [c.name for c in columns if c.optional]
    if not optional or not len(rows):
        return rows
    # Each optional column of a type that holds NaN (a float; text as objects, a category too),
    # in the rows given as in those added.
    widened = rows.astype(
        {n: np.float64 if rows[n].dtype.kind in "iufb" else object for n in optional}
    )
    missing = widened.head(MISSING_ROWS).copy()
    for name in optional:
        missing[name] = pd.Series(np.nan, index=missing.index, dtype=widened[name].dtype)
    return pd.concat([widened, missing], ignore_index=True)


# Rows the proof adds with the optional columns missing (``with_missing``).
MISSING_ROWS = 8


def _scaled(model: Any, names: list[str]) -> dict[str, tuple[float, float]]:
    """The centre and spread a fitted scaler (StandardScaler) learnt for each column it reads."""
    import numpy as np

    found: dict[str, tuple[float, float]] = {}
    for columns, part in _routes(model, names):
        for step in _leading(part):
            mean, var = getattr(step, "mean_", None), getattr(step, "var_", None)
            if mean is not None and len(np.atleast_1d(mean)) == len(columns):
                spread = np.sqrt(var) if var is not None else np.ones(len(columns))
                for name, m, s in zip(columns, np.atleast_1d(mean), spread, strict=True):
                    found[name] = (float(m), float(s))
    return found


def _sample_dtypes(sample: Any) -> dict[str, str]:
    try:
        import pandas as pd  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        return {}
    if not isinstance(sample, pd.DataFrame):
        return {}
    kinds = {}
    for name, dtype in sample.dtypes.items():
        if pd.api.types.is_bool_dtype(dtype):  # True/False in its CSV, JSON and Parquet
            kinds[str(name)] = "bool"
        elif pd.api.types.is_integer_dtype(dtype):
            kinds[str(name)] = "int"
        elif pd.api.types.is_numeric_dtype(dtype):
            kinds[str(name)] = "float"
        else:  # object, string, category
            kinds[str(name)] = "str"
    return kinds


def _kind_of_values(values: Any) -> str:
    import numpy as np

    array = np.asarray(values)
    if array.dtype.kind in "iub":
        return "int"
    if array.dtype.kind == "f":
        return "int" if bool(np.all(np.mod(array, 1) == 0)) else "float"
    return "str"


def _missing(value: Any) -> bool:
    return value is None or _is_nan(value)


def _is_nan(value: Any) -> bool:
    """NaN, what pandas reads a missing value as (an imputer of None is left as it is)."""
    return isinstance(value, float) and value != value


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value JSON can hold."""
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value

"""The same endpoint on Spark: ``score(df, "NAME")`` runs ``functions/NAME`` (its schemas,
predict function and model) over a DataFrame, on any Spark cluster or locally.

pyspark is an optional extra (``pip install 'mlfn[spark]'``), imported on first use: a
deployed function app never imports this package.
"""

from __future__ import annotations

import warnings
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.errors import ColumnsRefused, EndpointNotFound, ExtraMissing
from runtime.spark.worker import ERROR_COLUMN

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    import pyarrow as pa
    from pyspark.sql import Column, DataFrame
    from pyspark.sql.types import StructField, StructType

    from runtime.endpoint import BoundEndpoint

__all__ = ["ERROR_COLUMN", "output_schema", "score"]

_LARGE_VAR_TYPES = "spark.sql.execution.arrow.useLargeVarTypes"
_CASE_SENSITIVE = "spark.sql.caseSensitive"


def score(
    df: DataFrame, name: str, app_dir: str | Path = ".", batch_size: int | None = None
) -> DataFrame:
    """Score ``df`` with endpoint ``name`` of the app in ``app_dir``.

    Returns the input's columns, then the output model's fields as columns (by alias), then
    ``error``: null when the row scored, else the row's error as JSON (``{"type", "message",
    "detail"}``, as the queue trigger reports it); a bad row never fails the job, nor does a
    prediction its column cannot hold (``OutputNotRepresentable``). Input columns are matched
    to input fields by name (aliases honoured; a null leaves a field its default); other
    columns are carried through. An output column named like an input column (ignoring case
    unless ``spark.sql.caseSensitive``) is ``ColumnsRefused``; an output type no Spark column
    holds, ``NoSparkType``.

    app_dir: the app folder (holding ``functions/``) as the executors see it, relative to
        each process's working directory; or a zip of it (``mlfn pack``), found where it says
        or among the files shipped with the job (``--py-files app.zip``).
    batch_size: rows per predict call; default the endpoint's ``max_batch_size``.
    """
    require_pyspark()
    from runtime.spark.types import arrow_field
    from runtime.spark.worker import Plan, app_root, fingerprint, score_batches

    if batch_size is not None and batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    bound = endpoint(app_dir, name)
    outputs = output_schema(bound)
    # Spark matches column names ignoring case unless told otherwise: so does this check.
    sensitive = df.sparkSession.conf.get(_CASE_SENSITIVE, "false") == "true"
    fold = (lambda n: n) if sensitive else str.lower
    taken = {fold(c) for c in df.columns}
    clash = sorted(f.name for f in outputs.fields if fold(f.name) in taken)
    if clash:
        raise ColumnsRefused(
            name, f"the input already has columns named like outputs: {', '.join(clash)}"
        )
    added = [fold(f.name) for f in outputs.fields]  # ``error`` included
    alike = sorted({n for n in added if added.count(n) > 1})
    if alike:
        raise ColumnsRefused(name, f"output columns would share a name: {', '.join(alike)}")
    columns = {c: i for i, c in enumerate(df.columns)}
    inputs, missing = [], []
    for field_name, field in bound.endpoint.input.model_fields.items():
        key = field.validation_alias if isinstance(field.validation_alias, str) else None
        key = key or field.alias or field_name
        found = next((c for c in (key, field_name) if c in columns), None)
        if found is not None:
            # A null is left out unless the field takes None: the default applies, or the row
            # is told the field is missing, as for an empty CSV cell in a batch file.
            optional = not field.is_required() or not _takes_none(field)
            inputs.append((columns[found], key, optional))
        elif field.is_required():
            missing.append(key)
    if missing:
        raise ColumnsRefused(
            name, f"no column for input fields {', '.join(missing)}; columns: {df.columns}"
        )
    large = df.sparkSession.conf.get(_LARGE_VAR_TYPES, "false") == "true"
    plan = Plan(
        app_dir=str(app_dir),
        name=name,
        inputs=tuple(inputs),
        outputs=tuple(arrow_field(f, large) for f in outputs.fields[:-1]),
        error=arrow_field(outputs.fields[-1], large),
        batch_size=batch_size,
        fingerprint=fingerprint(app_root(app_dir)),
    )
    # A module-level function and a plain dataclass: the task pickles a reference, so each
    # Python worker keeps one Services (and one loaded model) across its tasks.
    return map_in_arrow(df, partial(score_batches, plan=plan), outputs.fields)


def map_in_arrow(
    df: DataFrame,
    func: Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]],
    added: Sequence[StructField] = (),
) -> DataFrame:
    """``df.mapInArrow(func)`` for a ``func`` that yields each batch's columns, then the
    ``added`` ones, whatever the columns are named. pyspark takes them by unquoted name
    (``df[name]``), where ``user.id`` is field ``id`` of a struct ``user``
    (UNRESOLVED_COLUMN): there, they pass through under stand-in names and get their own
    back after, so ``func`` reads columns by position."""
    from pyspark.sql import types as st

    names = df.columns
    plain = not any("." in n or "`" in n for n in names)
    taken = {f.name.lower() for f in added}
    standins = [_unlike(f"_mlfn_{i}", taken) for i in range(len(names))]
    inner = df if plain else df.toDF(*standins)
    with warnings.catch_warnings():
        # pyspark checks for pandas before any Arrow UDF and warns about pandas 3; mapInArrow
        # hands Arrow batches and never touches pandas.
        warnings.filterwarnings(
            "ignore", "PySpark does not yet fully support pandas", FutureWarning
        )
        mapped = inner.mapInArrow(func, st.StructType([*inner.schema.fields, *added]))
    return mapped if plain else mapped.toDF(*names, *(f.name for f in added))


def _unlike(name: str, taken: set[str]) -> str:
    while name.lower() in taken:
        name += "_"
    return name


def column(name: str) -> Column:
    """The column named ``name``, whatever the name holds: a bare ``user.id`` is field ``id``
    of a struct ``user`` to Spark, so the name is quoted."""
    from pyspark.sql import functions as sf

    return sf.col("`" + name.replace("`", "``") + "`")


def output_schema(bound: BoundEndpoint) -> StructType:
    """The columns ``score`` adds: the output model's fields, each nullable (a row that
    failed has none), then ``error``. An output type no Spark column holds is ``NoSparkType``,
    naming the field."""
    require_pyspark()
    from pyspark.sql import types as st

    from runtime.spark.types import struct_for

    fields = [
        st.StructField(f.name, f.dataType, nullable=True)
        for f in struct_for(bound.endpoint.output).fields
    ]
    if any(f.name == ERROR_COLUMN for f in fields):
        raise ColumnsRefused(bound.name, f"an output field is named {ERROR_COLUMN!r}")
    return st.StructType([*fields, st.StructField(ERROR_COLUMN, st.StringType(), True)])


def endpoint(app_dir: str | Path, name: str) -> BoundEndpoint:
    """The endpoint ``name`` of the app in ``app_dir``, with a predict function."""
    from runtime.spark.worker import app_root, discover_app

    found = {b.name: b for b in discover_app(app_root(app_dir))}
    bound = found.get(name)
    if bound is None:
        raise EndpointNotFound(name)
    if bound.endpoint.predict_fn is None:
        raise ColumnsRefused(name, "a tensor-only endpoint (no predict function) scores no rows")
    return bound


def require_pyspark() -> None:
    """Raise ``ExtraMissing`` naming the extra to install unless pyspark and pyarrow import."""
    try:
        import pyarrow  # noqa: F401
        import pyspark  # noqa: F401
    except ImportError as exc:
        raise ExtraMissing("Spark scoring", exc.name or "pyspark", "spark") from None


def _takes_none(field: Any) -> bool:
    import types
    import typing

    annotation = field.annotation
    if annotation is None or annotation is typing.Any or annotation is type(None):
        return True
    origin = typing.get_origin(annotation)
    return origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(annotation)

"""Spark types from pydantic types: the output model becomes the columns ``score`` adds.

One walk over a field's annotation gives its Spark type; Arrow types (what a Python worker
hands back to Spark) follow from the Spark type, so the table lives here once.
"""

from __future__ import annotations

import datetime as dt
import enum
import types
import typing
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from runtime.errors import NoSparkType

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import types as st

_SEQUENCES = (list, tuple, set, frozenset, Sequence)
_MAPPINGS = (dict, Mapping)


def column_name(name: str, field: Any) -> str:
    """The name a field has in JSON output, and so as a column: its alias when it has one."""
    return str(field.serialization_alias or field.alias or name)


def struct_for(model: type[BaseModel]) -> st.StructType:
    """A model as a struct, as its JSON has it: a field per serialized field, by alias
    (``Field(exclude=True)`` left out, computed fields in), nullable when Optional."""
    from pyspark.sql import types as st

    fields = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        spark, nullable = spark_type(field.annotation, where=f"{model.__name__}.{name}")
        fields.append(st.StructField(column_name(name, field), spark, nullable))
    for name, computed in model.model_computed_fields.items():
        spark, nullable = spark_type(computed.return_type, where=f"{model.__name__}.{name}")
        fields.append(st.StructField(str(computed.alias or name), spark, nullable))
    return st.StructType(fields)


def spark_type(annotation: Any, where: str = "field") -> tuple[st.DataType, bool]:
    """The Spark type of a pydantic annotation and whether it may be null (``X | None``).

    Numbers, strings, booleans, dates and times, ``Literal`` and enums of one kind, lists (and
    tuples, sets) as arrays, dicts with ``str`` or ``int`` keys as maps, models as structs;
    anything else (``bytes`` too) is ``NoSparkType`` naming ``where``."""
    from pyspark.sql import types as st

    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return spark_type(typing.get_args(annotation)[0], where)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) != 1:
            raise NoSparkType(where, f"a union of several types has no Spark type: {annotation}")
        inner, _ = spark_type(members[0], where)
        return inner, len(members) < len(typing.get_args(annotation))
    if origin is typing.Literal:
        kinds = {type(v) for v in typing.get_args(annotation)}
        if len(kinds) != 1:
            raise NoSparkType(where, f"a Literal of mixed types has no Spark type: {annotation}")
        return spark_type(kinds.pop(), where)
    if origin is not None and isinstance(origin, type) and issubclass(origin, _SEQUENCES):
        args = typing.get_args(annotation)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis) and len(set(args)) > 1:
            raise NoSparkType(where, f"a tuple of mixed types has no Spark type: {annotation}")
        element, nullable = spark_type(args[0] if args else Any, f"{where}[]")
        return st.ArrayType(element, containsNull=nullable), False
    if origin is not None and isinstance(origin, type) and issubclass(origin, _MAPPINGS):
        key_type, value_type = (typing.get_args(annotation) or (str, Any))[:2]
        key, _ = spark_type(key_type, f"{where} key")
        if not isinstance(key, (st.StringType, st.LongType)):
            # JSON keys are strings: only str and int keys come back as what they were.
            raise NoSparkType(where, f"a map's keys must be str or int, not {key_type!r}")
        value, nullable = spark_type(value_type, f"{where} value")
        return st.MapType(key, value, valueContainsNull=nullable), False
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return struct_for(annotation), False
        if issubclass(annotation, enum.Enum):
            return spark_type(type(next(iter(annotation)).value), where)
        if issubclass(annotation, bytes):
            # Predictions reach the worker as JSON, which has no bytes: pydantic writes them as
            # UTF-8 text (non-UTF-8 bytes fail every row) or base64, never the bytes themselves.
            raise NoSparkType(
                where,
                "bytes have no Spark column here (predictions travel as JSON): "
                "use a str (base64, say)",
            )
        for python, spark in _scalars():
            if issubclass(annotation, python):
                return spark(), False
    if annotation is Any or annotation in (*_SEQUENCES, *_MAPPINGS):
        raise NoSparkType(
            where, f"{annotation!r} is unparameterized or Any: say list[X], dict[str, X]"
        )
    raise NoSparkType(
        where,
        f"no Spark type for {getattr(annotation, '__name__', annotation)!r}: use one of "
        "int, float, str, bool, datetime, date, a list, a dict or a model",
    )


def _scalars() -> list[tuple[type, Any]]:
    from pyspark.sql import types as st

    # bool before int (bool is an int), datetime before date (a datetime is a date).
    return [
        (bool, st.BooleanType),
        (int, st.LongType),
        (float, st.DoubleType),
        (str, st.StringType),
        (dt.datetime, st.TimestampType),
        (dt.date, st.DateType),
    ]


def arrow_type(spark: st.DataType, large: bool = False) -> pa.DataType:
    """The Arrow type a Python worker hands Spark for a Spark type; ``large``: Spark's
    ``spark.sql.execution.arrow.useLargeVarTypes`` (64-bit offsets for strings, bytes)."""
    import pyarrow as pa
    from pyspark.sql import types as st

    if isinstance(spark, st.StructType):
        return pa.struct([arrow_field(f, large) for f in spark.fields])
    if isinstance(spark, st.ArrayType):
        element = pa.field("element", arrow_type(spark.elementType, large), spark.containsNull)
        return pa.list_(element)  # Spark uses large types for strings and bytes alone
    if isinstance(spark, st.MapType):
        value = pa.field("value", arrow_type(spark.valueType, large), spark.valueContainsNull)
        return pa.map_(arrow_type(spark.keyType, large), value)
    simple = {
        st.BooleanType: pa.bool_(),
        st.LongType: pa.int64(),
        st.DoubleType: pa.float64(),
        st.StringType: pa.large_string() if large else pa.string(),
        st.BinaryType: pa.large_binary() if large else pa.binary(),
        st.TimestampType: pa.timestamp("us", tz="UTC"),
        st.DateType: pa.date32(),
    }
    for kind, arrow in simple.items():
        if isinstance(spark, kind):
            return arrow
    raise TypeError(f"no Arrow type for Spark type {spark}")


def arrow_field(field: st.StructField, large: bool = False) -> pa.Field:
    import pyarrow as pa

    return pa.field(field.name, arrow_type(field.dataType, large), field.nullable)

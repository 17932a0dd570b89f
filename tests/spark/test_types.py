"""Spark types from pydantic types (pyspark's type classes; no JVM)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal, Optional

import pytest
from click.testing import CliRunner
from pydantic import BaseModel, Field

from tests.spark.spark_support import needs_spark


class Inner(BaseModel):
    lat: float
    note: Optional[str] = None  # noqa: UP045 - both spellings are in use


class Everything(BaseModel):
    count: int
    value: float
    name: str
    flag: bool
    values: list[float]
    inner: Inner
    scores: dict[str, float]
    maybe: int | None = None
    maybe_values: list[float | None] | None = None
    kind: Literal["a", "b"] = "a"
    renamed: str = Field("x", serialization_alias="renamedField")


@needs_spark
def test_each_pydantic_type_has_its_spark_type_and_optional_fields_are_nullable() -> None:
    from pyspark.sql import types as st

    from runtime.spark.types import struct_for

    inner = st.StructType(
        [
            st.StructField("lat", st.DoubleType(), False),
            st.StructField("note", st.StringType(), True),
        ]
    )
    assert struct_for(Everything) == st.StructType(
        [
            st.StructField("count", st.LongType(), False),
            st.StructField("value", st.DoubleType(), False),
            st.StructField("name", st.StringType(), False),
            st.StructField("flag", st.BooleanType(), False),
            st.StructField("values", st.ArrayType(st.DoubleType(), containsNull=False), False),
            st.StructField("inner", inner, False),
            st.StructField("scores", st.MapType(st.StringType(), st.DoubleType(), False), False),
            st.StructField("maybe", st.LongType(), True),
            st.StructField("maybe_values", st.ArrayType(st.DoubleType(), True), True),
            st.StructField("kind", st.StringType(), False),
            st.StructField("renamedField", st.StringType(), False),
        ]
    )


@needs_spark
def test_arrow_types_follow_the_spark_types_nullability_included() -> None:
    import pyarrow as pa

    from runtime.spark.types import arrow_type, struct_for

    arrow = arrow_type(struct_for(Everything))
    assert arrow.field("values").type == pa.list_(pa.field("element", pa.float64(), False))
    assert arrow.field("inner").type == pa.struct(
        [pa.field("lat", pa.float64(), False), pa.field("note", pa.string(), True)]
    )
    assert arrow.field("scores").type == pa.map_(
        pa.string(), pa.field("value", pa.float64(), False)
    )
    assert arrow.field("maybe").nullable and not arrow.field("count").nullable
    assert arrow_type(struct_for(Inner), large=True).field("note").type == pa.large_string()


@needs_spark
def test_a_type_spark_cannot_hold_is_refused_naming_the_field() -> None:
    from runtime.spark.types import struct_for

    class Mixed(BaseModel):
        either: int | str

    with pytest.raises(TypeError, match=r"Mixed\.either: a union of several types"):
        struct_for(Mixed)


def test_without_pyspark_scoring_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from runtime.errors import ExtraMissing
    from runtime.spark import score

    monkeypatch.setitem(sys.modules, "pyspark", None)  # as if not installed
    with pytest.raises(ExtraMissing, match=r"pip install 'mlfn\[spark\]'"):
        score(object(), "iris")  # type: ignore[arg-type]


def test_without_pyspark_the_command_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from runtime.cli import main

    monkeypatch.setitem(sys.modules, "pyspark", None)
    monkeypatch.chdir(tmp_path)  # no local.settings.json to apply
    result = CliRunner().invoke(main, ["spark-score", "iris", "in.parquet", "out.parquet"])
    assert result.exit_code == 1
    assert result.output == (
        "Error: Spark scoring needs pyspark, which is not installed: pip install 'mlfn[spark]'\n"
    )
    assert "Traceback" not in result.output

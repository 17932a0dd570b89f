"""Spark types from pydantic types (pyspark's type classes; no JVM)."""

from __future__ import annotations

import datetime as dt
import decimal
import os
import sys
import uuid
from pathlib import Path
from typing import Literal, Optional

import pytest
from click.testing import CliRunner
from pydantic import BaseModel, Field, computed_field, create_model

from tests.spark.spark_support import needs_spark, row_endpoint


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
    large = arrow_type(struct_for(Everything), large=True)
    assert large.field("inner").type.field("note").type == pa.large_string()
    # Spark takes large types for strings and bytes only, never for arrays
    assert large.field("values").type == pa.list_(pa.field("element", pa.float64(), False))


@needs_spark
def test_a_type_spark_cannot_hold_is_refused_naming_the_field() -> None:
    from runtime.errors import NoSparkType
    from runtime.spark.types import struct_for

    class Mixed(BaseModel):
        either: int | str

    with pytest.raises(NoSparkType, match=r"Mixed\.either: a union of several types"):
        struct_for(Mixed)
    for annotation, says in [
        (decimal.Decimal, "no Spark type for 'Decimal'"),
        (uuid.UUID, "no Spark type for 'UUID'"),
        (dt.timedelta, "no Spark type for 'timedelta'"),
        (list, "unparameterized"),
        (dict[float, int], "keys must be str or int"),
    ]:
        odd = create_model("Odd", field=(annotation, ...))
        with pytest.raises(NoSparkType, match=rf"Odd\.field: .*{says}"):
            struct_for(odd)


@needs_spark
def test_a_bytes_output_is_refused_naming_the_field_at_any_depth() -> None:
    from runtime.errors import NoSparkType
    from runtime.spark.types import struct_for

    # JSON carries no bytes: a prediction's non-UTF-8 bytes fail to serialise on every row.
    for annotation, where in [
        (bytes, r"Odd\.field"),
        (bytes | None, r"Odd\.field"),
        (list[bytes], r"Odd\.field\[\]"),
        (dict[str, bytes], r"Odd\.field value"),
    ]:
        odd = create_model("Odd", field=(annotation, ...))
        with pytest.raises(NoSparkType, match=rf"{where}: bytes have no Spark column here"):
            struct_for(odd)


@needs_spark
def test_columns_are_the_json_fields_computed_in_excluded_out() -> None:
    from runtime.spark.types import struct_for

    class Shown(BaseModel):
        seen: int
        secret: str = Field("s", exclude=True)

        @computed_field  # type: ignore[prop-decorator]
        @property
        def twice(self) -> int:
            return 2 * self.seen

    assert struct_for(Shown).fieldNames() == ["seen", "twice"]


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


@needs_spark
def test_the_command_keeps_spark_submits_master_and_is_local_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pyspark.sql import SparkSession

    from runtime.spark.files import session

    # The builder's options instead of a session: no JVM.
    monkeypatch.setattr(SparkSession.Builder, "getOrCreate", lambda self: dict(self._options))
    monkeypatch.setattr("pyspark.SparkContext._active_spark_context", None)
    monkeypatch.delenv("PYSPARK_PYTHON", raising=False)
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "40000")  # as spark-submit runs a program
    assert "spark.master" not in session(None, "job")  # type: ignore[operator]
    assert "PYSPARK_PYTHON" not in os.environ
    assert session("yarn", "job")["spark.master"] == "yarn"  # type: ignore[index]
    assert "PYSPARK_PYTHON" not in os.environ  # the cluster's Python, not this one

    monkeypatch.delenv("PYSPARK_GATEWAY_PORT")
    assert session(None, "job")["spark.master"] == "local[*]"  # type: ignore[index]
    assert os.environ["PYSPARK_PYTHON"] == sys.executable


DECIMAL_OUT = row_endpoint("price: Decimal", "price=Decimal(r.x)", "from decimal import Decimal")


@needs_spark
def test_the_command_refuses_an_output_type_spark_cannot_hold_before_spark_starts(
    tmp_path: Path, isolated_imports: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyspark.sql import SparkSession

    from runtime.errors import NoSparkType
    from runtime.spark.files import run
    from tests.support import make_app

    def no_jvm(self: object) -> None:
        raise AssertionError("a Spark session was started")

    monkeypatch.setattr(SparkSession.Builder, "getOrCreate", no_jvm)
    app = make_app(tmp_path / "app", {"priced": DECIMAL_OUT})
    with pytest.raises(NoSparkType, match=r"Out\.price: no Spark type for 'Decimal'"):
        run("priced", "in.parquet", "out.parquet", app_dir=app)

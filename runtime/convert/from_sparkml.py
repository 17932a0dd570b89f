"""Spark ML pipeline models through onnxmltools: one input per column the pipeline reads
(double columns as float32 [N, 1]); the outputs keep onnxmltools' names (``prediction``,
``probability``...), compared with the columns ``transform`` adds."""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from collections.abc import Iterator
from typing import Any

from runtime.convert.base import CLASSES_KEY, Converted, quiet, require, set_metadata
from runtime.errors import ConversionError

EXTRA = "convert-sparkml"
ANSWERS = ("prediction", "probability", "rawPrediction")
OPSET = 15  # the highest onnxmltools' Spark ML converters write (1.16)


def convert(model: Any, sample: Any, rows: int, options: dict[str, Any]) -> Converted:
    """Convert a fitted ``PipelineModel`` whose input columns are numeric, proven on ``sample``
    (a DataFrame, or an array ``[rows, columns]`` of the columns its first stage reads), else on
    rows synthesised for those columns."""
    require("pyspark", "Spark ML", EXTRA)
    onnxmltools = require("onnxmltools", "Spark ML", EXTRA)
    import numpy as np
    from onnxmltools.convert.common.data_types import FloatTensorType

    spark = options.get("spark") or session()
    columns = _input_columns(model)
    synthesised = sample is None
    sample = _frame(spark, sample, rows, columns)
    read = sample.select(*columns).collect()
    feeds = {c: np.array([[row[c]] for row in read], dtype=np.float32) for c in columns}
    # onnxmltools prints some converters' attributes to stdout, and pyspark warns as it turns
    # the pipeline's parameters into pandas: neither is the user's business.
    try:
        with quiet("py4j"), contextlib.redirect_stdout(io.StringIO()), _scratch_tempdir():
            onnx_model = onnxmltools.convert_sparkml(
                model,
                "sparkml",
                [(c, FloatTensorType([None, 1])) for c in columns],
                spark_session=spark,
                target_opset=options.get("opset", OPSET),
            )
    except Exception as exc:  # onnxmltools raises many kinds; all mean "cannot convert this"
        raise ConversionError(f"onnxmltools cannot convert the pipeline: {exc}") from None
    answered = model.transform(sample)
    outputs = {o.name for o in onnx_model.graph.output}
    expected = {}
    for column in ANSWERS:
        if column in outputs and column in answered.columns:
            values = [_plain(row[column]) for row in answered.select(column).collect()]
            expected[column] = np.asarray(values)
    if not expected:
        raise ConversionError(f"the ONNX model answers none of {', '.join(ANSWERS)}")
    if options.get("classes"):
        set_metadata(onnx_model, {CLASSES_KEY: json.dumps([str(c) for c in options["classes"]])})
    return Converted(onnx_model, feeds, expected, synthesised=synthesised)


@contextlib.contextmanager
def _scratch_tempdir() -> Iterator[None]:
    """``tempfile.tempdir`` pointed at a folder removed afterwards: onnxmltools saves each tree
    model there (a local master) to read its nodes back, and never removes it."""
    with tempfile.TemporaryDirectory(prefix="mlfn-convert-") as scratch:
        saved, tempfile.tempdir = tempfile.tempdir, scratch
        try:
            yield
        finally:
            tempfile.tempdir = saved


def session() -> Any:
    """A local SparkSession (the active one, if any): converting runs the pipeline."""
    from pyspark.sql import SparkSession

    # A conversion needs no web UI, and a local driver only its loopback address.
    return (
        SparkSession.builder.master("local[1]")
        .appName("mlfn-convert")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .getOrCreate()
    )


def _frame(spark: Any, sample: Any, rows: int, columns: list[str]) -> Any:
    """The sample as a DataFrame: as given, else from an array's rows (``mlfn convert --sample
    FILE.npy``) or standard normal ones, a column each for ``columns``."""
    import numpy as np
    from pyspark.sql import DataFrame

    if isinstance(sample, DataFrame):
        return sample
    if sample is None:
        data = np.random.default_rng(0).standard_normal((rows, len(columns)))
    else:
        data = np.asarray(sample, dtype=np.float64)
        if data.ndim != 2 or data.shape[1] != len(columns):
            raise ConversionError(
                f"a Spark ML sample array is [rows, {len(columns)}], one column each for "
                f"{', '.join(columns)}; this one is shaped {list(data.shape)}"
            )
    return spark.createDataFrame(data.tolist(), columns)


def _input_columns(model: Any) -> list[str]:
    first = model.stages[0]
    for param in ("inputCols", "inputCol", "featuresCol"):
        if first.hasParam(param) and first.isDefined(param):
            value = first.getOrDefault(param)
            return list(value) if isinstance(value, list) else [value]
    raise ConversionError(f"cannot tell which columns {type(first).__name__} reads")


def _plain(value: Any) -> Any:
    return value.toArray().tolist() if hasattr(value, "toArray") else value

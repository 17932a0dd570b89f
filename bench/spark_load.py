"""Spark scoring: ``runtime.spark.score`` against the ``mapInArrow`` UDF a user would write
instead, on the same DataFrame, for a 13-feature classifier and the 256-float MLP (issue 23).

    python -m bench.spark_load [--quick]

Both endpoints are made as a user makes them, in a temporary app folder: the classifier (a
scaler and a logistic regression fitted on 2,000 synthetic rows) by ``mlfn convert``, then each
endpoint by ``mlfn new NAME --model models/NAME.onnx`` (the tensor template, whatever predict
form it writes). The hand-written UDF (``handwritten``) takes each Arrow batch's feature column
as numpy, runs ``session.run`` in chunks of the endpoint's ``max_batch_size`` and adds the
output columns; its session is kept per Python worker process, by model path.

Each model gets a SparkSession of its own (local[2]), so its first job starts the Python
workers. The DataFrame (``sin(id * F + i)`` for feature ``i``, 8 partitions) is cached before
any job, so both paths read the same partitions from memory, and the output goes to Spark's
``noop`` sink: the time is scoring. Jobs alternate, mlfn then UDF, four rounds (two with
``--quick``): mlfn's first job pays for starting the workers and loading the model in each, the
UDF's first one is its warm-up, and the warm figure of each is its fastest later job (the
machine is shared: the fastest is the least disturbed). Every worker runs one onnxruntime thread
(mlfn's default in a Spark task: the CPUs Spark gives it; the UDF's ``intra_op_num_threads=1``).
After timing, both score the first 1,000 rows: the outputs must agree (labels equal,
floats within 1e-5) with mlfn's error column null; and no row of mlfn's over all rows may
carry an error.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tests.models.onnx_builders import mlp
from tests.support import ROOT, make_app

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

PARTITIONS = 8
ROUNDS = 4  # each path's jobs: the first, then warm ones
SAMPLE = 1_000  # rows both paths score after timing, compared
TRAIN_ROWS = 2_000  # the classifier's training rows (and conversion proof)


@dataclass(frozen=True)
class Case:
    name: str  # the endpoint, and its model models/NAME.onnx
    label: str
    features: int
    rows: int


@dataclass(frozen=True)
class Run:
    case: Case
    session_s: float  # the SparkSession (and, for the first, the JVM)
    mlfn_first_s: float  # the workers started, each loads the model, every row scored
    mlfn_warm_s: float  # the fastest of the later jobs
    udf_warm_s: float  # likewise (its first job is its warm-up)
    warm_jobs: int
    compared: int  # sample rows on which both paths agreed


def cases(quick: bool) -> tuple[Case, ...]:
    return (
        Case("classifier", "13-feature classifier", 13, 2_000 if quick else 200_000),
        Case("mlp", "256-float MLP", 256, 1_000 if quick else 50_000),
    )


def features(ids: np.ndarray, count: int) -> np.ndarray:
    """The rows Spark makes (``sin(id * count + i)``), for fitting the classifier."""
    return np.sin(ids[:, None] * count + np.arange(count)[None, :])


# The hand-written path: what a user writes instead of mlfn.

_sessions: dict[str, Any] = {}  # by model path: one session per Python worker process


def handwritten(
    batches: Iterator[pa.RecordBatch], model: str, batch_size: int
) -> Iterator[pa.RecordBatch]:
    """A ``mapInArrow`` function: each input's column as numpy, ``session.run`` per
    ``batch_size`` rows, the batch's columns then one column per model output."""
    import onnxruntime as ort
    import pyarrow as pa

    session = _sessions.get(model)
    if session is None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # a worker per core already
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        _sessions[model] = session
    dtypes = {"tensor(float)": np.float32, "tensor(double)": np.float64}
    names = [o.name for o in session.get_outputs()]
    for batch in batches:
        feeds = {
            i.name: batch.column(i.name).flatten().to_numpy().astype(dtypes[i.type])
            for i in session.get_inputs()
        }
        feeds = {k: v.reshape(batch.num_rows, -1) for k, v in feeds.items()}
        chunks = [
            session.run(None, {k: v[start : start + batch_size] for k, v in feeds.items()})
            for start in range(0, batch.num_rows, batch_size)
        ]
        columns = []
        for j in range(len(names)):
            out = np.concatenate([c[j] for c in chunks])
            if out.ndim == 1:
                columns.append(pa.array(out))
            else:
                offsets = np.arange(0, out.size + 1, out.shape[1], dtype=np.int32)
                columns.append(pa.ListArray.from_arrays(offsets, out.ravel()))
        yield pa.RecordBatch.from_arrays(
            [*batch.columns, *columns], names=[*batch.schema.names, *names]
        )


def udf_score(df: DataFrame, model: Path, batch_size: int) -> DataFrame:
    import onnxruntime as ort
    from pyspark.sql import types as st

    from bench import spark_load  # this module by its name: the task pickles a reference

    types: dict[str, st.DataType] = {
        "tensor(float)": st.FloatType(),
        "tensor(double)": st.DoubleType(),
        "tensor(int64)": st.LongType(),
    }
    added = []
    for o in ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).get_outputs():
        kind = types[o.type]
        added.append(st.StructField(o.name, kind if len(o.shape) == 1 else st.ArrayType(kind)))

    run = partial(spark_load.handwritten, model=str(model), batch_size=batch_size)
    return df.mapInArrow(run, st.StructType([*df.schema.fields, *added]))


# The app, made with the CLI.


def build_app(tmp: Path) -> Path:
    """An app folder with endpoints ``classifier`` and ``mlp``, each made by ``mlfn new``."""
    import joblib
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    app = make_app(tmp / "app", {})
    (app / "models").mkdir()
    mlp(app / "models" / "mlp.onnx")
    x = features(np.arange(TRAIN_ROWS), 13)
    weights = np.random.default_rng(0).standard_normal(13)
    fitted = make_pipeline(StandardScaler(), LogisticRegression()).fit(
        x, (x @ weights > 0).astype(np.int64)
    )
    joblib.dump(fitted, tmp / "classifier.joblib")
    np.save(tmp / "rows.npy", x)
    _mlfn(app, "convert", str(tmp / "classifier.joblib"), "--to", "models/classifier.onnx",
          "--sample", str(tmp / "rows.npy"))  # fmt: skip
    for name in ("classifier", "mlp"):
        _mlfn(app, "new", name, "--model", f"models/{name}.onnx")
    return app


def _mlfn(app: Path, *args: str) -> None:
    command = [str(Path(sys.executable).parent / "mlfn"), *args]
    done = subprocess.run(command, cwd=app, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"mlfn {' '.join(args)} failed:\n{done.stdout}{done.stderr}")


# Spark.


def run(quick: bool) -> list[Run]:
    with tempfile.TemporaryDirectory(prefix="mlfn-spark-") as name:
        tmp = Path(name)
        app = build_app(tmp)
        saved = dict(os.environ)
        # The workers inherit the environment the JVM starts with.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p
        )  # the workers import bench.spark_load.handwritten
        os.environ["MLFN_CACHE_DIR"] = str(tmp / "cache")
        try:
            return [_run(app, case, 2 if quick else ROUNDS) for case in cases(quick)]
        finally:
            os.environ.clear()
            os.environ.update(saved)


def _run(app: Path, case: Case, rounds: int) -> Run:
    from pyspark.sql import functions as sf

    from runtime.spark import endpoint, score

    started = time.perf_counter()
    spark = _session()
    session_s = time.perf_counter() - started
    try:
        model = app / "models" / f"{case.name}.onnx"
        batch_size = endpoint(app, case.name).endpoint.limits.max_batch_size
        column = _input_name(model)
        df = spark.range(0, case.rows, 1, PARTITIONS).selectExpr(
            "id",
            f"transform(sequence(0, {case.features - 1}), "
            f"i -> sin(id * {case.features} + i)) AS `{column}`",
        )
        df.cache()
        df.count()
        mlfn = score(df, case.name, app_dir=app)
        udf = udf_score(df, model, batch_size)
        times: dict[str, list[float]] = {"mlfn": [], "udf": []}
        for _ in range(rounds):
            for label, scored in (("mlfn", mlfn), ("udf", udf)):
                started = time.perf_counter()
                scored.write.format("noop").mode("overwrite").save()
                times[label].append(time.perf_counter() - started)
        sample = df.where(sf.col("id") < SAMPLE)
        compared = _compare(
            score(sample, case.name, app_dir=app), udf_score(sample, model, batch_size), model
        )
        errors = mlfn.where(sf.col("error").isNotNull()).count()
        assert errors == 0, f"{case.name}: {errors} rows failed in mlfn"
        df.unpersist()
    finally:
        spark.stop()
    mlfn_first, *mlfn_warm = times["mlfn"]
    warm = (min(mlfn_warm), min(times["udf"][1:]))
    return Run(case, session_s, mlfn_first, *warm, rounds - 1, compared)


def _session() -> SparkSession:
    from pyspark.sql import SparkSession

    # No /tmp/hsperfdata_USER left behind by the launcher's and the driver's JVMs.
    for variable in ("SPARK_LAUNCHER_OPTS", "SPARK_SUBMIT_OPTS"):
        os.environ[variable] = f"{os.environ.get(variable, '')} -XX:-UsePerfData".strip()
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("mlfn-bench")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _input_name(model: Path) -> str:
    import onnxruntime as ort

    (single,) = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).get_inputs()
    return str(single.name)


def _compare(mlfn: DataFrame, udf: DataFrame, model: Path) -> int:
    """Both paths' outputs on the same rows: equal within float tolerance (labels exactly),
    mlfn's error column null. Returns how many rows were compared."""
    import onnxruntime as ort

    outputs = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).get_outputs()
    ours = mlfn.orderBy("id").toArrow()
    theirs = udf.orderBy("id").toArrow()
    assert ours.num_rows == theirs.num_rows > 0, (ours.num_rows, theirs.num_rows)
    errors = ours.column("error")
    assert errors.null_count == len(errors), errors.drop_null().to_pylist()[:3]
    for name in (o.name for o in outputs):
        a, b = (np.array(t.column(name).to_pylist()) for t in (ours, theirs))
        if np.issubdtype(b.dtype, np.integer):
            np.testing.assert_array_equal(a, b, err_msg=name)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)
    return int(ours.num_rows)


def missing() -> str | None:
    """Why Spark cannot run here, or None."""
    for module, extra in (("pyspark", "spark"), ("sklearn", "convert-sklearn")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install 'mlfn[{extra}]')"
    if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        return "no Java runtime (java on PATH or JAVA_HOME)"
    return None


def table(runs: list[Run] | str) -> str:
    if isinstance(runs, str):
        return f"| Spark scoring |\n|---|\n| skipped: {runs} |"
    lines = [
        f"| Spark scoring, local[2], {PARTITIONS} partitions, `noop` sink | rows "
        "| hand-written mapInArrow UDF warm, rows/s | runtime.spark.score warm, rows/s "
        "| of the UDF | first job, rows/s | of the UDF |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        udf = r.case.rows / r.udf_warm_s
        warm = r.case.rows / r.mlfn_warm_s
        first = r.case.rows / r.mlfn_first_s
        lines.append(
            f"| {r.case.label}, `mlfn new` (tensor template) | {r.case.rows:,} | {udf:.0f} "
            f"| {warm:.0f} | {warm / udf:.2f}x | {first:.0f} | {first / udf:.2f}x |"
        )
    sessions = ", ".join(f"{r.session_s:.1f} s" for r in runs)
    compared = ", ".join(f"{r.compared:,}" for r in runs)
    lines.append(
        f"| warm: the fastest of the {runs[0].warm_jobs} job(s) after each path's first, the two "
        f"alternating; SparkSession start ({sessions}); outputs equal on the first {compared} "
        "rows, no mlfn row in error | | | | | | |"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    args = parser.parse_args()
    print(table(missing() or run(args.quick)))


if __name__ == "__main__":
    main()

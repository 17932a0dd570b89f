"""Spark scoring: ``runtime.spark.score`` on Spark local[2] against raw onnxruntime in one
process and the queue trigger, on the MLP endpoint of the other benchmarks (256 floats a row).

    python -m scripts.azurite run -- python -m bench.spark_load [--quick] [--rows N]

The Spark rows are made by Spark itself (``sin(id * 256 + i)``, 8 partitions) and written to
Spark's ``noop`` sink, so the time is scoring, not I/O. Raw onnxruntime runs the same rows in
one process, in batches of the endpoint's ``max_batch_size`` (64), on its default threads
(every core); each Spark worker runs one onnxruntime thread, as docs/spark.md advises. The
first job pays for starting the Python workers and loading the model in each; the second finds
them warm. The queue trigger's row is another benchmark's number, for scale: queue_load's own
rows (messages of 8, the same model and row shape) drained by ``mlfn serve`` from Azurite,
not these rows.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench import queue_load
from bench.http_load import build_app

PARTITIONS = 8
BATCH = 64  # the MLP endpoint's max_batch_size
FEATURES = 256


@dataclass(frozen=True)
class SparkRun:
    rows: int
    session_s: float  # the JVM and the SparkSession
    first_s: float  # Python workers started, the model loaded in each, every row scored
    warm_s: float  # the same job again
    raw_s: float  # onnxruntime alone, in this process
    queue_rows_per_s: float | None  # queue_load's, over its own rows
    queue_rows: int | None = None  # how many rows that was, when known


def _features(ids: np.ndarray) -> np.ndarray:
    return np.sin(ids[:, None] * FEATURES + np.arange(FEATURES)[None, :]).astype(np.float32)


def raw_onnxruntime(model: Path, rows: int) -> float:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    x = _features(np.arange(rows))
    started = time.perf_counter()
    for start in range(0, rows, BATCH):
        session.run(None, {"x": x[start : start + BATCH]})
    return time.perf_counter() - started


def spark_runs(app: Path, cache: Path, rows: int) -> tuple[float, float, float]:
    saved = dict(os.environ)
    # The workers inherit the environment the JVM starts with.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ["MLFN_CACHE_DIR"] = str(cache)
    os.environ["MLFN_ORT_INTRA_OP_THREADS"] = "1"  # a worker per core already (docs/spark.md)
    try:
        return _spark_runs(app, rows)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _spark_runs(app: Path, rows: int) -> tuple[float, float, float]:
    started = time.perf_counter()
    from pyspark.sql import SparkSession

    from runtime.spark import score

    spark = (
        SparkSession.builder.master("local[2]")
        .appName("mlfn-bench")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    session_s = time.perf_counter() - started
    try:
        df = spark.range(0, rows, 1, PARTITIONS).selectExpr(
            "id", f"transform(sequence(0, {FEATURES - 1}), i -> sin(id * {FEATURES} + i)) AS x"
        )
        times = []
        for _ in range(2):
            scored = score(df, "mlp", app_dir=app)
            started = time.perf_counter()
            scored.write.format("noop").mode("overwrite").save()
            times.append(time.perf_counter() - started)
        errors = score(df, "mlp", app_dir=app).where("error IS NOT NULL").count()
        assert errors == 0, f"{errors} rows failed"
    finally:
        spark.stop()
    return session_s, times[0], times[1]


def missing() -> str | None:
    """Why Spark cannot run here, or None."""
    if importlib.util.find_spec("pyspark") is None:
        return "pyspark is not installed (pip install 'mlfn[spark]')"
    if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        return "no Java runtime (java on PATH or JAVA_HOME)"
    return None


def run(
    rows: int,
    queue_rows_per_s: float | None = None,
    queue_messages: int = 0,
    queue_rows: int | None = None,
) -> SparkRun:
    with tempfile.TemporaryDirectory(prefix="mlfn-spark-") as name:
        tmp = Path(name)
        app, model = build_app(tmp)
        raw_s = raw_onnxruntime(model, rows)
        session_s, first_s, warm_s = spark_runs(app, tmp / "cache", rows)
    if queue_rows_per_s is None and queue_messages:
        queue_rows_per_s = queue_load.run(queue_messages)[0].rows_per_s
        queue_rows = queue_messages * queue_load.ROWS_PER_MESSAGE
    return SparkRun(rows, session_s, first_s, warm_s, raw_s, queue_rows_per_s, queue_rows)


def table(r: SparkRun | str) -> str:
    if isinstance(r, str):
        return f"| Spark scoring |\n|---|\n| skipped: {r} |"
    raw = r.rows / r.raw_s
    lines = [
        f"| Spark scoring, {r.rows} MLP rows (256 floats) | rows/s | of raw onnxruntime |",
        "|---|---:|---:|",
        f"| raw onnxruntime, one process, batches of {BATCH} | {raw:.0f} | 1.00x |",
    ]
    for label, seconds in (
        (f"runtime.spark.score, local[2], {PARTITIONS} partitions, warm", r.warm_s),
        ("the same, first job (workers start, each loads the model)", r.first_s),
    ):
        lines.append(f"| {label} | {r.rows / seconds:.0f} | {r.rows / seconds / raw:.2f}x |")
    if r.queue_rows_per_s is not None:
        q = r.queue_rows_per_s
        lines.append(f"| {_queue_label(r.queue_rows)} | {q:.0f} | {q / raw:.2f}x |")
    lines.append(f"| JVM and SparkSession start | {r.session_s:.1f} s | |")
    return "\n".join(lines)


def _queue_label(rows: int | None) -> str:
    """The queue row says it is another benchmark's number: other rows, another run."""
    count = f"{rows:,} other rows" if rows else "other rows"
    return (
        f"queue trigger (mlfn serve), from the queue benchmark "
        f"({count}, {queue_load.ROWS_PER_MESSAGE} a message)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    parser.add_argument("--rows", type=int, default=None)
    args = parser.parse_args()
    rows = args.rows or (2_000 if args.quick else 200_000)
    print(table(missing() or run(rows, queue_messages=20 if args.quick else 400)))


if __name__ == "__main__":
    main()

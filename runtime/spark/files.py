"""``mlfn spark-score``: a file (Parquet, JSON Lines, CSV; local, ``abfss://``, ``s3a://``) in,
the scored file out, on the configured cluster or a local Spark session."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit
from urllib.request import url2pathname

from runtime.errors import BadRequest, MlfnError, SparkJobFailed

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}
# CSV read and written alike, so the command's output reads back as its input does: a header,
# and quotes inside a field doubled as RFC 4180 (and Python's csv module, pandas and the batch
# trigger's CSV) has them, not Spark's default backslash.
CSV_OPTIONS = {"header": "true", "escape": '"'}


@dataclass(frozen=True)
class Summary:
    rows: int
    errors: int
    seconds: float


def session(master: str | None, app_name: str) -> SparkSession:
    """The Spark session: the active one, or the one ``spark-submit`` configured (its master
    kept); else a new one on ``master``, by default a local one (``local[*]``)."""
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    # No progress bar: it shares stderr with the command's one-line error.
    builder = SparkSession.builder.appName(app_name).config("spark.ui.showConsoleProgress", "false")
    # spark-submit starts the JVM first and says so in PYSPARK_GATEWAY_PORT; its master (and
    # the rest of its configuration) is in that JVM, not yet in any SparkConf of this process.
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ or SparkContext._active_spark_context
    if master is None and not submitted:
        master = "local[*]"
    if master is not None:
        builder = builder.master(master)
        if master.startswith("local"):
            # Local Python workers run this interpreter (its venv holds mlfn), unless told.
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    return builder.getOrCreate()


def file_format(path: str, given: str | None) -> str:
    """The format by ``--format``, else by the path's extension."""
    if given:
        return given
    found = FORMATS.get(Path(path.rstrip("/")).suffix.lower())
    if found is None:
        raise BadRequest(f"cannot tell the format of {path} from its extension: pass --format")
    return found


def formats(
    source: str, target: str, source_format: str | None, target_format: str | None
) -> tuple[str, str]:
    """The input's format and the output's: by their options, else by extension; an output
    with none (a folder, ``out/``) is written as the input is."""
    in_format = file_format(source, source_format)
    return in_format, file_format(
        target, target_format or (None if Path(target).suffix else in_format)
    )


def read(spark: SparkSession, path: str, fmt: str) -> DataFrame:
    reader = spark.read.format(fmt)
    if fmt == "csv":
        # Every column a string ("007" stays "007"): the input model converts, in lax mode,
        # as it does JSON strings. Quotes inside a field are doubled (RFC 4180), as ``write``
        # writes them: with Spark's default backslash escape, a field holding '",' was split
        # and its row's last values dropped without a word.
        reader = reader.options(**CSV_OPTIONS, inferSchema="false")
    return reader.load(path)


def write(df: DataFrame, path: str, fmt: str, overwrite: bool) -> None:
    from pyspark.sql import functions as sf
    from pyspark.sql import types as st

    from runtime.spark import column, map_in_arrow
    from runtime.spark.worker import inert_formulas

    if fmt == "csv":  # CSV holds no arrays, maps or structs: those columns become JSON
        nested = (st.ArrayType, st.MapType, st.StructType)
        df = df.select(
            *(
                sf.to_json(column(f.name)).alias(f.name)
                if isinstance(f.dataType, nested)
                else column(f.name)
                for f in df.schema.fields
            )
        )
        # Text a spreadsheet would run as a formula (=HYPERLINK(...), an input carried
        # through or echoed by predict) made inert, as in batch files' CSV results.
        texts = [i for i, f in enumerate(df.schema.fields) if isinstance(f.dataType, st.StringType)]
        if texts:
            df = map_in_arrow(df, partial(inert_formulas, columns=tuple(texts)))
    writer = df.write.format(fmt).mode("overwrite" if overwrite else "errorifexists")
    if fmt == "csv":
        writer = writer.options(**CSV_OPTIONS)
    writer.save(path)


def score_file(
    spark: SparkSession,
    name: str,
    source: str,
    target: str,
    *,
    app_dir: Path,
    source_format: str | None = None,
    target_format: str | None = None,
    batch_size: int | None = None,
    overwrite: bool = False,
) -> Summary:
    """Score ``source`` into ``target`` and count what was written."""
    from pyspark.sql import Observation
    from pyspark.sql import functions as sf

    from runtime.spark import ERROR_COLUMN, column, score

    started = time.perf_counter()
    in_format, out_format = formats(source, target, source_format, target_format)
    scored = score(read(spark, source, in_format), name, app_dir, batch_size)
    # Counted by the write job itself, not by reading the output back: Spark's JSON writer
    # leaves null fields out (no row failed, no ``error`` column), and CSV reads back only
    # with the writer's options. A result task's metrics count once, retried or not.
    counts = Observation("mlfn spark-score")
    observed = scored.observe(
        counts, sf.count(sf.lit(1)).alias("rows"), sf.count(column(ERROR_COLUMN)).alias("errors")
    )
    write(observed, target, out_format, overwrite)
    got = counts.get
    return Summary(int(got["rows"]), int(got["errors"]), time.perf_counter() - started)


def run(
    name: str,
    source: str,
    target: str,
    *,
    app_dir: Path,
    master: str | None = None,
    source_format: str | None = None,
    target_format: str | None = None,
    batch_size: int | None = None,
    overwrite: bool = False,
    pack: Callable[[Sequence[Path]], Path] | None = None,
    ship: bool | None = None,
) -> Summary:
    """``mlfn spark-score``: a session, the scoring, and Spark's failures as one sentence.
    ``pack`` zips the app for executors on other machines, less the paths it is given;
    ``ship``: whether to (None: when the master is not local)."""
    from runtime.spark import endpoint, output_schema, require_pyspark

    require_pyspark()
    from pyspark.errors import PySparkException

    # An unknown endpoint, an output no Spark column holds, a format no extension tells, an
    # OUTPUT this machine sees is there: told before a JVM starts (seconds).
    output_schema(endpoint(app_dir, name))
    formats(source, target, source_format, target_format)
    output = _on_disk(target)
    seen_here = _local_master(master) or urlsplit(target).scheme == "file"
    if output is not None and seen_here and not overwrite and os.path.lexists(output):
        raise _exists(target)
    try:
        spark = session(master, f"mlfn spark-score {name}")
        # A failed task logs the worker's whole traceback at ERROR, several times over; the
        # command tells the failure itself, in one line.
        spark.sparkContext.setLogLevel("FATAL")
        leave_out = [p for p in (_on_disk(source), output) if p is not None]
        return score_file(
            spark,
            name,
            source,
            target,
            app_dir=shipped(spark, app_dir, pack, ship, leave_out),
            source_format=source_format,
            target_format=target_format,
            batch_size=batch_size,
            overwrite=overwrite,
        )
    except PySparkException as exc:
        raise _failed(_last_line(str(exc)), target) from None
    except Exception as exc:
        # Py4J's own error: a Spark failure pyspark does not convert (a file that is no
        # Parquet, say); its first line names Spark's error class.
        if type(exc).__name__ != "Py4JJavaError":
            raise
        raise _failed(_java_error(str(exc)), target) from None


def _failed(line: str, target: str) -> MlfnError:
    """Spark's failure, in the line that says it. An OUTPUT that exists (in a store this
    machine could not look in first) is said with the command's option, not Spark's
    ``mode "overwrite"``."""
    if "[PATH_ALREADY_EXISTS]" in line:
        return _exists(target)
    return SparkJobFailed(line)


def _exists(target: str) -> BadRequest:
    return BadRequest(f"OUTPUT {target} exists: pass --overwrite to replace it")


def _on_disk(path: str) -> Path | None:
    """``path`` as a path on this machine's disk: a ``file:`` URI or a bare path (which Spark
    on a cluster reads from its default file system, HDFS say); None for any other store."""
    parts = urlsplit(path)
    if parts.scheme == "file":
        return Path(url2pathname(parts.path))
    if parts.scheme and not (len(parts.scheme) == 1 and os.name == "nt"):  # C:\ is bare
        return None
    return Path(path)


def _local_master(master: str | None) -> bool:
    """Whether ``session`` runs Spark on this machine."""
    from pyspark import SparkContext

    if master is None:
        active = SparkContext._active_spark_context
        if active is not None:
            return str(active.master).startswith("local")
        return "PYSPARK_GATEWAY_PORT" not in os.environ  # spark-submit's master: unknown here
    return master.startswith("local")


def shipped(
    spark: SparkSession,
    app_dir: Path,
    pack: Callable[[Sequence[Path]], Path] | None,
    ship: bool | None,
    leave_out: Sequence[Path] = (),
) -> Path:
    """The app as every process of the job finds it: its folder where they share this machine
    (a local master), else a zip of it shipped with the job and named bare, so that the driver
    and each executor take it from Spark's files. ``pack`` writes the zip, without the job's
    own INPUT and OUTPUT (``leave_out``) when they sit in the app folder, as they do when the
    command runs there: data for the driver alone, maybe large, maybe not for the cluster."""
    if ship is None:
        ship = not str(spark.sparkContext.master).startswith("local")
    if not ship or pack is None:
        return app_dir
    archive = pack(leave_out)
    spark.sparkContext.addFile(str(archive))
    return Path(archive.name)


def _java_error(text: str) -> str:
    """The line of a Java stack trace that names the error (``[ERROR_CLASS] ...``)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    named = [line for line in lines if "[" in line and "Exception" in line]
    return (named or lines or [text])[0][:500]


def _last_line(text: str) -> str:
    """A Python worker's failure arrives as its whole traceback: its last line says what."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if "Traceback (most recent call last)" in text and lines:
        return lines[-1]
    return lines[0] if lines else text

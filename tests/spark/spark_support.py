"""What the Spark tests share: the skip when pyspark or Java is missing, a local session, and
test apps."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

_missing = [m for m in ("pyspark", "pyarrow", "pandas") if importlib.util.find_spec(m) is None]
_java = shutil.which("java") or (
    os.environ.get("JAVA_HOME") and Path(os.environ["JAVA_HOME"], "bin", "java").exists()
)


@contextlib.contextmanager
def local_spark(env: dict[str, str]) -> Iterator[SparkSession]:
    """A local[2] session whose Python workers run with ``env`` (and this interpreter);
    stopped at the end. Each worker's onnxruntime threads are mlfn's default there: the CPUs
    Spark gives a task, one."""
    from pyspark.sql import SparkSession

    env = {"PYSPARK_PYTHON": sys.executable, **env}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        builder = SparkSession.builder.master("local[2]")
        # Also as executor settings: a JVM an earlier test started (mlfn convert's Spark ML
        # tests, another module's) keeps the environment it started with, and its workers
        # inherit that.
        for key, value in env.items():
            builder = builder.config(f"spark.executorEnv.{key}", value)
        session = (
            builder.appName("mlfn-tests")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.shuffle.partitions", "2")
            .getOrCreate()
        )
        session.sparkContext.setLogLevel("ERROR")
        yield session
        session.stop()


needs_spark = pytest.mark.skipif(
    bool(_missing) or not _java,
    reason=f"runtime.spark needs {', '.join(_missing)}: `make test-frameworks` installs them"
    if _missing
    else "pyspark needs a Java 17 runtime: no java on PATH nor JAVA_HOME",
)


def count_blob_downloads(azurite_log: Path, container: str, blob: str) -> tuple[int, int]:
    """GET requests for one blob at Azurite: (all of them, those answered with its bytes).
    A revalidation by ETag is a GET answered 304, and moves no bytes."""
    pattern = re.compile(
        rf'"GET /devstoreaccount1/{re.escape(container)}/{re.escape(blob)}(\?[^ ]*)? HTTP/[\d.]+" (\d{{3}})'
    )
    statuses = [
        m.group(2)
        for line in azurite_log.read_text(errors="replace").splitlines()
        if (m := pattern.search(line))
    ]
    return len(statuses), sum(1 for s in statuses if s in ("200", "206"))


# Iris, as in functions/iris, with a field read by its alias and the scoring process's id as an
# output (to count the Python workers that scored).
def row_endpoint(output: str, row: str, imports: str = "") -> str:
    """An endpoint's source on iris.onnx: one float field ``x`` in, the output model ``Out``
    of the field lines ``output``, each row ``r`` answered by ``Out(row)`` (``model`` is the
    model)."""
    fields = "\n".join(f"    {line.strip()}" for line in output.strip().splitlines())
    return f"""
{imports}
from pydantic import BaseModel

from runtime import Endpoint, OnnxModel


class In(BaseModel):
    x: float


class Out(BaseModel):
{fields}


endpoint = Endpoint(In, Out, model="iris.onnx")


@endpoint.predict
def predict(rows: list[In], model: OnnxModel) -> list[Out]:
    return [Out({row}) for r in rows]
"""


IRIS = """
import os

from pydantic import BaseModel, ConfigDict, Field

from runtime import Endpoint, Limits, OnnxModel

SPECIES = ("setosa", "versicolor", "virginica")


class Flower(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

    sepal_length: float = Field(gt=0, le=50)
    sepal_width: float = Field(gt=0, le=50)
    petal_length: float = Field(gt=0, le=50)
    petal_width: float = Field(gt=0, le=50, alias="petalWidth")


class Species(BaseModel):
    label: str
    probabilities: dict[str, float]
    worker: int


endpoint = Endpoint(Flower, Species, model="iris.onnx", limits=Limits(max_batch_size=256))


@endpoint.predict
def predict(flowers: list[Flower], model: OnnxModel) -> list[Species]:
    rows = [[f.sepal_length, f.sepal_width, f.petal_length, f.petal_width] for f in flowers]
    out = model.run({"input": rows})
    return [
        Species(label=SPECIES[label], probabilities=dict(zip(SPECIES, probs)), worker=os.getpid())
        for label, probs in zip(out["label"].tolist(), out["probabilities"].tolist())
    ]
"""

# The same endpoint with a columnar predict: Spark's columns checked and scored as columns.
IRIS_COLUMNS = IRIS.replace(
    """@endpoint.predict
def predict(flowers: list[Flower], model: OnnxModel) -> list[Species]:
    rows = [[f.sepal_length, f.sepal_width, f.petal_length, f.petal_width] for f in flowers]
    out = model.run({"input": rows})
    return [
        Species(label=SPECIES[label], probabilities=dict(zip(SPECIES, probs)), worker=os.getpid())
        for label, probs in zip(out["label"].tolist(), out["probabilities"].tolist())
    ]
""",
    """@endpoint.predict_columns
def predict(columns, model):
    import numpy as np

    names = ("sepal_length", "sepal_width", "petal_length", "petal_width")
    out = model.run({"input": np.column_stack([columns[n] for n in names]).astype("float32")})
    return {
        "label": [SPECIES[label] for label in out["label"].tolist()],
        "probabilities": [dict(zip(SPECIES, p)) for p in out["probabilities"].tolist()],
        "worker": np.full(len(out["label"]), os.getpid()),
    }
""",
)
assert "predict_columns" in IRIS_COLUMNS

# Every kind of output type, computed from the input (the model is loaded, not run).
SHAPES = """
from typing import Optional

from pydantic import BaseModel, Field

from runtime import Endpoint, OnnxModel


class In(BaseModel):
    x: float
    tags: list[str] = []


class Point(BaseModel):
    lat: float
    note: Optional[str] = None


class Out(BaseModel):
    count: int
    value: float
    name: str
    flag: bool
    values: list[float]
    point: Point
    scores: dict[str, float]
    maybe: Optional[int] = None
    renamed: str = Field(serialization_alias="renamedField")


endpoint = Endpoint(In, Out, model="iris.onnx")


@endpoint.predict
def predict(rows: list[In], model: OnnxModel) -> list[Out]:
    return [
        Out(
            count=int(r.x),
            value=r.x / 2,
            name=f"n{int(r.x)}",
            flag=r.x > 2,
            values=[r.x, float("nan")],
            point=Point(lat=r.x, note=None if r.x > 2 else "low"),
            scores={t: r.x for t in r.tags},
            maybe=None if r.x > 2 else int(r.x),
            renamed="r",
        )
        for r in rows
    ]
"""

# Outputs JSON carries as something else (ISO strings, string keys, an int over 64 bits), and
# inputs with defaults and maps inside lists.
ODD = """
import datetime as dt

from pydantic import BaseModel, Field, computed_field

from runtime import Endpoint, OnnxModel


class In(BaseModel):
    n: int
    scale: float = 2.0
    nested: list[dict[str, int]] = []


class Out(BaseModel):
    at: dt.datetime
    day: dt.date
    big: int
    by_id: dict[int, float]
    seen: int
    secret: str = Field("hidden", exclude=True)

    @computed_field
    @property
    def twice(self) -> int:
        return 2 * self.seen


endpoint = Endpoint(In, Out, model="iris.onnx")


@endpoint.predict
def predict(rows: list[In], model: OnnxModel) -> list[Out]:
    start = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    return [
        Out(
            at=start + dt.timedelta(days=r.n),
            day=dt.date(2024, 1, r.n),
            big=2**63 if r.n == 2 else r.n,
            by_id={r.n: r.scale},
            seen=sum(v for d in r.nested for v in d.values()),
        )
        for r in rows
    ]
"""

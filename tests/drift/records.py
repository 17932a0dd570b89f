"""Payload-log record files and reference sets for the drift tests, written with pyarrow as the
payload log writes them (docs/payload-log.md: one file per process per flush, partitioned by
endpoint, date and hour)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ENDPOINT = "iris"
SPECIES = ["setosa", "versicolor", "virginica"]
SPECIES_SHARES = [0.5, 0.3, 0.2]


def features(seed: int, n: int, shift_width: float = 0.0) -> dict[str, Any]:
    """Iris-like inputs and a predicted label; ``shift_width`` moves ``sepal_width`` only."""
    rng = np.random.default_rng(seed)
    return {
        "sepal_length": rng.normal(5.8, 0.8, n),
        "sepal_width": rng.normal(3.0, 0.4, n) + shift_width,
        "petal_count": rng.integers(3, 8, n),
        "species": rng.choice(SPECIES, n, p=SPECIES_SHARES),
        "label": rng.choice(["a", "b"], n, p=[0.6, 0.4]),
    }


def write_reference(path: Path, seed: int = 1, n: int = 4000, **extra: Any) -> Path:
    """A training set: the input fields by name, the prediction's ``label``, and ``extra``."""
    data = features(seed, n)
    table = pa.table({**data, **extra})
    if path.suffix == ".csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    return path


def partition(hour: datetime, endpoint: str = ENDPOINT) -> str:
    """The folder (relative to the root) of ``hour``'s files."""
    return f"{endpoint}/date={hour:%Y-%m-%d}/hour={hour:%H}"


def record_table(
    inputs: dict[str, Any],
    times: list[datetime],
    status: int | list[int] = 200,
    endpoint: str = ENDPOINT,
    prediction: str = "label",
) -> pa.Table:
    """A record file's table: ``inputs`` but ``prediction`` as input_ columns, that one as
    prediction_."""
    n = len(times)
    statuses = [status] * n if isinstance(status, int) else status
    ok = [s == 200 for s in statuses]
    columns: dict[str, pa.Array] = {
        "time": pa.array(times, pa.timestamp("us", tz="UTC")),
        "endpoint": pa.array([endpoint] * n),
        "source": pa.array(["http"] * n),
        "model_version": pa.array(["1"] * n),
        "model_sha256": pa.array(["ab" * 32] * n),
        "invocation_id": pa.array([str(uuid.uuid4()) for _ in range(n)]),
        "trace_id": pa.array([None] * n, pa.string()),
        "request_id": pa.array([None] * n, pa.string()),
        "row": pa.array(range(n), pa.int32()),
        "status": pa.array(statuses, pa.int16()),
        "latency_ms": pa.array(np.full(n, 1.5)),
        "error": pa.array([None if o else "PredictFailed" for o in ok], pa.string()),
    }
    for name, values in inputs.items():
        if name != prediction:
            columns[f"input_{name}"] = pa.array(values)
    if prediction in inputs:
        labels = [v if o else None for v, o in zip(list(inputs[prediction]), ok, strict=True)]
        columns[f"prediction_{prediction}"] = pa.array(labels, pa.string())
    meta = {
        "version": 1,
        "endpoint": endpoint,
        "input_fields": [n for n in inputs if n != prediction],
        "prediction_fields": [prediction],
    }
    return pa.table(columns).replace_schema_metadata({"mlfn.payload_log": json.dumps(meta)})


def write_hour(
    root: Path, hour: datetime, table: pa.Table, endpoint: str = ENDPOINT, name: str = ""
) -> Path:
    """``table`` as one flush's file in ``hour``'s partition under local ``root``."""
    folder = root / partition(hour, endpoint)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name or uuid.uuid4().hex}.parquet"
    pq.write_table(table, path)
    return path


def hours_ago(n: float, now: datetime | None = None) -> datetime:
    return (now or datetime.now(UTC)) - timedelta(hours=n)


def traffic(root: Path, seed: int, n: int, shift_width: float = 0.0, hours: int = 3) -> None:
    """``n`` successful records of the last ``hours`` hours, a file an hour, plus failed
    requests with wild inputs that must not count."""
    data = features(seed, n, shift_width)
    now = datetime.now(UTC)
    per = n // hours
    for h in range(hours):
        start = now - timedelta(hours=h, minutes=30)
        part = {k: v[h * per : (h + 1) * per] for k, v in data.items()}
        times = [start + timedelta(seconds=i % 1700) for i in range(per)]
        write_hour(root, start, record_table(part, times))
    wild = features(seed + 100, 200, shift_width=50.0)
    wild["species"] = np.array(["??"] * 200)
    times = [now - timedelta(minutes=10)] * 200
    write_hour(root, times[0], record_table(wild, times, status=500))

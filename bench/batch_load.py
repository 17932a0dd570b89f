"""Batch files under load: a 1,000,000-row JSON Lines file scored by ``mlfn serve``'s blob trigger
against the same rows through ``session.run`` in one process.

    python -m scripts.azurite run -- python -m bench.batch_load [--quick]

mlfn: the host is up and idle; the clock runs from the upload's end until the summary exists
(the container scan, reading by ranges, validation, the iris predict function, writing staged
blocks, the commit). Raw, in one process on the local file: parse each line (json), run the
session on batches of the same size, write one JSON line per row; and the session alone on
arrays made beforehand (the floor no file format can beat).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import ContainerClient

from runtime.protocol import batch
from scripts.build_models import build_all
from tests.support import ROOT, LocalHost, make_app

FIELDS = ("sepal_length", "sepal_width", "petal_length", "petal_width")
SPECIES = ("setosa", "versicolor", "virginica")
BATCH = 256  # the iris example's max_batch_size


@dataclass(frozen=True)
class Scored:
    rows: int
    seconds: float
    peak_rss_mib: float | None = None
    in_function_s: float | None = None

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds


def _file(path: Path, rows: int) -> Path:
    rng = np.random.default_rng(0)
    with path.open("w") as f:
        for start in range(0, rows, 100_000):
            block = rng.uniform([4.3, 2.0, 1.0, 0.1], [7.9, 4.4, 6.9, 2.5], (100_000, 4)).round(2)
            for row in block[: rows - start]:
                f.write(json.dumps(dict(zip(FIELDS, row.tolist(), strict=True))) + "\n")
    return path


def mlfn(conn: str, data: Path, models: Path, tmp: Path, rows: int) -> Scored:
    store = f"bench{os.getpid()}"
    client = ContainerClient.from_connection_string(conn, store)
    with contextlib.suppress(ResourceExistsError):
        client.create_container()
    client.upload_blob("iris.onnx", (models / "iris.onnx").read_bytes(), overwrite=True)
    iris = (ROOT / "functions" / "iris" / "endpoint.py").read_text()
    app = make_app(tmp / "app", {"iris": iris})
    env = {
        "AzureWebJobsStorage": conn,
        "MLFN_MODEL_STORE": f"az://{store}",
        "MLFN_CACHE_DIR": str(tmp / "cache"),
        "MLFN_HOST_BLOB_SCAN_S": "0.2",
    }
    inbox = ContainerClient.from_connection_string(conn, "iris-batch")
    with contextlib.suppress(ResourceExistsError):
        inbox.create_container()
    host = LocalHost(app, env).start()
    try:
        path = f"bench/{os.getpid()}-{time.time_ns()}.jsonl"
        with data.open("rb") as f:
            etag = str(inbox.get_blob_client(path).upload_blob(f, overwrite=True)["etag"])
        started = time.perf_counter()
        summary_blob = ContainerClient.from_connection_string(
            conn, "iris-batch-results"
        ).get_blob_client(batch.summary_path(path, etag))
        while True:
            with contextlib.suppress(ResourceNotFoundError):
                summary = json.loads(summary_blob.download_blob().readall())
                break
            if host.process is not None and host.process.poll() is not None:
                raise RuntimeError(host.output())
            time.sleep(0.1)
        seconds = time.perf_counter() - started
        assert summary["rows"] == rows and summary["errors"] == 0, summary
        peak = _peak_rss_mib(host)
    finally:
        host.stop()
    return Scored(rows, seconds, peak, summary["seconds"])


def _peak_rss_mib(host: LocalHost) -> float | None:
    if host.process is None:
        return None
    status = Path(f"/proc/{host.process.pid}/status").read_text()
    kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
    return kib / 1024


def raw(data: Path, model: Path, out: Path) -> Scored:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    started = time.perf_counter()
    rows = 0
    with data.open() as f, out.open("w") as w:
        while True:
            lines = [line for _, line in zip(range(BATCH), f, strict=False)]
            if not lines:
                break
            docs = [json.loads(line) for line in lines]
            x = np.array([[d[k] for k in FIELDS] for d in docs], dtype=np.float32)
            labels, probs = session.run(None, {"input": x})
            for i, (label, p) in enumerate(zip(labels.tolist(), probs.tolist(), strict=True)):
                pred = {
                    "label": SPECIES[label],
                    "probabilities": dict(zip(SPECIES, p, strict=True)),
                }
                w.write(json.dumps({"row": rows + i, "prediction": pred}) + "\n")
            rows += len(lines)
    return Scored(rows, time.perf_counter() - started)


def session_only(data: Path, model: Path) -> Scored:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    with data.open() as f:
        x = np.array([[json.loads(line)[k] for k in FIELDS] for line in f], dtype=np.float32)
    started = time.perf_counter()
    for start in range(0, len(x), BATCH):
        session.run(None, {"input": x[start : start + BATCH]})
    return Scored(len(x), time.perf_counter() - started)


def run(rows: int) -> tuple[Scored, Scored, Scored, float]:
    conn = os.environ["AzureWebJobsStorage"]  # noqa: SIM112 - Azure's own name
    with tempfile.TemporaryDirectory(prefix="mlfn-batch-") as name:
        tmp = Path(name)
        models = build_all(tmp / "models")
        data = _file(tmp / "rows.jsonl", rows)
        size_mb = data.stat().st_size / 1e6
        theirs = raw(data, models["iris"], tmp / "raw.jsonl")
        floor = session_only(data, models["iris"])
        mine = mlfn(conn, data, tmp / "models", tmp, rows)
    return mine, theirs, floor, size_mb


def table(mine: Scored, theirs: Scored, floor: Scored, size_mb: float) -> str:
    peak = f"{mine.peak_rss_mib:.0f} MiB" if mine.peak_rss_mib else "n/a"
    return "\n".join(
        [
            f"| batch file, {mine.rows:,} iris rows, JSON Lines ({size_mb:.0f} MB) | seconds "
            "| rows/s |",
            "|---|---:|---:|",
            f"| mlfn serve, blob trigger (upload to summary; host peak RSS {peak}; "
            f"{mine.in_function_s:.1f} s in the function) | {mine.seconds:.1f} "
            f"| {mine.rows_per_s:,.0f} |",
            f"| raw, one process: json per line, session.run per {BATCH}, a JSON line per row "
            f"| {theirs.seconds:.1f} | {theirs.rows_per_s:,.0f} |",
            f"| session.run alone, arrays made beforehand | {floor.seconds:.1f} "
            f"| {floor.rows_per_s:,.0f} |",
            f"| mlfn / raw | {mine.rows_per_s / theirs.rows_per_s:.2f}x | |",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    args = parser.parse_args()
    print(table(*run(20_000 if args.quick else 1_000_000)))


if __name__ == "__main__":
    main()

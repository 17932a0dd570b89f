"""Batch files: mlfn scoring a CSV and a Parquet file dropped into an endpoint's batch container,
against the loop a user writes instead, over the same blob in the same Azurite (issue 23).

    python -m scripts.azurite run -- python -m bench.batch_load [--quick] [--profile [csv|parquet]]

The endpoint is made as a user makes one, in a temporary app: ``mlfn new iris --model
models/iris.onnx`` (scripts/build_models.py's logistic regression). For that model ``mlfn new``
writes one field, ``input: list[float]`` of length 4, which no CSV header can name; so the
endpoint served keeps what ``mlfn new`` wrote (its ``@endpoint.predict_columns`` form, its
``max_batch_size``, its model reference, its output model) with ``input`` split into the four
named float fields the files' columns are, fed to the model as one matrix by
``runtime.stacked`` (``ENDPOINT``).

mlfn: ``mlfn serve`` is up and warm (a small file of each format scored first: the model
loaded, pyarrow imported); the clock runs from the upload's end until the summary exists (the
container scan, every 50 ms, reading by ranges, the columns service, writing staged blocks,
the commit). The summary's own seconds (the function's, from the blob's properties read to
the commit) are given beside, with their ratio to the loop's.
The loop (``loop``), in the bench's own process with a session made beforehand: download the
blob, read it with pyarrow's streaming reader (``pyarrow.csv.open_csv``,
``ParquetFile.iter_batches``), ``session.run`` on the endpoint's ``max_batch_size`` rows at a
time, write ``row``, ``label`` and the probabilities with pyarrow's writer (CSV: a column per
class, since pyarrow's CSV writer takes no lists; Parquet: a list column), upload the result.
Each path scores each file ``rounds`` times, alternating, and the fastest of each counts (the
machine is shared: the fastest is the least disturbed). The host's peak RSS is reset before each
file (``/proc/PID/clear_refs``) and read after. Then both paths' outputs for the first 1,000
rows must agree: labels equal, probabilities within 1e-6.

``--profile [csv|parquet]``: after timing, the host scores that file (CSV unless named) twice
more under py-spy; the busiest frames of the thread holding the GIL, then the busiest threads
and their frames, are printed after the table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import ContainerClient

from runtime.protocol import batch
from scripts.build_models import build_iris
from tests.support import LocalHost, make_app

NAME = "iris"
FIELDS = ("sepal_length", "sepal_width", "petal_length", "petal_width")
CLASSES = 3
SAMPLE = 1_000  # rows whose outputs both paths must agree on
WARM_ROWS = 100
FORMATS = ("csv", "parquet")
LOOP_RESULTS = "iris-loop-results"  # the loop's own results container
SCORE_TIMEOUT_S = float(os.environ.get("BENCH_SCORE_TIMEOUT_S", "600"))

# The endpoint served: mlfn new's columnar form, the file's four columns as its fields.
ENDPOINT = '''"""Endpoint iris: mlfn new's tensor template, its input split into named columns."""

from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from runtime import Columns, Endpoint, Limits, Model, OnnxModel, stacked

FIELDS = ("sepal_length", "sepal_width", "petal_length", "petal_width")


class Input(BaseModel):
    """One flower, a float per measurement."""

    model_config = ConfigDict(populate_by_name=True, protected_namespaces=(), allow_inf_nan=False)

    sepal_length: float
    sepal_width: float
    petal_length: float
    petal_width: float


class Output(BaseModel):
    """One prediction: one row of each model output."""

    model_config = ConfigDict(populate_by_name=True, protected_namespaces=())

    label: int
    probabilities: Annotated[list[float], Field(min_length=3, max_length=3)]


endpoint = Endpoint(
    Input,
    Output,
    model=Model(MODEL_URI),
    limits=Limits(max_batch_size=MAX_BATCH_SIZE),
)


@endpoint.predict_columns
def predict(columns: Columns, model: OnnxModel) -> Columns:
    out = model.run({"input": stacked(columns, FIELDS, np.float32)})
    return {"label": out["label"], "probabilities": out["probabilities"]}
'''


@dataclass(frozen=True)
class Endpoint:
    app: Path
    batch_size: int
    generated_columns: bool  # mlfn new wrote @endpoint.predict_columns
    output_compiled: bool  # the output model's checks compile too (no pydantic per row)


@dataclass(frozen=True)
class Measured:
    fmt: str
    rows: int
    size_mb: float
    loop_s: float
    mlfn_s: float
    in_function_s: float  # the summary's own seconds
    peak_rss_mib: float | None
    compared: int
    runs: int  # of each path; the fastest counts


# The files.


def _table(rows: int) -> pa.Table:
    rng = np.random.default_rng(0)
    low, high = [4.3, 2.0, 1.0, 0.1], [7.9, 4.4, 6.9, 2.5]
    x = rng.uniform(low, high, (rows, len(FIELDS))).round(2)
    return pa.table({f: x[:, i] for i, f in enumerate(FIELDS)})


def _file_bytes(table: pa.Table, fmt: str) -> bytes:
    sink = pa.BufferOutputStream()
    if fmt == "csv":
        pcsv.write_csv(table, sink, pcsv.WriteOptions(quoting_style="needed"))
    else:
        pq.write_table(table, sink)  # pyarrow's defaults, as pandas' to_parquet writes
    return bytes(sink.getvalue().to_pybytes())


# The loop a user writes instead of mlfn.


def loop(
    source: ContainerClient, path: str, results: ContainerClient, session: ort.InferenceSession,
    batch_size: int,
) -> bytes:  # fmt: skip
    """Download, read, score per ``batch_size`` rows, write, upload; returns what it wrote."""
    data = source.get_blob_client(path).download_blob().readall()
    fmt = batch.format_of(path)
    out = pa.BufferOutputStream()
    writer: pcsv.CSVWriter | pq.ParquetWriter | None = None
    row = 0
    for chunk in _batches(data, fmt):
        x = np.stack([chunk.column(f).to_numpy() for f in FIELDS], axis=1).astype(np.float32)
        runs = [
            session.run(None, {"input": x[i : i + batch_size]})
            for i in range(0, len(x), batch_size)
        ]
        labels = np.concatenate([r[0] for r in runs])
        probs = np.concatenate([r[1] for r in runs])
        rows = pa.array(np.arange(row, row + len(x)))
        row += len(x)
        if fmt is batch.Format.CSV:
            names = ["row", "label", *(f"probabilities_{j}" for j in range(probs.shape[1]))]
            arrays = [rows, pa.array(labels), *(pa.array(probs[:, j]) for j in range(CLASSES))]
        else:
            offsets = pa.array(np.arange(0, probs.size + 1, probs.shape[1], dtype=np.int32))
            names = ["row", "label", "probabilities"]
            arrays = [rows, pa.array(labels), pa.ListArray.from_arrays(offsets, probs.ravel())]
        scored = pa.RecordBatch.from_arrays(arrays, names=names)
        if writer is None:
            writer = (
                pcsv.CSVWriter(out, scored.schema)
                if fmt is batch.Format.CSV
                else pq.ParquetWriter(out, scored.schema)
            )
        writer.write_batch(scored)
    assert writer is not None, f"{path} has no rows"
    writer.close()
    written = bytes(out.getvalue().to_pybytes())
    results.upload_blob(path, written, overwrite=True)
    return written


def _batches(data: bytes, fmt: batch.Format) -> Iterator[pa.RecordBatch]:
    if fmt is batch.Format.CSV:
        yield from pcsv.open_csv(pa.BufferReader(data))
    else:
        yield from pq.ParquetFile(pa.BufferReader(data)).iter_batches(batch_size=65_536)


# mlfn.


def build_endpoint(tmp: Path) -> Endpoint:
    """A temporary app with endpoint ``iris`` from ``mlfn new``, its input split into columns."""
    from runtime.columnar.frame import compiled
    from runtime.errors import NotCompiled
    from runtime.spark.worker import discover_app  # loads an app beside this one

    app = make_app(tmp / "app", {})
    (app / "models").mkdir()
    build_iris(app / "models" / "iris.onnx")
    command = [str(Path(sys.executable).parent / "mlfn"), "new", NAME, "--model",
               "models/iris.onnx"]  # fmt: skip
    done = subprocess.run(command, cwd=app, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"mlfn new failed:\n{done.stdout}{done.stderr}")
    written = app / "functions" / NAME / "endpoint.py"
    generated_columns = "@endpoint.predict_columns" in written.read_text()
    (made,) = discover_app(app)
    written.write_text(
        ENDPOINT.replace("MODEL_URI", repr(made.endpoint.model.uri)).replace(
            "MAX_BATCH_SIZE", str(made.endpoint.limits.max_batch_size)
        )
    )
    (bound,) = discover_app(app)
    found = compiled(bound.endpoint.input)
    assert not isinstance(found, NotCompiled), f"the input does not compile: {found}"
    output = not isinstance(compiled(bound.endpoint.output, output=True), NotCompiled)
    return Endpoint(app, bound.endpoint.limits.max_batch_size, generated_columns, output)


class Host:
    """``mlfn serve`` on the app, scoring files uploaded to the endpoint's batch container."""

    def __init__(self, conn: str, app: Path, tmp: Path) -> None:
        self.inbox = _container(conn, batch.batch_container(NAME))
        self.results = _container(conn, batch.results_container(NAME))
        env = {
            "AzureWebJobsStorage": conn,
            "MLFN_CACHE_DIR": str(tmp / "cache"),
            # The local host finds a new blob by listing its container (on Azure an Event
            # Grid event starts the function): the clock also runs while it waits for its next
            # scan, up to this long, as it does while this bench watches the host's log (10 ms).
            "MLFN_HOST_BLOB_SCAN_S": "0.05",
        }
        self.local = LocalHost(app, env).start()

    def score(self, path: str, data: bytes, rows: int) -> tuple[float, float, str]:
        """Upload ``data`` to ``path`` (a new version, if it was there) and wait for its
        summary: seconds from the upload's end, the summary's own seconds, the results' path."""
        assert self.local.log_path is not None
        logged = self.local.log_path.stat().st_size
        etag = str(self.inbox.get_blob_client(path).upload_blob(data, overwrite=True)["etag"])
        started = time.perf_counter()
        # The host logs the file's line once its summary is written. Watching its log, not
        # asking the storage for the summary 20 times a second, keeps this bench's own
        # requests off the two cores and the Azurite the host is timed on (they cost Azurite
        # about 0.2 s of CPU a round); the loop's side has none.
        said = f"{self.inbox.container_name}/{path}: ".encode()
        while said not in self._log_after(logged):
            process = self.local.process
            if process is not None and process.poll() is not None:
                raise RuntimeError(self.local.output())
            if time.perf_counter() - started > SCORE_TIMEOUT_S:
                raise RuntimeError(f"no summary for {path}:\n{self.local.output()[-3000:]}")
            time.sleep(0.01)
        summary_blob = self.results.get_blob_client(batch.summary_path(path, etag))
        summary = json.loads(summary_blob.download_blob().readall())
        seconds = time.perf_counter() - started
        assert summary["rows"] == rows and summary["errors"] == 0, summary
        return seconds, float(summary["seconds"]), str(summary["output"])

    def _log_after(self, offset: int) -> bytes:
        assert self.local.log_path is not None
        with self.local.log_path.open("rb") as log:
            log.seek(offset)
            return log.read()

    def reset_peak(self) -> None:
        if self.local.process is not None:
            with contextlib.suppress(OSError):  # "5": the peak RSS starts again from now
                Path(f"/proc/{self.local.process.pid}/clear_refs").write_text("5")

    def peak_rss_mib(self) -> float | None:
        if self.local.process is None:
            return None
        status = Path(f"/proc/{self.local.process.pid}/status").read_text()
        kib = next(int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("VmHWM"))
        return kib / 1024

    def stop(self) -> None:
        self.local.stop()


def _container(conn: str, name: str) -> ContainerClient:
    client = ContainerClient.from_connection_string(conn, name)
    with contextlib.suppress(ResourceExistsError):
        client.create_container()
    return client


# Both outputs, compared.


def _outputs(data: bytes, fmt: str, mine: bool) -> tuple[np.ndarray, np.ndarray]:
    """The first ``SAMPLE`` rows' labels and probabilities from either path's output."""
    if fmt == "csv":
        options = pcsv.ConvertOptions(strings_can_be_null=True)
        table = pcsv.read_csv(pa.BufferReader(data), convert_options=options).slice(0, SAMPLE)
        if mine:  # mlfn writes a list as JSON text
            probs = np.array([json.loads(p) for p in table.column("probabilities").to_pylist()])
        else:
            names = [f"probabilities_{j}" for j in range(CLASSES)]
            probs = np.stack([table.column(n).to_numpy() for n in names], axis=1)
    else:
        table = pq.read_table(pa.BufferReader(data)).slice(0, SAMPLE)
        probs = np.array(table.column("probabilities").to_pylist())
    assert table.column("row").to_pylist() == list(range(table.num_rows))
    if mine:
        errors = table.column("error")
        assert errors.null_count == len(errors), errors.drop_null().to_pylist()[:3]
    return table.column("label").to_numpy(), probs


def compare(mine: bytes, theirs: bytes, fmt: str) -> int:
    (a_label, a_probs), (b_label, b_probs) = (
        _outputs(mine, fmt, True), _outputs(theirs, fmt, False)
    )  # fmt: skip
    assert len(a_label) == len(b_label) > 0, (len(a_label), len(b_label))
    np.testing.assert_array_equal(a_label, b_label, err_msg=f"{fmt}: labels")
    np.testing.assert_allclose(a_probs, b_probs, rtol=0, atol=1e-6, err_msg=f"{fmt}: probs")
    return len(a_label)


# py-spy on the host.


def profile(host: Host, data: bytes, fmt: str, rows: int, top: int = 10) -> str:
    """py-spy on the host while it scores ``data``, twice. First the ``top`` frames by own
    time over the samples of the thread holding the GIL (threads waiting, and native code
    that let the GIL go, are not counted). Then every thread at work: each busy thread's
    share of the samples (one blocked on a lock, a queue or a socket is not sampled; one
    waiting for the GIL, or in native code, is) and its busiest frames: which thread the
    file waits on, which the GIL view alone does not show. Each function's lines together."""
    held = _spied(host, data, fmt, rows, ["--gil"])
    if held is None:
        return "(py-spy could not attach here)"
    own: Counter[str] = Counter()
    for stack, count in held:
        own[_frame(stack.split(";")[-1])] += count
    total = sum(own.values())
    lines = [f"{n / total * 100:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    text = "```\n" + "\n".join(lines) + f"\n```\n({total:,} samples holding the GIL, 200 Hz)"
    busy = _spied(host, data, fmt, rows, ["--threads"])
    if busy is None:
        return text
    threads: dict[str, Counter[str]] = {}
    for stack, count in busy:
        thread, _, rest = stack.partition(";")
        name = re.sub(r"^thread \(\w+\): ", "", thread)
        leaf = _frame(rest.split(";")[-1]).split(" (")[0]  # by name: pyarrow has two wrappers
        threads.setdefault(name, Counter())[leaf] += count
    total = sum(sum(c.values()) for c in threads.values())
    ranked = sorted(threads.items(), key=lambda t: -sum(t[1].values()))
    lines = []
    for name, frames in ranked[:4]:
        n = sum(frames.values())
        busiest = ", ".join(f"{frame} {k / n * 100:.0f}%" for frame, k in frames.most_common(4))
        lines.append(f"{n / total * 100:5.1f}%  {name}: {busiest}")
    return (
        text + "\n\nThreads at work (py-spy, every thread, 200 Hz), each with its busiest frames:"
        "\n\n```\n" + "\n".join(lines) + f"\n```\n({total:,} samples)"
    )


def _spied(
    host: Host, data: bytes, fmt: str, rows: int, options: list[str]
) -> list[tuple[str, int]] | None:
    """py-spy's raw stacks, with their sample counts, while the host scores ``data`` once."""
    assert host.local.process is not None
    with tempfile.TemporaryDirectory(prefix="mlfn-spy-") as name:
        raw = Path(name) / "host.raw"
        spy = subprocess.Popen(
            [str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
             str(host.local.process.pid), "--rate", "200", "--function", *options,
             "--format", "raw", "--output", str(raw), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(1.0)  # attached
        try:
            host.score(_path(fmt), data, rows)
        finally:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
            spy.wait(timeout=60)
        if not raw.exists():
            return None
        stacks = []
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            stacks.append((stack, int(count)))
    return stacks


def _frame(frame: str) -> str:
    return re.sub(r" \(/.*/(site-packages|main)/", " (", frame) or "(no Python frame)"


# The run.


def run(
    rows: int, rounds: int = 5, with_profile: str | None = None
) -> tuple[list[Measured], Endpoint, str | None]:
    conn = os.environ["AzureWebJobsStorage"]  # noqa: SIM112 - Azure's own name
    with tempfile.TemporaryDirectory(prefix="mlfn-batch-") as name:
        tmp = Path(name)
        endpoint = build_endpoint(tmp)
        table = _table(rows)
        files = {fmt: _file_bytes(table, fmt) for fmt in FORMATS}
        warm = {fmt: _file_bytes(table.slice(0, WARM_ROWS), fmt) for fmt in FORMATS}
        del table
        session = ort.InferenceSession(
            str(endpoint.app / "models" / "iris.onnx"), providers=["CPUExecutionProvider"]
        )
        results = _container(conn, LOOP_RESULTS)
        host = Host(conn, endpoint.app, tmp)
        spied = None
        try:
            for fmt in FORMATS:
                host.score(_path(fmt), warm[fmt], WARM_ROWS)
            measured = [
                _measure(host, results, session, endpoint, fmt, files[fmt], rows, rounds)
                for fmt in FORMATS
            ]
            if with_profile:
                spied = profile(host, files[with_profile], with_profile, rows)
        finally:
            host.stop()
    return measured, endpoint, spied


def _measure(
    host: Host, results: ContainerClient, session: ort.InferenceSession, endpoint: Endpoint,
    fmt: str, data: bytes, rows: int, rounds: int,
) -> Measured:  # fmt: skip
    path = _path(fmt)  # one blob: each mlfn round uploads a new version, the loop reads it
    loop_s, mlfn_s, in_function_s = [], [], []
    peak: float | None = None
    theirs = b""
    output = ""
    for _ in range(rounds):
        host.reset_peak()
        seconds, inside, output = host.score(path, data, rows)
        mlfn_s.append(seconds)
        in_function_s.append(inside)
        now = host.peak_rss_mib()
        peak = max(peak or 0.0, now or 0.0) or None
        started = time.perf_counter()
        theirs = loop(host.inbox, path, results, session, endpoint.batch_size)
        loop_s.append(time.perf_counter() - started)
    mine = host.results.get_blob_client(output).download_blob().readall()
    compared = compare(mine, theirs, fmt)
    fastest = int(np.argmin(mlfn_s))
    return Measured(fmt, rows, len(data) / 1e6, min(loop_s), mlfn_s[fastest],
                    in_function_s[fastest], peak, compared, rounds)  # fmt: skip


def _path(fmt: str) -> str:
    return f"bench/{os.getpid()}-{time.time_ns()}.{fmt}"


def table(
    measured: list[Measured], endpoint: Endpoint, spied: str | None = None, spied_fmt: str = ""
) -> str:
    size = endpoint.batch_size
    form = (
        "`mlfn new`'s tensor template (its `@endpoint.predict_columns`), `input: list[float]` "
        "split by hand into the four float fields the files' columns are, stacked back into "
        "the model's input by `runtime.stacked`"
        if endpoint.generated_columns
        else "written by hand in the columnar form (`mlfn new` wrote a row predict here)"
    )
    checks = "input and output" if endpoint.output_compiled else "input (output: pydantic per row)"
    rows = measured[0].rows
    lines = [
        f"| batch file, {rows:,} iris rows, the same blob in Azurite | file | seconds | rows/s "
        "| of the loop | host peak RSS |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for m in measured:
        fmt = "CSV" if m.fmt == "csv" else "Parquet"
        reader = "pyarrow.csv.open_csv" if m.fmt == "csv" else "ParquetFile.iter_batches"
        peak = f"{m.peak_rss_mib:.0f} MiB" if m.peak_rss_mib else "n/a"
        lines += [
            f"| {fmt}: the loop: download, {reader}, session.run per {size}, pyarrow "
            f"{fmt} writer, upload | {m.size_mb:.1f} MB | {m.loop_s:.2f} "
            f"| {m.rows / m.loop_s:,.0f} | 1.00x | |",
            f"| {fmt}: mlfn serve, blob trigger (upload's end to summary; "
            f"{m.in_function_s:.2f} s in the function: {m.loop_s / m.in_function_s:.2f}x) "
            f"| | {m.mlfn_s:.2f} "
            f"| {m.rows / m.mlfn_s:,.0f} | {m.loop_s / m.mlfn_s:.2f}x | {peak} |",
        ]
    compared = ", ".join(f"{m.compared:,}" for m in measured)
    lines.append(
        f"| endpoint: {form}; max_batch_size {size}; column checks compile for the {checks}. "
        f"The fastest of {measured[0].runs} run(s) of each path, alternating; outputs equal "
        f"on the first {compared} rows | | | | | |"
    )
    text = "\n".join(lines)
    if spied:
        fmt = "CSV" if spied_fmt == "csv" else "Parquet"
        text += f"\n\nmlfn serve scoring the {fmt} file, the busiest frames by own time of the "
        text += "thread holding the GIL (py-spy --gil):\n\n"
        text += spied
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    parser.add_argument(
        "--profile", nargs="?", const="csv", choices=FORMATS, help="py-spy on the host"
    )
    args = parser.parse_args()
    rows, rounds = (20_000, 1) if args.quick else (1_000_000, 5)
    print(table(*run(rows, rounds, args.profile), spied_fmt=args.profile or ""))


if __name__ == "__main__":
    main()

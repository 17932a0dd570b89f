"""Latency you can promise (issue 27): batching against a latency target, overload, and HTTP
beside a batch file, under ``mlfn serve``.

    python -m scripts.azurite run -- python -m bench.latency [--quick]

Three tables, each from one run on a shared 2-core machine (read the ratios):

1. **Batching and a latency target.** A wide MLP 256->3072->3072->10 (39 MB; one row runs in
   ~0.6 ms, 64 rows in ~8 ms: a model whose run, not the HTTP request, dominates, so batching can
   pay) and today's MLP 256->512->512->10, each a ``mlfn new --model`` tensor endpoint, served by
   one ``mlfn serve`` as several endpoints that differ only in ``Limits``: batching off
   (``max_batch_size=1``), today's batching (64, no wait when idle) and, where ``Limits`` has
   ``latency_target_ms``, a 20 ms target. wrk (one thread) at 1 and 32 connections (today's
   MLP: 32), ``ROUNDS`` rounds with the configurations alternating inside each; the round with
   the most answers of 200 a second is kept for each. "/ off" is that rate against batching off.
2. **Overload.** The wide MLP with a 50 ms target (and today's batching, for comparison) under
   an open-loop client: requests sent at a fixed rate, 1.25x then 2x the best rate of table 1,
   whatever the answers do. Open loop, not wrk: wrk is closed-loop (each connection waits for its
   answer before sending again), so the offered load falls to what the server answers and is
   never more than the cores can serve; and quick 503s would let it send faster still. The
   client is asyncio over raw HTTP/1.1 keep-alive connections (up to ``MAX_CONNECTIONS``; a
   request waits for a free one, and that wait counts, as wrk2 counts it), in this process, so
   it shares the two cores. Latency is the client's, from the write of the request to the end
   of its answer: it includes the kernel's and uvicorn's queueing before the app sees it; and
   the host's own, from its log line for each request (read to answered, whole ms).
3. **HTTP beside a batch file.** A 13-feature classifier made as a user makes one (a scikit-learn
   scaler and logistic regression fitted on a DataFrame, ``mlfn convert --sample rows.csv``, then
   ``mlfn new churn --template classifier``: a float field per column), one client sending one
   request at a time (``http.client``, keep-alive) for ``IDLE_S`` seconds, then again from the
   end of uploading a 400,000-row CSV into the endpoint's batch container in Azurite until its
   summary exists (``mlfn serve``'s blob listener scores it). p50 and p99 of both, and the file's
   seconds.

Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import inspect
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import orjson

from bench.http_load import wrk_ms, wrk_non_2xx, wrk_output
from runtime import Limits
from runtime.config import Settings
from runtime.scaffold import render_tensor_endpoint
from tests.models.onnx_builders import mlp
from tests.support import LocalHost, make_app

WIDE = (256, 3072, 3072, 10)
TARGET_MS = 20
OVERLOAD_TARGET_MS = 50
OVERLOAD_FACTORS = (1.25, 2.0)  # offered loads: these times the best rate of table 1
MAX_CONNECTIONS = 256  # the open-loop client's
ROUNDS = 3
FILE_ROWS = 400_000
FEATURES = 13
IDLE_S = 5.0
FILE_TIMEOUT_S = 300.0


def has_latency_target() -> bool:
    """Whether this tree's ``Limits`` takes ``latency_target_ms`` (the bench runs either way)."""
    return "latency_target_ms" in inspect.signature(Limits).parameters


@dataclass(frozen=True)
class Config:
    endpoint: str
    model: str  # "wide" or "mlp"
    label: str
    limits: str  # the arguments of Limits(...) in the endpoint's file


def configs(target: bool) -> list[Config]:
    found = []
    for model in ("wide", "mlp"):
        found += [
            Config(f"{model}_off", model, "batching off", "max_batch_size=1"),
            Config(f"{model}_today", model, "today's batching", "max_batch_size=64"),
        ]
        if target:
            found.append(
                Config(
                    f"{model}_target",
                    model,
                    f"latency target {TARGET_MS} ms",
                    f"max_batch_size=64, latency_target_ms={TARGET_MS}",
                )
            )
    if target:
        found.append(
            Config(
                "wide_t50",
                "wide",
                f"latency target {OVERLOAD_TARGET_MS} ms",
                f"max_batch_size=64, latency_target_ms={OVERLOAD_TARGET_MS}",
            )
        )
    return found


def build_app(tmp: Path, target: bool) -> tuple[Path, list[Config]]:
    """One app, an endpoint per configuration: ``mlfn new``'s tensor endpoint for each model
    with its ``Limits(...)`` replaced."""
    app = make_app(tmp / "app", {})
    settings = Settings(cache_dir=tmp / "cache")
    rendered = {}
    for model, sizes in (("wide", WIDE), ("mlp", (256, 512, 512, 10))):
        path = mlp(tmp / f"{model}.onnx", sizes=sizes)
        rendered[model] = render_tensor_endpoint(model, str(path), app, settings).read_text()
        shutil.rmtree(app / "functions" / model)
    made = configs(target)
    for config in made:
        folder = app / "functions" / config.endpoint
        folder.mkdir()
        (folder / "__init__.py").write_text("")
        text, count = re.subn(
            r"limits=Limits\([^)]*\)", f"limits=Limits({config.limits})", rendered[config.model]
        )
        assert count == 1, rendered[config.model]
        (folder / "endpoint.py").write_text(text)
    return app, made


def _body() -> bytes:
    row = np.random.default_rng(0).standard_normal(256).astype(np.float32).tolist()
    return orjson.dumps({"instances": [{"x": row}]})


# 1. Throughput and latency under wrk.


@dataclass(frozen=True)
class Load:
    ok_per_s: float  # answers of 200 a second
    p50_ms: float
    p99_ms: float  # wrk's, over every answer (a quick 503 counts too)
    requests: int
    non_2xx: int


def wrk(url: str, body: bytes, connections: int, seconds: float) -> Load:
    out = wrk_output(url, body, connections, seconds)
    total, took, unit = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out).groups()  # type: ignore[union-attr]
    elapsed = float(took) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]
    non_2xx = wrk_non_2xx(out)
    ok_per_s = (int(total) - non_2xx) / elapsed
    return Load(ok_per_s, wrk_ms(out, " 50"), wrk_ms(out, " 99"), int(total), non_2xx)


def throughput(
    host: LocalHost, made: list[Config], seconds: float, rounds: int
) -> dict[tuple[str, int], Load]:
    """Each configuration at its connection counts, alternating, ``rounds`` times; the round
    with the most answers of 200 a second is kept."""
    body = _body()
    runs = [(c, n) for n in (1, 32) for c in made
            if c.endpoint != "wide_t50" and (c.model == "wide" or n == 32)]  # fmt: skip
    best: dict[tuple[str, int], Load] = {}
    for _ in range(rounds):
        for config, connections in runs:
            load = wrk(f"{host.url}/api/{config.endpoint}/predict", body, connections, seconds)
            key = (config.endpoint, connections)
            if key not in best or load.ok_per_s > best[key].ok_per_s:
                best[key] = load
    return best


# 2. Overload: an open-loop client.


@dataclass(frozen=True)
class Answer:
    status: int
    retry_after: bool
    latency_s: float  # from the write of the request to the end of the answer
    waited_s: float  # from its scheduled time to its write (no free connection)


@dataclass(frozen=True)
class Overload:
    label: str
    rate: float  # offered, requests a second
    seconds: float
    answers: list[Answer]
    failed: int  # no answer (a connection error or the client's timeout)
    served_ms: list[tuple[int, int]]  # the host's own (status, ms) a request (its log lines)
    client_lag_ms: list[float]  # how late the client's own event loop woke, every 5 ms


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def exchange(self, request: bytes) -> tuple[int, dict[str, str], bool]:
        """One request and its answer: status, headers, whether the connection may be reused."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        else:
            await self.reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, headers.get("connection", "").lower() != "close"

    def close(self) -> None:
        self.writer.close()


async def _open_loop(port: int, path: str, body: bytes, rate: float, seconds: float,
                     timeout: float = 30.0) -> tuple[list[Answer], int, list[float]]:  # fmt: skip
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    idle: list[_Connection] = []
    # Made inside the running loop (asyncio primitives bind to it).
    free = asyncio.Semaphore(MAX_CONNECTIONS)
    answers: list[Answer] = []
    failed = 0

    async def connect() -> _Connection:
        return _Connection(*await asyncio.open_connection("127.0.0.1", port))

    async def one(scheduled: float) -> None:
        nonlocal failed
        async with free:
            connection = idle.pop() if idle else await connect()
            sent = time.perf_counter()
            try:
                # Not wait_for: on Python 3.11 it runs the exchange in a task of its own, one
                # more turn of this busy loop before the answer counts (as in the host).
                async with asyncio.timeout(timeout):
                    status, headers, keep = await connection.exchange(request)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                failed += 1
                connection.close()
                return
            done = time.perf_counter()
            if keep:
                idle.append(connection)
            else:
                connection.close()
            answers.append(Answer(status, "retry-after" in headers, done - sent, sent - scheduled))

    # The client shares the host's cores: how late its own loop wakes says how much of a
    # client-side latency is the client's (its answers are timed when its loop gets to them).
    lags: list[float] = []
    running = True

    async def watch() -> None:
        while running:
            asleep = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append((time.perf_counter() - asleep - 0.005) * 1e3)

    idle.extend(await asyncio.gather(*(connect() for _ in range(64))))  # opened before the clock
    watching = asyncio.create_task(watch())
    total = max(1, int(rate * seconds))
    tasks = []
    start = time.perf_counter() + 0.01
    sent = 0
    while sent < total:
        now = time.perf_counter()
        due = min(total, int((now - start) * rate) + 1)
        while sent < due:
            tasks.append(asyncio.create_task(one(start + sent / rate)))
            sent += 1
        await asyncio.sleep(max(0.0, start + sent / rate - time.perf_counter()))
    await asyncio.gather(*tasks)
    running = False
    await watching
    for connection in idle:
        connection.close()
    return answers, failed, lags


# The host's line for each request: from the request read to its answer sent, whole ms.
_EXECUTED = re.compile(r"Executed 'Functions\.(\w+)' \(\w+, Id=[^,]+, Duration=(\d+)ms\)"
                       r':? "[^"]*" (\d{3})')  # fmt: skip


def overload(host: LocalHost, endpoint: str, label: str, rate: float, seconds: float) -> Overload:
    assert host.log_path is not None
    start = host.log_path.stat().st_size
    answers, failed, lags = asyncio.run(
        _open_loop(host.port, f"/api/{endpoint}/predict", _body(), rate, seconds)
    )
    with host.log_path.open("rb") as log:
        log.seek(start)
        lines = log.read().decode(errors="replace")
    served = [
        (int(status), int(ms))
        for function, ms, status in _EXECUTED.findall(lines)
        if function == f"{endpoint}_predict"
    ]
    return Overload(label, rate, seconds, answers, failed, served, lags)


# 3. HTTP beside a batch file.


@dataclass(frozen=True)
class BesideFile:
    idle_ms: list[float]
    during_ms: list[float]
    during_failed: int  # answers other than 200 while the file was scored
    rows: int
    file_mb: float
    file_s: float  # from the upload's end until the summary was seen
    in_function_s: float  # the summary's own seconds
    profile: str | None = None  # --profile: py-spy on the host while the file was scored


def _mlfn(app: Path, *args: str) -> None:
    command = [str(Path(sys.executable).parent / "mlfn"), *args]
    done = subprocess.run(command, cwd=app, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"mlfn {' '.join(args)} failed:\n{done.stdout}{done.stderr}")


COLUMNS = [f"f{i:02d}" for i in range(FEATURES)]


def _rows(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, FEATURES)).round(3)


def classifier_app(tmp: Path) -> Path:
    """An app with endpoint ``churn``: a 13-feature classifier, converted and scaffolded by the
    CLI as a user would."""
    import joblib
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    app = make_app(tmp / "churn-app", {})
    (app / "models").mkdir()
    x = pd.DataFrame(_rows(2_000, 1), columns=COLUMNS)
    weights = np.random.default_rng(2).standard_normal(FEATURES)
    fitted = make_pipeline(StandardScaler(), LogisticRegression()).fit(
        x, (x.to_numpy() @ weights > 0).astype(np.int64)
    )
    joblib.dump(fitted, tmp / "churn.joblib")
    x.head(200).to_csv(tmp / "sample.csv", index=False)
    _mlfn(app, "convert", str(tmp / "churn.joblib"), "--to", "models/churn.onnx",
          "--sample", str(tmp / "sample.csv"), "--classes", "stays,leaves")  # fmt: skip
    _mlfn(app, "new", "churn", "--model", "models/churn.onnx", "--template", "classifier")
    return app


def _csv(rows: np.ndarray) -> bytes:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    sink = pa.BufferOutputStream()
    table = pa.table({c: rows[:, i] for i, c in enumerate(COLUMNS)})
    pcsv.write_csv(table, sink, pcsv.WriteOptions(quoting_style="needed"))
    return bytes(sink.getvalue().to_pybytes())


class _Client:
    """One keep-alive connection, one request at a time."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        instance = dict(zip(COLUMNS, _rows(1, 3)[0].tolist(), strict=True))
        self.body = orjson.dumps({"instances": [instance]})
        self.headers = {"Content-Type": "application/json"}

    def post(self) -> tuple[int, float]:
        started = time.perf_counter()
        self.connection.request("POST", "/api/churn/predict", self.body, self.headers)
        response = self.connection.getresponse()
        response.read()
        return response.status, (time.perf_counter() - started) * 1e3

    def close(self) -> None:
        self.connection.close()


def beside_file(tmp: Path, rows: int, idle_s: float, spy: bool = False) -> BesideFile:
    from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
    from azure.storage.blob import ContainerClient

    from runtime.protocol import batch

    conn = os.environ["AzureWebJobsStorage"]  # noqa: SIM112 - Azure's own name
    app = classifier_app(tmp)
    data = _csv(_rows(rows, 4))
    warm = _csv(_rows(100, 5))
    inbox = ContainerClient.from_connection_string(conn, batch.batch_container("churn"))
    results = ContainerClient.from_connection_string(conn, batch.results_container("churn"))
    for container in (inbox, results):
        with contextlib.suppress(ResourceExistsError):
            container.create_container()
    env = {"AzureWebJobsStorage": conn, "MLFN_CACHE_DIR": str(tmp / "cache"),
           "MLFN_HOST_BLOB_SCAN_S": "0.2"}  # fmt: skip
    host = LocalHost(app, env).start()
    client = _Client(host.port)

    def upload(name: str, payload: bytes) -> str:
        blob = inbox.get_blob_client(name)
        etag = str(blob.upload_blob(payload, overwrite=True)["etag"])
        return batch.summary_path(name, etag)

    def summary(path: str) -> dict[str, object] | None:
        with contextlib.suppress(ResourceNotFoundError):
            loaded: dict[str, object] = orjson.loads(
                results.get_blob_client(path).download_blob().readall()
            )
            return loaded
        return None

    try:
        status, _ = client.post()  # loads the model
        assert status == 200, status
        stamp = f"{os.getpid()}-{time.time_ns()}"
        warm_summary = upload(f"bench/warm-{stamp}.csv", warm)  # pyarrow imported, listener up
        deadline = time.monotonic() + FILE_TIMEOUT_S
        while summary(warm_summary) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no summary for the warm-up file:\n{host.output()[-3000:]}")
            time.sleep(0.05)
        idle = []
        until = time.perf_counter() + idle_s
        while time.perf_counter() < until:
            status, ms = client.post()
            assert status == 200, status
            idle.append(ms)
        spying = _Spy(tmp, host) if spy else None
        path = upload(f"bench/file-{stamp}.csv", data)
        started = time.perf_counter()
        during, failed = [], 0
        check = started + 0.25
        found = None
        while found is None:
            status, ms = client.post()
            during.append(ms)
            failed += status != 200
            if time.perf_counter() >= check:  # between requests: never inside a timed one
                found = summary(path)
                check = time.perf_counter() + 0.25
            if time.perf_counter() - started > FILE_TIMEOUT_S:
                raise RuntimeError(f"no summary for the file:\n{host.output()[-3000:]}")
        file_s = time.perf_counter() - started
        profile = spying.stop() if spying else None
    finally:
        client.close()
        host.stop()
    assert found["rows"] == rows and found["errors"] == 0, found
    return BesideFile(idle, during, failed, rows, len(data) / 1e6, file_s,
                      float(found["seconds"]), profile)  # type: ignore[arg-type]  # fmt: skip


class _Spy:
    """py-spy on the host, sampling the thread holding the GIL, from now until ``stop``."""

    def __init__(self, tmp: Path, host: LocalHost) -> None:
        assert host.process is not None
        self.raw = tmp / "spy.raw"
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
             str(host.process.pid), "--rate", "250", "--gil", "--threads", "--function",
             "--format", "raw", "--output", str(self.raw), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(1.0)  # attached

    def stop(self, top: int = 5) -> str:
        """Each thread's share of the samples holding the GIL, with its busiest frames."""
        self.process.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
        self.process.wait(timeout=60)
        if not self.raw.exists():
            return "(py-spy could not attach here)"
        threads: dict[str, Counter[str]] = {}
        for line in self.raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            thread, _, rest = stack.partition(";")
            name = re.sub(r"^thread \(\w+\): ", "", thread).strip('"')
            leaf = re.sub(r" \(/.*/(site-packages|main)/", " (", rest.split(";")[-1])
            threads.setdefault(name, Counter())[leaf or "(no Python frame)"] += int(count)
        total = sum(sum(c.values()) for c in threads.values()) or 1
        lines = []
        for name, frames in sorted(threads.items(), key=lambda t: -sum(t[1].values()))[:5]:
            n = sum(frames.values())
            busiest = "; ".join(f"{f} {k / n * 100:.0f}%" for f, k in frames.most_common(top))
            lines.append(f"{n / total * 100:5.1f}%  {name}: {busiest}")
        return "```\n" + "\n".join(lines) + f"\n```\n({total:,} samples holding the GIL, 250 Hz)"


# The run.


@dataclass(frozen=True)
class Results:
    target: bool
    made: list[Config]
    loads: dict[tuple[str, int], Load]
    overloads: list[Overload]
    beside: BesideFile | None  # None without Azurite
    rounds: int
    seconds: float


def _warm(url: str, body: bytes) -> None:
    """Loads the endpoint's model: a target's endpoint may answer 504 while it loads (the
    load counts against the request's deadline), so until three answers of 200 in a row."""
    ok = 0
    for _ in range(100):
        r = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=60)
        assert r.status_code in (200, 503, 504), r.text
        ok = ok + 1 if r.status_code == 200 else 0
        if ok == 3:
            return
        if r.status_code != 200:
            time.sleep(0.05)
    raise RuntimeError(f"{url}: no three answers of 200 in a row: {r.status_code} {r.text}")


def run(quick: bool, profile: bool = False) -> Results:
    target = has_latency_target()
    seconds, rounds = (1.0, 1) if quick else (2.0, ROUNDS)
    with tempfile.TemporaryDirectory(prefix="mlfn-latency-") as name:
        tmp = Path(name)
        app, made = build_app(tmp, target)
        host = LocalHost(app, {"MLFN_CACHE_DIR": str(tmp / "cache")}, ("--no-queues",)).start()
        try:
            body = _body()
            for config in made:
                _warm(f"{host.url}/api/{config.endpoint}/predict", body)
            loads = throughput(host, made, seconds, rounds)
            best = max(load.ok_per_s for (e, n), load in loads.items() if e.startswith("wide_"))
            span = 1.0 if quick else 5.0
            overloads = []
            for factor in OVERLOAD_FACTORS:
                rate = best * factor
                overloads.append(overload(host, "wide_today", "today's batching", rate, span))
                if target:
                    label = f"latency target {OVERLOAD_TARGET_MS} ms"
                    overloads.append(overload(host, "wide_t50", label, rate, span))
        finally:
            host.stop()
        beside = None
        if "AzureWebJobsStorage" in os.environ:
            beside = beside_file(
                tmp, 5_000 if quick else FILE_ROWS, 0.5 if quick else IDLE_S, profile
            )
    return Results(target, made, loads, overloads, beside, rounds, seconds)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def table(results: Results) -> str:
    parts = [throughput_table(results), overload_table(results.overloads)]
    if results.beside is not None:
        parts.append(beside_table(results.beside))
    return "\n\n".join(p for p in parts if p)


def throughput_table(results: Results) -> str:
    wide = "->".join(map(str, WIDE))
    title = {"wide": f"wide MLP {wide}", "mlp": "MLP 256->512->512->10"}
    limits = {"batching off": "max_batch_size=1", "today's batching": "max_batch_size=64"}
    lines = [
        f"| batching and a latency target (wrk -t1, {results.seconds:.0f} s a run, the best of "
        f"{results.rounds} alternating rounds) | connections | 200/s | p50 / p99 ms | non-2xx "
        "| / batching off |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for model, counts in (("wide", (1, 32)), ("mlp", (32,))):
        for connections in counts:
            off = results.loads[(f"{model}_off", connections)]
            for config in results.made:
                load = results.loads.get((config.endpoint, connections))
                if config.model != model or load is None:
                    continue
                detail = limits.get(config.label, "max_batch_size=64")
                lines.append(
                    f"| {title[model]}: {config.label} ({detail}) | {connections} "
                    f"| {load.ok_per_s:.0f} | {load.p50_ms:.2f} / {load.p99_ms:.2f} "
                    f"| {load.non_2xx} | {load.ok_per_s / off.ok_per_s:.2f}x |"
                )
    if not results.target:
        lines.append(
            "| latency target: this tree's `Limits` has no `latency_target_ms` | | | | | |"
        )
    return "\n".join(lines)


def overload_table(overloads: list[Overload]) -> str:
    if not overloads:
        return ""
    lines = [
        f"| overload: wide MLP, open loop for {overloads[0].seconds:.0f} s | offered "
        f"req/s | answered | 200 | 200 within {OVERLOAD_TARGET_MS} ms: client / host "
        "| largest 200 ms: client / host | p50 / p99 of 200s ms (client) | 503 (with "
        "Retry-After) | 504 (with Retry-After) | other, or none | longest wait for a "
        "connection ms | client's loop late p50 / p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for o in overloads:
        ok = [a.latency_s * 1e3 for a in o.answers if a.status == 200]
        served = [ms for status, ms in o.served_ms if status == 200]

        def within(values: list[float] | list[int]) -> str:
            share = sum(v <= OVERLOAD_TARGET_MS for v in values) / max(1, len(values))
            return f"{share * 100:.1f} %"

        shed = {
            code: (sum(a.status == code for a in o.answers),
                   sum(a.status == code and a.retry_after for a in o.answers))
            for code in (503, 504)
        }  # fmt: skip
        other = sum(a.status not in (200, 503, 504) for a in o.answers) + o.failed
        spread = f"{statistics.median(ok):.1f} / {_pct(ok, 0.99):.1f}" if ok else "-"
        waited = max((a.waited_s for a in o.answers), default=0) * 1e3
        lags = o.client_lag_ms or [0.0]
        late = f"{statistics.median(lags):.1f} / {_pct(lags, 0.99):.1f}"
        lines.append(
            f"| {o.label} | {o.rate:.0f} | {len(o.answers)} | {len(ok)} "
            f"| {within(ok)} / {within(served)} "
            f"| {max(ok, default=0):.1f} / {max(served, default=0)} "
            f"| {spread} | {shed[503][0]} ({shed[503][1]}) | {shed[504][0]} ({shed[504][1]}) "
            f"| {other} | {waited:.0f} | {late} |"
        )
    factors = " and ".join(f"{f}x" for f in OVERLOAD_FACTORS)
    lines.append(
        f"| offered: {factors} the best 200/s of the wide MLP above. Client: from writing "
        "the request to the end of its answer (the kernel's and uvicorn's queueing "
        "included); host: its Executed line, from the request read to the answer sent, "
        "whole ms. A request waits in the client for a free connection "
        f"({MAX_CONNECTIONS} at most) before its write. The client shares the two cores: "
        "how late its own loop woke from a 5 ms sleep, through the run, is what of a "
        "client-side time is the client's "
        "| | | | | | | | | | | |"
    )
    return "\n".join(lines)


def beside_table(b: BesideFile) -> str:
    idle50, idle99 = _pct(b.idle_ms, 0.5), _pct(b.idle_ms, 0.99)
    dur50, dur99 = _pct(b.during_ms, 0.5), _pct(b.during_ms, 0.99)
    lines = [
        "| HTTP beside a batch file: 13-feature classifier (mlfn convert, mlfn new "
        "--template classifier), one client, a request at a time | requests | p50 ms "
        "| p99 ms | largest ms |",
        "|---|---:|---:|---:|---:|",
        f"| idle | {len(b.idle_ms)} | {idle50:.2f} | {idle99:.2f} | {max(b.idle_ms):.2f} |",
        f"| while a {b.rows:,}-row CSV ({b.file_mb:.0f} MB) is scored: {b.file_s:.1f} s from "
        f"the upload's end to its summary, {b.in_function_s:.1f} s in the function; "
        f"{b.during_failed} answers not 200 | {len(b.during_ms)} | {dur50:.2f} "
        f"| {dur99:.2f} | {max(b.during_ms):.2f} |",
        f"| during / idle | | {dur50 / idle50:.2f}x | {dur99 / idle99:.2f}x | |",
    ]
    if b.profile:
        lines += [
            "",
            "mlfn serve while it scores the file, each thread's share of the "
            "samples holding the GIL (py-spy --gil --threads):",
            "",
            b.profile,
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy on the host while it scores the file"
    )
    args = parser.parse_args()
    print(table(run(args.quick, args.profile)))


if __name__ == "__main__":
    main()

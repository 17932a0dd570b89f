"""The host under load: ``mlfn serve`` against a bare uvicorn endpoint on the same model.

    python -m bench.http_load [--quick]

Both servers run the MLP 256->512->512->10 (the mlfn one through a ``mlfn new --model`` tensor
endpoint) on loopback; ``wrk`` (Debian's package) drives them from another process at 1, 16
and 64 connections for a few seconds each, one instance per request. Also: micro-batching on
vs off (``max_batch_size=1``) at 32 connections. Without wrk, a bounded asyncio client
(httpx) is used and the table says so: it competes for the same two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import orjson

from runtime.config import Settings
from runtime.scaffold import render_tensor_endpoint
from tests.models.onnx_builders import mlp
from tests.support import ROOT, LocalHost, free_port, make_app


@dataclass(frozen=True)
class Load:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def _body() -> bytes:
    row = np.random.default_rng(0).standard_normal(256).astype(np.float32).tolist()
    return orjson.dumps({"instances": [{"x": row}]})


def wrk_output(url: str, body: bytes, connections: int, seconds: float) -> str:
    """What wrk prints for ``connections`` POSTing ``body`` to ``url`` for ``seconds``."""
    with tempfile.TemporaryDirectory(prefix="mlfn-wrk-") as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(
            'wrk.method = "POST"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = [[{body.decode()}]]\n"
        )
        return subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
             "-s", str(script), url],
            check=True, capture_output=True, text=True, timeout=seconds + 30,
        ).stdout  # fmt: skip


def wrk_ms(out: str, percentile: str) -> float:
    """A latency percentile (" 50", " 99") of wrk's output, in milliseconds."""
    value, unit = re.search(rf"{percentile}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def wrk_non_2xx(out: str) -> int:
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return int(errors.group(1)) if errors else 0


def wrk(url: str, body: bytes, connections: int, seconds: float) -> Load:
    out = wrk_output(url, body, connections, seconds)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return Load(rate, wrk_ms(out, " 50"), wrk_ms(out, " 99"), wrk_non_2xx(out))


def asyncio_client(url: str, body: bytes, connections: int, seconds: float) -> Load:
    """A bounded fallback when wrk is missing: ``connections`` callers for ``seconds``."""

    async def main() -> tuple[list[float], int]:
        latencies: list[float] = []
        errors = 0
        deadline = time.monotonic() + seconds
        limits = httpx.Limits(max_connections=connections)
        headers = {"content-type": "application/json"}
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:

            async def caller() -> None:
                nonlocal errors
                while time.monotonic() < deadline:
                    started = time.perf_counter()
                    r = await client.post(url, content=body, headers=headers)
                    latencies.append(time.perf_counter() - started)
                    errors += r.status_code != 200

            await asyncio.gather(*(caller() for _ in range(connections)))
        return latencies, errors

    latencies, errors = asyncio.run(main())
    latencies.sort()
    return Load(
        len(latencies) / seconds,
        statistics.median(latencies) * 1e3,
        latencies[int(len(latencies) * 0.99)] * 1e3,
        errors,
    )


def drive(url: str, body: bytes, connections: int, seconds: float) -> Load:
    if shutil.which("wrk"):
        return wrk(url, body, connections, seconds)
    return asyncio_client(url, body, connections, seconds)


class Bare:
    """The bare uvicorn endpoint in its own process."""

    def __init__(self, model: Path) -> None:
        self.port = free_port()
        env = {**os.environ, "MLFN_BENCH_MODEL": str(model)}
        self.process = subprocess.Popen(
            # uvicorn's defaults, as mlfn serve runs it: one process, an access log line per
            # request (mlfn serve writes one too).
            [sys.executable, "-m", "uvicorn", "bench.bare_endpoint:app", "--port", str(self.port)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_listening(self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def _wait_listening(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def build_app(tmp: Path) -> tuple[Path, Path]:
    model = mlp(tmp / "mlp.onnx")
    app = make_app(tmp / "app", {})
    settings = Settings(cache_dir=tmp / "cache")
    render_tensor_endpoint("mlp", str(model), app, settings)
    single = (app / "functions" / "mlp" / "endpoint.py").read_text()
    (app / "functions" / "mlp_single").mkdir()
    (app / "functions" / "mlp_single" / "__init__.py").write_text("")
    (app / "functions" / "mlp_single" / "endpoint.py").write_text(
        re.sub(r"max_batch_size=\d+", "max_batch_size=1", single)
    )
    return app, model


TELEMETRY = {
    "off": {},
    "on, metrics only": {"OTEL_TRACES_EXPORTER": "none"},
    "on, 10 % of traces": {
        "OTEL_TRACES_SAMPLER": "traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
    },
    "on, every trace": {},
}


def telemetry_rows(app: Path, tmp: Path, body: bytes, seconds: float) -> list[tuple[str, Load]]:
    """The same endpoint with OpenTelemetry off and on, exporting over OTLP/HTTP to a sink in
    another process (the cost of turning it on, as an operator would)."""
    port = free_port()
    sink = subprocess.Popen([sys.executable, "-m", "bench.otlp_sink", str(port)])
    rows = []
    try:
        for label, extra in TELEMETRY.items():
            env = {"MLFN_CACHE_DIR": str(tmp / "cache")}
            if label != "off":
                env |= {
                    "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                    "OTEL_SERVICE_NAME": "bench",
                    **extra,
                }
            host = LocalHost(app, env, ("--no-queues",)).start()
            try:
                url = f"{host.url}/api/mlp/predict"
                r = httpx.post(url, content=body, headers={"content-type": "application/json"})
                assert r.status_code == 200, r.text
                rows.append((label, drive(url, body, 16, seconds)))
            finally:
                host.stop()
    finally:
        sink.terminate()
        sink.wait(10)
    return rows


def run(
    seconds: float,
) -> tuple[list[tuple[str, Load, Load]], tuple[Load, Load], str, list[tuple[str, Load]]]:
    body = _body()
    with tempfile.TemporaryDirectory(prefix="mlfn-load-") as name:
        tmp = Path(name)
        app, model = build_app(tmp)
        host = LocalHost(app, {"MLFN_CACHE_DIR": str(tmp / "cache")}, ("--no-queues",)).start()
        bare = Bare(model)
        rows = []
        try:
            for url in (f"{host.url}/api/mlp/predict", f"{host.url}/api/mlp_single/predict",
                        bare.url):  # fmt: skip
                r = httpx.post(url, content=body, headers={"content-type": "application/json"})
                assert r.status_code == 200, r.text  # loads the models before timing
            for connections in (1, 16, 64):
                mine = drive(f"{host.url}/api/mlp/predict", body, connections, seconds)
                theirs = drive(bare.url, body, connections, seconds)
                rows.append((f"{connections} connections", mine, theirs))
            batched = drive(f"{host.url}/api/mlp/predict", body, 32, seconds)
            single = drive(f"{host.url}/api/mlp_single/predict", body, 32, seconds)
        finally:
            host.stop()
            bare.stop()
        telemetry = telemetry_rows(app, tmp, body, seconds)
    client = "wrk -t1" if shutil.which("wrk") else "an asyncio httpx client (no wrk)"
    return rows, (batched, single), client, telemetry


def table(
    rows: list[tuple[str, Load, Load]],
    batching: tuple[Load, Load],
    client: str,
    telemetry: list[tuple[str, Load]],
) -> str:
    lines = [
        f"| MLP over HTTP ({client}) | mlfn serve req/s | p50 / p99 ms "
        "| bare uvicorn req/s | p50 / p99 ms | mlfn / bare |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, mine, theirs in rows:
        lines.append(
            f"| {label} | {mine.requests_per_s:.0f} | {mine.p50_ms:.2f} / {mine.p99_ms:.2f} "
            f"| {theirs.requests_per_s:.0f} | {theirs.p50_ms:.2f} / {theirs.p99_ms:.2f} "
            f"| {mine.requests_per_s / theirs.requests_per_s:.2f}x |"
        )
    batched, single = batching
    lines += [
        "",
        "| micro-batching, 32 connections | req/s | p50 / p99 ms | errors |",
        "|---|---:|---:|---:|",
        f"| on (max_batch_size=64) | {batched.requests_per_s:.0f} "
        f"| {batched.p50_ms:.2f} / {batched.p99_ms:.2f} | {batched.errors} |",
        f"| off (max_batch_size=1) | {single.requests_per_s:.0f} "
        f"| {single.p50_ms:.2f} / {single.p99_ms:.2f} | {single.errors} |",
        f"| on / off | {batched.requests_per_s / single.requests_per_s:.2f}x | | |",
    ]
    if telemetry:
        off = telemetry[0][1].requests_per_s
        lines += [
            "",
            "| OpenTelemetry, 16 connections (OTLP/HTTP to a sink) | req/s | p50 / p99 ms "
            "| / off |",
            "|---|---:|---:|---:|",
        ]
        lines += [
            f"| {label} | {load.requests_per_s:.0f} | {load.p50_ms:.2f} / {load.p99_ms:.2f} "
            f"| {load.requests_per_s / off:.2f}x |"
            for label, load in telemetry
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    args = parser.parse_args()
    print(table(*run(1.0 if args.quick else 5.0)))


if __name__ == "__main__":
    main()

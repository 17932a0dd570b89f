"""Cold start, measured: what a scale-from-zero instance pays before its first answer.

    python -m scripts.azurite run -- python -m bench.cold_start     (make bench runs it too)

Runs the repository's app under `mlfn serve` against Azurite, over real HTTP, and prints a
table. Numbers are from one run on whatever machine runs it: quote ratios, not absolutes.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from azure.storage.blob import ContainerClient

from scripts.build_models import build_all
from tests.models.onnx_builders import heavy
from tests.support import ROOT, LocalHost, copy_examples

HEAVY_ENDPOINT = """
from pydantic import BaseModel, Field
from runtime import Endpoint, OnnxModel

class Row(BaseModel):
    x: list[float] = Field(min_length=4, max_length=4)

class Out(BaseModel):
    y: float

endpoint = Endpoint(Row, Out, model="heavy.onnx")

@endpoint.predict
def predict(rows, model: OnnxModel):
    return [Out(y=y) for y in model.run({"x": [r.x for r in rows]})["y"].tolist()]
"""

FLOWER = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
RUNS = 5


def import_seconds(runs: int = RUNS) -> tuple[float, float]:
    """Median seconds to import function_app (what indexing costs), and the same plus
    onnxruntime, for comparison."""

    def once(statement: str) -> float:
        code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True
        )
        return float(out.stdout.strip())

    app = statistics.median(once("import function_app") for _ in range(runs))
    heavy = statistics.median(
        once("import function_app, onnxruntime, azure.storage.blob") for _ in range(runs)
    )
    return app, heavy


@dataclass(frozen=True)
class FirstRequest:
    listening: float  # seconds from spawning mlfn serve until it accepts connections
    first: float  # seconds for the first predict
    indexed_ms: float  # when indexing was done, counted from the process's start
    line: str  # the load line: fetch, verify, session, warm-up


def first_request(
    app: Path, env: dict[str, str], name: str = "iris", instance: dict[str, object] = FLOWER
) -> FirstRequest:
    """Start a host, time it until it listens and then its first predict of ``name``."""
    started = time.perf_counter()
    host = LocalHost(app, env, ("--no-queues",)).start()
    listening = time.perf_counter() - started
    try:
        with host.client() as http:
            t = time.perf_counter()
            r = http.post(f"/api/{name}/predict", json={"instances": [instance]})
            first = time.perf_counter() - t
            assert r.status_code == 200, r.text
        output = host.output()
    finally:
        host.stop()
    line = next(line for line in output.splitlines() if "model loaded" in line)
    indexed = re.search(r"\(([\d.]+) ms after process start\)", output)
    return FirstRequest(
        listening, first, float(indexed.group(1)) if indexed else 0.0, line.split(": ", 2)[-1]
    )


def warm_latency(host: LocalHost, n: int = 200) -> float:
    with host.client() as http:
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            http.post("/api/iris/predict", json={"instances": [FLOWER]})
            samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def peak_rss_mb(host: LocalHost) -> float:
    """The host process's peak resident memory (VmHWM), in MB."""
    assert host.process is not None
    status = Path(f"/proc/{host.process.pid}/status").read_text()
    kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
    return kb / 1024


def run(quick: bool = False) -> tuple[str, str]:
    """The cold-start table and the load lines behind it, under the Azurite ``make bench`` or
    ``scripts.azurite run`` started."""
    conn = os.environ.get("AzureWebJobsStorage")  # noqa: SIM112 - Azure's own name
    if not conn or "AZURITE_LOG" not in os.environ:
        raise SystemExit("run under Azurite: python -m scripts.azurite run -- python -m bench.run")
    with tempfile.TemporaryDirectory(prefix="mlfn-bench-") as tmp:
        return _measure(Path(tmp), conn, quick)


def _measure(tmp: Path, conn: str, quick: bool) -> tuple[str, str]:
    models = build_all(tmp / "models")
    models["heavy"] = heavy(tmp / "models" / "heavy.onnx", seed=0, megabytes=8 if quick else 64)
    container = f"bench{uuid.uuid4().hex[:8]}"
    client = ContainerClient.from_connection_string(conn, container)
    client.create_container()
    for name, path in models.items():
        client.upload_blob(f"{name}.onnx", path.read_bytes())
    app = copy_examples(tmp / "app")
    (app / "functions" / "heavy").mkdir()
    (app / "functions" / "heavy" / "__init__.py").write_text("")
    (app / "functions" / "heavy" / "endpoint.py").write_text(HEAVY_ENDPOINT)
    env = {
        "AzureWebJobsStorage": conn,
        "MLFN_MODEL_STORE": f"az://{container}",
        "MLFN_CACHE_DIR": str(tmp / "cache"),
    }

    import_app, import_heavy = import_seconds(1 if quick else RUNS)
    cold = first_request(app, env)  # empty disk cache: download + session
    warm_disk = first_request(app, env)  # restarted process, warm disk cache: revalidate only
    row = {"x": [1.0, 2.0, 3.0, 4.0]}
    big_cold = first_request(app, env, "heavy", row)
    big_warm = first_request(app, env, "heavy", row)
    host = LocalHost(app, env, ("--no-queues",)).start()
    try:
        with host.client() as http:
            http.post("/api/iris/predict", json={"instances": [FLOWER]})
        hot = warm_latency(host, 20 if quick else 200)
        rss = peak_rss_mb(host)
    finally:
        host.stop()

    rows = [
        ("import function_app (indexing)", f"{import_app * 1000:.0f} ms",
         "median of fresh interpreters"),
        ("  same + onnxruntime + blob SDK", f"{import_heavy * 1000:.0f} ms",
         f"{import_heavy / import_app:.1f}x: what lazy imports save at indexing"),
        ("host start to listening", f"{cold.listening * 1000:.0f} ms",
         f"mlfn serve; indexing done {cold.indexed_ms:.0f} ms after process start"),
        ("first predict, empty cache", f"{cold.first * 1000:.0f} ms",
         "download + verify + session + warm-up + predict"),
        ("process start to first prediction, empty cache",
         f"{(cold.listening + cold.first) * 1000:.0f} ms", "the scale-from-zero figure"),
        ("first predict, warm disk cache", f"{warm_disk.first * 1000:.0f} ms",
         "conditional GET (304), no download"),
        (f"{heavy_mb(quick)} MB model: first predict, empty cache",
         f"{big_cold.first * 1000:.0f} ms", "download from Azurite + session"),
        (f"{heavy_mb(quick)} MB model: first predict, warm disk cache",
         f"{big_warm.first * 1000:.0f} ms",
         f"{big_cold.first / big_warm.first:.1f}x faster: revalidate, verify digest, session"),
        ("predict, model in memory", f"{hot * 1000:.2f} ms", "median, one client, iris"),
        ("peak RSS, one small model loaded", f"{rss:.0f} MB", "VmHWM of the mlfn serve process"),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    lines = [f"| {'cold start (iris, Azurite)':<{width}} | {'measured':>10} | note |",
             f"|{'-' * (width + 2)}|{'-' * 12}|------|"]  # fmt: skip
    lines += [f"| {a:<{width}} | {b:>10} | {c} |" for a, b, c in rows]
    loads = "\n".join(
        f"- {label}: `{run.line}`"
        for label, run in (("iris, empty cache", cold), ("iris, warm disk cache", warm_disk),
                           (f"{heavy_mb(quick)} MB, empty cache", big_cold),
                           (f"{heavy_mb(quick)} MB, warm disk cache", big_warm))
    )  # fmt: skip
    return "\n".join(lines), loads


def heavy_mb(quick: bool) -> int:
    return 8 if quick else 64


def main() -> None:
    table, loads = run()
    print(table)
    print(loads)


if __name__ == "__main__":
    main()

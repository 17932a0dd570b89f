"""Cold start, measured: what a scale-from-zero instance pays before its first answer.

    make bench        (or: python -m scripts.azurite run -- python -m bench.cold_start)

Runs the repository's app under `mlfn serve` against Azurite, over real HTTP, and prints a
table; writes bench/RESULTS.md. Numbers are from one run on whatever machine runs it: quote
ratios, not absolutes.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
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


def import_seconds() -> tuple[float, float]:
    """Median seconds to import function_app (what indexing costs), and the same plus
    onnxruntime, for comparison."""

    def once(statement: str) -> float:
        code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True
        )
        return float(out.stdout.strip())

    app = statistics.median(once("import function_app") for _ in range(RUNS))
    heavy = statistics.median(
        once("import function_app, onnxruntime, azure.storage.blob") for _ in range(RUNS)
    )
    return app, heavy


def first_request(
    app: Path, env: dict[str, str], name: str = "iris", instance: dict[str, object] = FLOWER
) -> tuple[float, float, str]:
    """Start a host; seconds until it listens, then seconds for the first predict of endpoint
    ``name``, and the host's load line."""
    started = time.perf_counter()
    host = LocalHost(app, env, ("--no-queues",)).start()
    listening = time.perf_counter() - started
    try:
        with host.client() as http:
            t = time.perf_counter()
            r = http.post(f"/api/{name}/predict", json={"instances": [instance]})
            first = time.perf_counter() - t
            assert r.status_code == 200, r.text
        line = next(line for line in host.output().splitlines() if "model loaded" in line)
    finally:
        host.stop()
    return listening, first, line.split("mlfn.models: ", 1)[-1]


def warm_latency(host: LocalHost, n: int = 200) -> float:
    with host.client() as http:
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            http.post("/api/iris/predict", json={"instances": [FLOWER]})
            samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def throughput(
    host: LocalHost, clients: int, seconds: float = 3.0, endpoint: str = "iris"
) -> float:
    """Requests per second with ``clients`` concurrent callers (bounded in time)."""
    deadline = time.monotonic() + seconds

    def caller(_: int) -> int:
        done = 0
        with httpx.Client(base_url=host.url, timeout=30) as http:
            while time.monotonic() < deadline:
                http.post(f"/api/{endpoint}/predict", json={"instances": [FLOWER]})
                done += 1
        return done

    with ThreadPoolExecutor(clients) as pool:
        total = sum(pool.map(caller, range(clients)))
    return total / seconds


def main() -> None:
    conn = os.environ.get("AzureWebJobsStorage")  # noqa: SIM112 - Azure's own name
    if not conn or "MLFN_AZURITE_LOG" not in os.environ:
        raise SystemExit(
            "run under Azurite: python -m scripts.azurite run -- python -m bench.cold_start"
        )
    tmp = Path(tempfile.mkdtemp(prefix="mlfn-bench-"))
    models = build_all(tmp / "models")
    models["heavy"] = heavy(tmp / "models" / "heavy.onnx", seed=0, megabytes=64)
    container = f"bench{uuid.uuid4().hex[:8]}"
    client = ContainerClient.from_connection_string(conn, container)
    client.create_container()
    for name, path in models.items():
        client.upload_blob(f"{name}.onnx", path.read_bytes())
    app = copy_examples(tmp / "app")
    (app / "functions" / "heavy").mkdir()
    (app / "functions" / "heavy" / "__init__.py").write_text("")
    (app / "functions" / "heavy" / "endpoint.py").write_text(HEAVY_ENDPOINT)
    # The control for micro-batching: the same model and code, one instance per model call.
    iris = (app / "functions" / "iris" / "endpoint.py").read_text()
    (app / "functions" / "iris_single").mkdir()
    (app / "functions" / "iris_single" / "__init__.py").write_text("")
    (app / "functions" / "iris_single" / "endpoint.py").write_text(
        iris.replace("max_batch_size=256", "max_batch_size=1")
    )
    env = {
        "AzureWebJobsStorage": conn,
        "MLFN_MODEL_STORE": f"az://{container}",
        "MLFN_CACHE_DIR": str(tmp / "cache"),
    }

    import_app, import_heavy = import_seconds()
    cold = first_request(app, env)  # empty disk cache: download + session
    warm_disk = first_request(app, env)  # restarted process, warm disk cache: revalidate only
    row = {"x": [1.0, 2.0, 3.0, 4.0]}
    big_cold = first_request(app, env, "heavy", row)
    big_warm = first_request(app, env, "heavy", row)
    host = LocalHost(app, env, ("--no-queues",)).start()
    try:
        with host.client() as http:
            http.post("/api/iris/predict", json={"instances": [FLOWER]})
        hot = warm_latency(host)
        with host.client() as http:
            http.post("/api/iris_single/predict", json={"instances": [FLOWER]})
        single = throughput(host, 1)
        many = throughput(host, 16)
        unbatched = throughput(host, 16, endpoint="iris_single")
    finally:
        host.stop()

    rows = [
        (
            "import function_app (indexing)",
            f"{import_app * 1000:.0f} ms",
            "median of 5 fresh interpreters",
        ),
        (
            "  same + onnxruntime + blob SDK",
            f"{import_heavy * 1000:.0f} ms",
            f"{import_heavy / import_app:.1f}x: what lazy imports save at indexing",
        ),
        ("host start to listening", f"{cold[0] * 1000:.0f} ms", "mlfn serve: index + uvicorn"),
        (
            "first predict, empty cache",
            f"{cold[1] * 1000:.0f} ms",
            "download + verify + session + warm-up + predict",
        ),
        (
            "first predict, warm disk cache",
            f"{warm_disk[1] * 1000:.0f} ms",
            "conditional GET (304), no download",
        ),
        (
            "64 MB model: first predict, empty cache",
            f"{big_cold[1] * 1000:.0f} ms",
            "download 64 MB from Azurite + session",
        ),
        (
            "64 MB model: first predict, warm disk cache",
            f"{big_warm[1] * 1000:.0f} ms",
            f"{big_cold[1] / big_warm[1]:.1f}x faster: revalidate, verify digest, session",
        ),
        ("predict, model in memory", f"{hot * 1000:.1f} ms", "median of 200, one client"),
        ("throughput, 1 client", f"{single:.0f} req/s", "3 s, loopback"),
        (
            "throughput, 16 clients",
            f"{many:.0f} req/s",
            f"{many / single:.1f}x of one client, 2 cores",
        ),
        (
            "throughput, 16 clients, batching off",
            f"{unbatched:.0f} req/s",
            f"same model, max_batch_size=1: micro-batching gives {many / unbatched:.1f}x",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    table = "\n".join(f"| {a:<{width}} | {b:>10} | {c} |" for a, b, c in rows)
    header = (
        f"| {'what':<{width}} | {'measured':>10} | note |\n|{'-' * (width + 2)}|{'-' * 12}|------|"
    )
    print(header + "\n" + table)
    for label, run in (
        ("iris cold", cold),
        ("iris warm", warm_disk),
        ("64 MB cold", big_cold),
        ("64 MB warm", big_warm),
    ):
        print(f"{label}: {run[2]}")
    results = ROOT / "bench" / "RESULTS.md"
    results.write_text(
        "# Benchmark results\n\n"
        "Reproduce: `make bench` (runs `python -m bench.cold_start` under Azurite).\n"
        f"Machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; "
        "shared and noisy, so read the ratios.\n"
        "Models: the iris example (641 bytes: the runtime's own overhead) "
        "and a 64 MB MatMul model\n"
        "(where the disk cache matters).\n\n"
        f"{header}\n{table}\n\n"
        f"Load lines (the cold-start breakdown each load logs):\n\n"
        f"- iris, empty cache: `{cold[2]}`\n- iris, warm disk cache: `{warm_disk[2]}`\n"
        f"- 64 MB, empty cache: `{big_cold[2]}`\n- 64 MB, warm disk cache: `{big_warm[2]}`\n"
    )
    print(f"\nwrote {results.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

"""What the payload log costs: ``mlfn serve`` throughput and latency on the iris example at 16
connections (wrk), the log off, sampling 10 % of requests, logging every request, and logging
every request to a storage account that cannot be reached (the buffer full, dropping).

    python -m bench.payload_log [--quick]

Each setting is a host of its own (the settings are the environment); the settings alternate
ROUNDS times and the best of each is kept. The records a run wrote are counted from its files,
so a row says the log did its work. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import httpx
import orjson
import pyarrow.parquet as pq

from bench.http_load import Load, drive
from scripts.build_models import build_all
from tests.support import LocalHost, copy_examples, free_port

ROUNDS = 3
CONNECTIONS = 16
FLOWER = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def _settings(tmp: Path, label: str) -> dict[str, str]:
    logs = str(tmp / "logs" / label.replace(" ", "-"))
    unreachable = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        f"BlobEndpoint=http://127.0.0.1:{free_port()}/devstoreaccount1;"
    )
    return {
        "off": {},
        "10 %": {"MLFN_PAYLOAD_LOG": logs, "MLFN_PAYLOAD_LOG_SAMPLE": "0.1"},
        "every request": {"MLFN_PAYLOAD_LOG": logs},
        "every request, storage unreachable": {
            "MLFN_PAYLOAD_LOG": "az://payload-log",
            "AzureWebJobsStorage": unreachable,
            "MLFN_PAYLOAD_LOG_FLUSH_ROWS": "1000",
            "MLFN_PAYLOAD_LOG_BUFFER_ROWS": "5000",
        },
    }[label]


LABELS = ("off", "10 %", "every request", "every request, storage unreachable")


def run(
    seconds: float, rounds: int = ROUNDS, warm_up: float = 2.0
) -> tuple[dict[str, Load], dict[str, int]]:
    body = orjson.dumps({"instances": [FLOWER]})
    best: dict[str, Load] = {}
    written: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="mlfn-plog-") as name:
        tmp = Path(name)
        build_all(tmp / "models")
        app = copy_examples(tmp / "app")
        for _ in range(rounds):
            for label in LABELS:
                env = {
                    "MLFN_MODEL_STORE": str(tmp / "models"),
                    "MLFN_CACHE_DIR": str(tmp / "cache"),
                    **_settings(tmp, label),
                }
                host = LocalHost(app, env, ("--no-queues",)).start()
                url = f"{host.url}/api/iris/predict"
                try:
                    r = httpx.post(url, content=body, headers={"content-type": "application/json"})
                    assert r.status_code == 200, r.text
                    # The steady state: the log's first flushes (and, unreachable, its full
                    # buffer and the storage SDK's import) behind it, as after a minute of traffic.
                    drive(url, body, CONNECTIONS, warm_up)
                    load = drive(url, body, CONNECTIONS, seconds)
                finally:
                    host.stop()
                if label not in best or load.requests_per_s > best[label].requests_per_s:
                    best[label] = load
        for label in LABELS[1:3]:
            folder = tmp / "logs" / label.replace(" ", "-")
            written[label] = sum(pq.read_metadata(f).num_rows for f in folder.rglob("*.parquet"))
    return best, written


def table(best: dict[str, Load], written: dict[str, int]) -> str:
    off = best["off"]
    lines = [
        f"| payload log, iris, mlfn serve at {CONNECTIONS} connections (wrk) | req/s | "
        "x of off | p50 | p99 |",
        "|---|---:|---:|---:|---:|",
    ]
    for label in LABELS:
        load = best[label]
        ratio = load.requests_per_s / off.requests_per_s
        lines.append(
            f"| {label} | {load.requests_per_s:.0f} | {ratio:.2f}x"
            f" | {load.p50_ms:.2f} ms | {load.p99_ms:.2f} ms |"
        )
    counts = ", ".join(f"{label}: {n}" for label, n in written.items())
    lines.append(f"| records written over all rounds ({counts}) | | | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    quick = parser.parse_args().quick
    started = time.perf_counter()
    print(table(*run(0.5 if quick else 4.0, 1 if quick else ROUNDS, 0.5 if quick else 2.0)))
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()

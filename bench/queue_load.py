"""Queue scoring under load: ``mlfn serve``'s queue trigger against the least any consumer can
do on the same queue: receive, ``session.run``, send the result, delete.

    python -m scripts.azurite run -- python -m bench.queue_load [--quick]

Both drain the same number of request messages (8 MLP rows each) from an Azurite queue that
was filled beforehand; the time runs from the consumer's start (the host listening, or the
loop's first receive) until the last result is on the results queue.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient

from bench.http_load import build_app
from tests.support import LocalHost

ROWS_PER_MESSAGE = 8


@dataclass(frozen=True)
class Drained:
    messages: int
    seconds: float

    @property
    def messages_per_s(self) -> float:
        return self.messages / self.seconds

    @property
    def rows_per_s(self) -> float:
        return self.messages * ROWS_PER_MESSAGE / self.seconds


def _queue(conn: str, name: str) -> QueueClient:
    """The queue, created if missing and emptied (an earlier run may have left messages)."""
    client = QueueClient.from_connection_string(conn, name)
    with contextlib.suppress(ResourceExistsError):
        client.create_queue()
    client.clear_messages()
    return client


def _fill(queue: QueueClient, count: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        rows = rng.standard_normal((ROWS_PER_MESSAGE, 256)).astype(np.float32).tolist()
        body = json.dumps({"id": f"m{i}", "instances": [{"x": r} for r in rows]})
        queue.send_message(base64.b64encode(body.encode()).decode())


def _wait_for(queue: QueueClient, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while queue.get_queue_properties().approximate_message_count < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {count} results after {timeout}s")
        time.sleep(0.05)


def mlfn(conn: str, app: Path, tmp: Path, count: int) -> Drained:
    # The endpoint's own queues; the other endpoint of the app (mlp_single) gets no messages.
    requests, results = _queue(conn, "mlp-requests"), _queue(conn, "mlp-results")
    _fill(requests, count)
    env = {"AzureWebJobsStorage": conn, "MLFN_CACHE_DIR": str(tmp / "cache")}
    started = time.perf_counter()
    host = LocalHost(app, env).start()
    try:
        _wait_for(results, count, timeout=600)
        return Drained(count, time.perf_counter() - started)
    finally:
        host.stop()


def raw_loop(conn: str, model: Path, count: int) -> Drained:
    """One process, one loop: receive up to 32, run each, send its result, delete it."""
    prefix = f"r{uuid.uuid4().hex[:8]}"
    requests, results = _queue(conn, f"{prefix}-req"), _queue(conn, f"{prefix}-res")
    _fill(requests, count)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    started = time.perf_counter()
    done = 0
    while done < count:
        for message in requests.receive_messages(messages_per_page=32, max_messages=32):
            doc = json.loads(base64.b64decode(message.content))
            x = np.array([i["x"] for i in doc["instances"]], dtype=np.float32)
            (y,) = session.run(None, {"x": x})
            out = json.dumps({"id": doc["id"], "predictions": [{"y": r} for r in y.tolist()]})
            results.send_message(base64.b64encode(out.encode()).decode())
            requests.delete_message(message)
            done += 1
    return Drained(count, time.perf_counter() - started)


def run(count: int) -> tuple[Drained, Drained]:
    conn = os.environ["AzureWebJobsStorage"]  # noqa: SIM112 - Azure's own name
    with tempfile.TemporaryDirectory(prefix="mlfn-queue-") as name:
        tmp = Path(name)
        app, model = build_app(tmp)
        theirs = raw_loop(conn, model, count)
        mine = mlfn(conn, app, tmp, count)
    return mine, theirs


def table(mine: Drained, theirs: Drained) -> str:
    return "\n".join(
        [
            f"| queue scoring, {mine.messages} messages x {ROWS_PER_MESSAGE} MLP rows (Azurite) "
            "| messages/s | rows/s |",
            "|---|---:|---:|",
            f"| mlfn serve, queue trigger | {mine.messages_per_s:.0f} | {mine.rows_per_s:.0f} |",
            f"| raw receive -> run -> send -> delete loop | {theirs.messages_per_s:.0f} "
            f"| {theirs.rows_per_s:.0f} |",
            f"| mlfn / raw | {mine.messages_per_s / theirs.messages_per_s:.2f}x | |",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    args = parser.parse_args()
    print(table(*run(20 if args.quick else 400)))


if __name__ == "__main__":
    main()

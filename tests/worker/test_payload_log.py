"""The payload log inside the Functions worker's own code: records of HTTP and queue
invocations, written when the worker's process ends (the buffer holds them until then)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from tests.conftest import AzuriteInfo
from tests.support import copy_examples
from tests.worker.conftest import (
    FLOWER,
    JSON,
    app_settings,
    example_settings,
    needs_worker_code,
    predict_body,
)
from tests.worker.harness import HttpCall, QueueCall, http_answer, run_in_fresh_worker

pytestmark = needs_worker_code


def test_the_records_of_a_workers_invocations_are_written_as_its_process_ends(
    tmp_path: Path, azurite: AzuriteInfo, store: str
) -> None:
    app = copy_examples(tmp_path / "app")
    logs = tmp_path / "logs"
    settings = app_settings(
        **example_settings(azurite, store, tmp_path / "cache"),
        MLFN_PAYLOAD_LOG=str(logs),
        MLFN_PAYLOAD_LOG_FLUSH_S="3600",  # nothing written before the end
    )
    calls = [
        HttpCall("POST", "/api/iris/predict", (*JSON, ("x-request-id", f"w-{i}")),
                 predict_body(FLOWER, FLOWER))
        for i in range(3)
    ] + [QueueCall("iris_queue", json.dumps({"id": "job-w", "instances": [FLOWER]}))]  # fmt: skip

    responses = run_in_fresh_worker(app, calls, settings)

    assert [http_answer(r).status for r in responses[:3]] == [200, 200, 200]
    records = [pq.read_table(f).to_pylist() for f in logs.rglob("*.parquet")]
    rows = [row for file in records for row in file]
    assert sorted((r["request_id"], r["row"]) for r in rows) == sorted(
        [(f"w-{i}", n) for i in range(3) for n in (0, 1)] + [("job-w", 0)]
    )
    http = [r for r in rows if r["source"] == "http"]
    assert all(r["invocation_id"] for r in http)  # the worker's invocation ids

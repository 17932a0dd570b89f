"""The payload log under ``mlfn serve``, its files in Azurite: after N requests and a SIGTERM,
the files hold exactly the sampled records, readable by pyarrow and pandas with their types."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from azure.storage.blob import ContainerClient

from runtime.payload_log.records import EndpointLog
from tests.conftest import AzuriteInfo
from tests.support import LocalHost, app_env, copy_examples

FLOWER = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
REQUESTS = 300


def test_after_a_sigterm_the_files_hold_exactly_the_sampled_records(
    tmp_path: Path, azurite: AzuriteInfo, models_in_blob: str
) -> None:
    container = f"log{uuid.uuid4().hex[:12]}"
    env = app_env(
        azurite.connection_string, models_in_blob, tmp_path,
        MLFN_PAYLOAD_LOG=f"az://{container}/run-1", MLFN_PAYLOAD_LOG_SAMPLE="0.1",
    )  # fmt: skip
    # No queue listeners: the run's Azurite is shared, and its iris queues are other tests'.
    host = LocalHost(copy_examples(tmp_path / "app"), env, ("--no-queues",)).start()
    try:
        with host.client() as client:
            for i in range(REQUESTS):
                body = {"instances": [FLOWER, {**FLOWER, "petal_length": 1.0 + i / 100}]}
                answer = client.post(
                    "/api/iris/predict", json=body, headers={"x-request-id": f"req-{i}"}
                )
                assert answer.status_code == 200
    finally:
        host.stop()  # SIGTERM: what waits in the buffer is written on the way out
    assert host.process is not None and host.process.returncode in (0, -15), host.output()

    blobs = ContainerClient.from_connection_string(azurite.connection_string, container)
    try:
        names = [b.name for b in blobs.list_blobs(name_starts_with="run-1/iris/")]
        tables = [pq.read_table(io.BytesIO(blobs.download_blob(n).readall())) for n in names]
    finally:
        blobs.delete_container()

    sampling = EndpointLog("iris", 0.1, 0.0, None)  # type: ignore[arg-type]
    expected = {f"req-{i}" for i in range(REQUESTS) if sampling.sampled(f"req-{i}")}
    records = pd.concat([t.to_pandas() for t in tables], ignore_index=True)
    assert records.groupby("request_id").size().to_dict() == {r: 2 for r in expected}
    assert 10 <= len(expected) <= 55  # about a tenth
    assert tables[0].schema.field("input_petal_length").type == pa.float64()
    assert tables[0].schema.field("prediction_label").type == pa.string()
    assert records["trace_id"].str.fullmatch("[0-9a-f]{32}").all()  # the host's trace
    assert records["invocation_id"].notna().all()
    assert f"{2 * len(expected)} records written to az://{container}/run-1" in host.output()

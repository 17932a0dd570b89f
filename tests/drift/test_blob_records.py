"""``mlfn drift`` over record files in Blob Storage (``az://CONTAINER/PREFIX``), on Azurite."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
from azure.storage.blob import ContainerClient
from click.testing import CliRunner

from runtime.cli import main
from runtime.config import Settings
from runtime.drift.records import Window, root_of
from tests.conftest import AzuriteInfo
from tests.drift.records import features, partition, record_table, write_reference


def upload(client: ContainerClient, name: str, table: object) -> None:
    sink = io.BytesIO()
    pq.write_table(table, sink)  # type: ignore[arg-type]
    client.upload_blob(name, sink.getvalue(), overwrite=True)


def test_records_in_blob_storage_are_listed_by_partition_and_compared(
    azurite: AzuriteInfo, container: str, tmp_path: Path
) -> None:
    client = ContainerClient.from_connection_string(azurite.connection_string, container)
    now = datetime.now(UTC)
    old = now - timedelta(days=3)
    upload(client, f"logs/{partition(now)}/a.parquet", record_table(
        features(30, 1500, shift_width=0.3), [now - timedelta(minutes=5)] * 1500))  # fmt: skip
    upload(client, f"logs/{partition(old)}/old.parquet", record_table(features(31, 10), [old] * 10))
    client.upload_blob(f"logs/{partition(now)}/notes.txt", b"not a record file")
    client.upload_blob(f"logs/{partition(now, 'other')}/b.parquet", b"another endpoint's")
    settings = Settings.from_mapping({"AzureWebJobsStorage": azurite.connection_string})

    root = root_of(f"az://{container}/logs", settings)
    try:
        listed = root.files("iris", Window.last(timedelta(hours=24), now))
    finally:
        root.close()
    assert [f.name for f in listed] == [f"az://{container}/logs/{partition(now)}/a.parquet"]

    reference = write_reference(tmp_path / "train.parquet")
    result = CliRunner().invoke(
        main,
        ["drift", "iris", "--reference", str(reference), "--logs", f"az://{container}/logs/",
         "--report", str(tmp_path / "r.html")],
        env={"AzureWebJobsStorage": azurite.connection_string, "MLFN_PAYLOAD_LOG": None},
    )  # fmt: skip

    print(result.output)
    assert result.exit_code == 1
    assert result.output.startswith("field ")
    assert result.output.splitlines()[1].startswith("sepal_width ")
    assert "1,500 successful records of 1,500 in 1 file of" in result.output


def test_a_missing_container_is_a_usage_error(azurite: AzuriteInfo, tmp_path: Path) -> None:
    reference = write_reference(tmp_path / "train.parquet", n=100)

    result = CliRunner().invoke(
        main,
        ["drift", "iris", "--reference", str(reference), "--logs", "az://no-such-container",
         "--connection", azurite.connection_string],
    )  # fmt: skip

    assert result.exit_code == 2
    assert "Error: container no-such-container does not exist" in result.output

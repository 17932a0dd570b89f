"""Blobs stored with a Content-Encoding, against real Azurite: batch files and claim checks are
inflated a piece at a time with the endpoint's limits holding on the inflated bytes, so a gzip
bomb (small stored, huge inflated) costs no more memory than those limits."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient, ContentSettings

from runtime.config import Settings, storage_account
from runtime.errors import BadRequest, MlfnError, PayloadTooLarge, UnsupportedEncoding
from runtime.protocol import batch, jobs
from runtime.protocol.batch_formats import read_rows
from runtime.storage import blob_files
from runtime.storage.payloads import Payloads
from tests.bombs import MiB, gzip_bomb, peak_growth
from tests.conftest import AzuriteInfo

BOUND = 64 * MiB  # the bound on a bomb's cost, whatever its inflated size


def _upload(azurite: AzuriteInfo, container: str, path: str, data: bytes, encoding: str) -> None:
    client = ContainerClient.from_connection_string(azurite.connection_string, container)
    settings = ContentSettings(content_encoding=encoding)
    client.upload_blob(path, data, overwrite=True, content_settings=settings)


def _payloads(azurite: AzuriteInfo) -> Payloads:
    account = storage_account("AzureWebJobsStorage", azurite.connection_string)
    return Payloads(Settings(storage_connection=account))


def test_a_gzip_bomb_claim_check_is_refused_as_soon_as_it_inflates_past_the_limit(
    azurite: AzuriteInfo, container: str
) -> None:
    bomb = gzip_bomb(b'{"x": 1}\n', 256 * MiB, fill=b" ")  # 256 MiB of whitespace, ~260 KB
    _upload(azurite, container, "bomb.jsonl", bomb, "gzip")
    limit = 16 * MiB
    read = _payloads(azurite).read_instances
    refused, grew = peak_growth(lambda: read(f"{container}/bomb.jsonl", limit))
    assert isinstance(refused, PayloadTooLarge), refused
    assert refused.type == "PayloadTooLarge" and not refused.retryable
    assert f"inflates to more than this endpoint's limit of {limit} bytes" in refused.message
    assert grew < BOUND, f"peak RSS grew by {grew / MiB:.0f} MiB"


def test_a_gzip_encoded_claim_check_within_the_limit_is_read_inflated(
    azurite: AzuriteInfo, container: str
) -> None:
    instances = [{"x": i} for i in range(100)]
    _upload(azurite, container, "in.jsonl", gzip.compress(jobs.encode_instances(instances)),
            "gzip")  # fmt: skip
    assert _payloads(azurite).read_instances(f"{container}/in.jsonl", 4096) == instances


@pytest.mark.parametrize(
    ("encoding", "data", "error", "says"),
    [
        ("br", b"\x0b\x02\x80{}\x03", UnsupportedEncoding, "Content-Encoding 'br'"),
        ("gzip", b"not gzip at all", BadRequest, "cannot be inflated"),
        # mtime=0: the same bytes, so the same test id, in every process that collects it.
        ("gzip", gzip.compress(b'{"x": 1}\n' * 100, mtime=0)[:-30], BadRequest, "ends before"),
    ],
)
def test_a_claim_check_that_cannot_be_inflated_is_refused_for_good(
    azurite: AzuriteInfo, container: str, encoding: str, data: bytes, error: type, says: str
) -> None:
    _upload(azurite, container, "odd.jsonl", data, encoding)
    with pytest.raises(error, match=says) as caught:
        _payloads(azurite).read_instances(f"{container}/odd.jsonl", 4096)
    assert isinstance(caught.value, MlfnError) and not caught.value.retryable


def _version(azurite: AzuriteInfo, container: str, path: str) -> tuple[object, int, str, str]:
    client = ContainerClient.from_connection_string(azurite.connection_string, container)
    blob = client.get_blob_client(path)
    props = blob.get_blob_properties()
    return blob, int(props.size), str(props.etag), str(props.content_settings.content_encoding)


def test_a_gzip_bomb_batch_file_is_read_inflated_a_piece_at_a_time(
    azurite: AzuriteInfo, container: str
) -> None:
    # 1 GiB of one line between two rows, ~1 MB stored: the long line is its row's error.
    bomb = gzip_bomb(b'{"x": 1}\n', 1024 * MiB, b'\n{"x": 2}\n')
    _upload(azurite, container, "bomb.jsonl", bomb, "gzip")
    blob, size, etag, encoding = _version(azurite, container, "bomb.jsonl")
    assert size == len(bomb) < 2 * MiB

    def read() -> list[object]:
        source = blob_files.open_version(blob, size, etag, encoding)  # type: ignore[arg-type]
        chunks = read_rows(batch.Format.JSONL, source, 64, 1 * MiB, 1 * MiB)
        return [r if isinstance(r, dict) else r.message for c in chunks for r in c]

    rows, grew = peak_growth(read)
    assert rows == [{"x": 1}, f"row is longer than the limit of {MiB} bytes", {"x": 2}], rows
    assert grew < BOUND, f"peak RSS grew by {grew / MiB:.0f} MiB"


def test_a_gzip_encoded_parquet_file_is_refused_naming_the_encoding(
    azurite: AzuriteInfo, container: str
) -> None:
    _upload(azurite, container, "rows.parquet", gzip.compress(b"PAR1...PAR1"), "gzip")
    blob, size, etag, encoding = _version(azurite, container, "rows.parquet")
    with pytest.raises(UnsupportedEncoding, match="Content-Encoding 'gzip'") as caught:
        blob_files.open_version(blob, size, etag, encoding, seekable=True)  # type: ignore[arg-type]
    assert not caught.value.retryable and "without a Content-Encoding" in caught.value.message


def test_inflating_stops_at_what_each_read_asks_for() -> None:
    # Concatenated gzip members are one file, as gzip(1) reads them.
    data = gzip.compress(b"a" * 100_000) + gzip.compress(json.dumps({"b": 2}).encode())
    inflated = blob_files.inflating(io.BytesIO(data), "gzip", "test")
    assert inflated.raw.read(10) == b"a" * 10
    assert inflated.read() == b"a" * 99_990 + b'{"b": 2}'


def test_a_model_stored_with_a_content_encoding_downloads_as_stored(
    azurite: AzuriteInfo, container: str, tmp_path: Path
) -> None:
    # Its size and digest are the stored bytes': the SDK inflated it whole (and a range at a
    # time past 32 MiB, which fails), so a bomb named as a model filled the disk.
    from runtime.model_store.azure_blob import AzureBlob

    bomb = gzip_bomb(b"onnx?", 64 * MiB)
    _upload(azurite, container, "m/model.onnx", bomb, "gzip")
    settings = Settings(store_connection=storage_account("x", azurite.connection_string))
    store = AzureBlob.from_az_uri(container, "m/model.onnx", settings)
    target = tmp_path / "model.onnx"
    with target.open("wb") as into:
        got = store.download(into)
    assert got is not None and got.size == store.stat().size == len(bomb)
    assert target.read_bytes() == bomb


def test_a_result_claim_check_with_a_content_encoding_is_refused_in_one_line(
    azurite: AzuriteInfo, container: str
) -> None:
    from runtime.storage.queues import EndpointQueues

    _upload(azurite, container, "r/job.json", gzip_bomb(b'{"predictions": [', 64 * MiB), "gzip")
    queues = EndpointQueues(azurite.connection_string, "q-requests", "q-results")
    read, grew = peak_growth(lambda: queues.read_blob(f"{container}/r/job.json"))
    assert isinstance(read, UnsupportedEncoding), read
    assert "Content-Encoding 'gzip'" in read.message and "\n" not in read.message
    assert grew < BOUND, f"peak RSS grew by {grew / MiB:.0f} MiB"
    _upload(azurite, container, "r/ok.json", b'{"predictions": [1]}', "identity")
    assert queues.read_blob(f"{container}/r/ok.json") == {"predictions": [1]}

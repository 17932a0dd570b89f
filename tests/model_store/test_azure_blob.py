"""az:// models against a real Azurite, and what a caller hears when the store misbehaves."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.config import Connection, Settings, storage_account
from runtime.errors import ConfigError, ModelNotInStore, StoreUnavailable
from runtime.model_store import locate, resolve_uri
from runtime.model_store.azure_blob import AzureBlob
from tests.conftest import AzuriteInfo


def _account(connection_string: str) -> Connection:
    return storage_account("MLFN_MODEL_STORE_CONNECTION", connection_string)


def test_download_streams_the_exact_bytes_with_etag(
    azurite: AzuriteInfo, models_in_blob: str, example_models: dict[str, Path]
) -> None:
    source = locate(
        f"az://{models_in_blob}/iris.onnx",
        Settings(store_connection=_account(azurite.connection_string)),
    )
    sink = io.BytesIO()
    info = source.download(sink)
    assert sink.getvalue() == example_models["iris"].read_bytes()
    assert info.size == len(sink.getvalue()) and info.etag
    assert source.stat() == info


def test_missing_blob_and_missing_container_are_model_not_in_store(
    azurite: AzuriteInfo, container: str
) -> None:
    settings = Settings(store_connection=_account(azurite.connection_string))
    for uri in (f"az://{container}/absent.onnx", "az://no-such-container/model.onnx"):
        with pytest.raises(ModelNotInStore, match="does not exist"):
            locate(uri, settings).download(io.BytesIO())


def test_upload_records_sha256_metadata(
    azurite: AzuriteInfo, container: str, example_models: dict[str, Path]
) -> None:
    from azure.storage.blob import BlobClient

    from runtime.digest import sha256_file

    settings = Settings(store_connection=_account(azurite.connection_string))
    target = AzureBlob.from_az_uri(container, "nested/diabetes.onnx", settings)
    digest = sha256_file(example_models["diabetes"])
    target.upload(example_models["diabetes"], sha256=digest)
    props = BlobClient.from_connection_string(
        azurite.connection_string, container, "nested/diabetes.onnx"
    ).get_blob_properties()
    assert props.metadata["sha256"] == digest
    assert props.size == example_models["diabetes"].stat().st_size


def _conn(port: int) -> str:
    return (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=eA==;"
        f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback port that accepts connections and never answers: a hung store."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_closed_port_is_store_unavailable_within_seconds_with_default_retries() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the with-block ends
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="cannot be reached"):
        locate("az://models/iris.onnx", Settings(store_connection=_account(_conn(port)))).download(
            io.BytesIO()
        )
    # The SDK's own defaults retry for minutes; the runtime's bounded policy must answer in seconds.
    assert time.monotonic() - started < 30


def test_a_store_that_never_answers_times_out_as_unavailable(silent_server: int) -> None:
    settings = Settings(
        store_connection=_account(_conn(silent_server)), store_read_timeout_s=1, store_retries=1
    )
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        locate("az://models/iris.onnx", settings).download(io.BytesIO())
    assert time.monotonic() - started < 30


def test_az_models_without_a_connection_setting_name_the_key() -> None:
    with pytest.raises(ConfigError, match="MLFN_MODEL_STORE_CONNECTION"):
        locate("az://models/iris.onnx", Settings()).download(io.BytesIO())


def test_connection_falls_back_to_azure_web_jobs_storage() -> None:
    conn = Settings.from_mapping({"AzureWebJobsStorage": "A"}).store_connection
    assert conn == storage_account("AzureWebJobsStorage", "A")
    both = {"AzureWebJobsStorage": "A", "MLFN_MODEL_STORE_CONNECTION": "B"}
    conn = Settings.from_mapping(both).store_connection
    assert conn == storage_account("MLFN_MODEL_STORE_CONNECTION", "B")


@pytest.mark.parametrize(
    ("uri", "store", "expected"),
    [
        ("iris.onnx", "az://models", "az://models/iris.onnx"),
        ("v2/iris.onnx", "az://models/", "az://models/v2/iris.onnx"),
        ("az://other/x.onnx", "az://models", "az://other/x.onnx"),
        ("/abs/x.onnx", "az://models", "/abs/x.onnx"),
        ("./bundled/x.onnx", "az://models", "file:///app/bundled/x.onnx"),
        ("iris.onnx", "/srv/models", "/srv/models/iris.onnx"),
        ("iris.onnx", "build/models", "file:///app/build/models/iris.onnx"),
    ],
)
def test_model_references_resolve_against_the_store_or_the_app_root(
    uri: str, store: str, expected: str
) -> None:
    assert resolve_uri(uri, Settings(model_store=store), Path("/app")) == expected


def test_relative_model_without_a_store_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="MLFN_MODEL_STORE"):
        resolve_uri("iris.onnx", Settings(), Path("/app"))


def test_bad_numeric_setting_names_the_key() -> None:
    with pytest.raises(ConfigError, match="MLFN_STORE_READ_TIMEOUT_S"):
        Settings.from_mapping({"MLFN_STORE_READ_TIMEOUT_S": "soon"})


def test_mlfn_upload_to_a_container_keeps_the_file_s_name_and_a_bare_container_is_one_line(
    azurite: AzuriteInfo,
    container: str,
    example_models: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from azure.storage.blob import ContainerClient
    from click.testing import CliRunner

    from runtime.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    model = str(example_models["iris"])
    kept = CliRunner().invoke(main, ["upload", model, f"az://{container}/"])
    assert kept.exit_code == 0, kept.output
    client = ContainerClient.from_connection_string(azurite.connection_string, container)
    assert [b.name for b in client.list_blobs()] == ["iris.onnx"]
    bare = CliRunner().invoke(main, ["upload", model, f"az://{container}"])
    assert bare.exit_code == 1 and isinstance(bare.exc_info and bare.exc_info[1], SystemExit)
    assert "az:// URIs need a container and a path" in bare.output

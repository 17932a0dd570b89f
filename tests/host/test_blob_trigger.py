"""The local host runs blob triggers of any v2 app: a hand-written one, with the default
(polling) source and a queue output, run once per blob version, retried, and poisoned after
five failures, as the Functions host does."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import ContainerClient

from runtime.host.blob_listener import POISON_QUEUE, BlobPath, receipt_path
from runtime.protocol import batch
from tests.conftest import AzuriteInfo
from tests.support import ROOT, LocalHost, queue_client, wait_for

APP = """
import json
import azure.functions as func

app = func.FunctionApp()


@app.blob_trigger(arg_name="blob", path="PREFIX-inbox/in/{name}.txt", connection="AzureWebJobsStorage")
@app.queue_output(arg_name="out", queue_name="PREFIX-seen", connection="AzureWebJobsStorage")
def on_blob(blob: func.InputStream, out: func.Out[str]) -> None:
    data = blob.read()
    if data.startswith(b"fail"):
        raise ValueError("told to fail")
    out.set(json.dumps({
        "name": blob.name, "length": blob.length, "bytes": data.decode(),
        "etag": blob.blob_properties["ETag"], "uri": blob.uri,
    }))
"""


# The blob extension package's own SDK type: the host sends a reference, the package's
# converter makes a BlobClient of it, and the function reads the blob itself.
SDK_APP = """
import json
import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob

app = func.FunctionApp()


@app.blob_trigger(arg_name="client", path="PREFIX-inbox/{name}", connection="AzureWebJobsStorage")
@app.queue_output(arg_name="out", queue_name="PREFIX-seen", connection="AzureWebJobsStorage")
def on_blob(client: blob.BlobClient, out: func.Out[str]) -> None:
    out.set(json.dumps({
        "kind": type(client).__module__ + "." + type(client).__name__,
        "container": client.container_name, "name": client.blob_name,
        "bytes": client.download_blob().readall().decode(),
    }))
"""


def _app(tmp_path: Path, prefix: str, source: str = APP) -> Path:
    app = tmp_path / "plain"
    app.mkdir()
    (app / "function_app.py").write_text(source.replace("PREFIX", prefix))
    shutil.copy(ROOT / "host.json", app / "host.json")
    return app


def _inbox(connection: str, prefix: str) -> ContainerClient:
    inbox = ContainerClient.from_connection_string(connection, f"{prefix}-inbox")
    with contextlib.suppress(ResourceExistsError):
        inbox.create_container()
    return inbox


def _seen(connection: str, prefix: str, want: int, timeout: float) -> list[dict[str, Any]]:
    queue = queue_client(connection, f"{prefix}-seen")
    got: list[dict[str, Any]] = []

    def enough() -> bool:
        for message in queue.receive_messages(max_messages=32):
            got.append(json.loads(base64.b64decode(message.content)))
            queue.delete_message(message)
        return len(got) >= want

    wait_for(enough, timeout, f"{want} messages on {prefix}-seen")
    return got


def test_a_plain_app_s_blob_trigger_runs_once_per_blob_version(
    tmp_path: Path, azurite: AzuriteInfo
) -> None:
    prefix = f"p{uuid.uuid4().hex[:10]}"
    conn = azurite.connection_string
    inbox = _inbox(conn, prefix)
    etag = inbox.get_blob_client("in/hello.txt").upload_blob(b"hi", overwrite=True)["etag"]
    inbox.get_blob_client("out/ignored.txt").upload_blob(b"not under in/")
    inbox.get_blob_client("in/ignored.csv").upload_blob(b"not a .txt")
    env = {"AzureWebJobsStorage": conn, "MLFN_HOST_BLOB_SCAN_S": "0.2"}
    host = LocalHost(_app(tmp_path, prefix), env).start()
    try:
        first = _seen(conn, prefix, 1, 60)
        newer = inbox.get_blob_client("in/hello.txt").upload_blob(b"hi again", overwrite=True)
        second = _seen(conn, prefix, 1, 60)
        failing = inbox.get_blob_client("in/bad.txt").upload_blob(b"fail, please")
        poison = queue_client(conn, POISON_QUEUE)
        poisoned: list[dict[str, Any]] = []

        def arrived() -> bool:
            for m in poison.receive_messages(max_messages=32):
                doc = json.loads(base64.b64decode(m.content))
                if doc["ContainerName"] == f"{prefix}-inbox":
                    poisoned.append(doc)
                    poison.delete_message(m)
            return bool(poisoned)

        wait_for(arrived, 60, "the poison message")
    finally:
        host.stop()
    assert first == [
        {
            "name": f"{prefix}-inbox/in/hello.txt",
            "length": 2,
            "bytes": "hi",
            "etag": etag,
            "uri": f"{inbox.url}/in/hello.txt",
        }
    ]
    assert second[0]["bytes"] == "hi again" and second[0]["etag"] == newer["etag"] != etag
    assert poisoned == [
        {
            "Type": "BlobTrigger",
            "FunctionId": "Host.Functions.on_blob",
            "BlobType": "BlockBlob",
            "ContainerName": f"{prefix}-inbox",
            "BlobName": "in/bad.txt",
            "ETag": failing["etag"],
        }
    ]
    log = host.output()
    assert log.count("Executed 'Functions.on_blob' (Failed") == 5  # five tries, no sixth
    assert log.count("Executed 'Functions.on_blob' (Succeeded") == 2  # the ignored ones never ran


def test_a_plain_app_s_sdk_type_blob_trigger_gets_a_client_not_the_bytes(
    tmp_path: Path, azurite: AzuriteInfo
) -> None:
    prefix = f"p{uuid.uuid4().hex[:10]}"
    conn = azurite.connection_string
    _inbox(conn, prefix).get_blob_client("in/hello.txt").upload_blob(b"hi")
    env = {"AzureWebJobsStorage": conn, "MLFN_HOST_BLOB_SCAN_S": "0.2"}
    host = LocalHost(_app(tmp_path, prefix, SDK_APP), env).start()
    try:
        seen = _seen(conn, prefix, 1, 60)
    finally:
        host.stop()
    assert seen == [
        {
            "kind": "azure.storage.blob._blob_client.BlobClient",
            "container": f"{prefix}-inbox",
            "name": "in/hello.txt",
            "bytes": "hi",
        }
    ]


def test_a_receipt_s_name_fits_azure_s_limit_whatever_the_blob_s_name() -> None:
    # Azure refuses names over 1,024 characters (Azurite does not check): without room for the
    # prefix, every claim of the receipt would fail and the blob would never run.
    prefix = "blobreceipts/local-app-0123abcd/Host.Functions.flowers_batch"
    short = receipt_path(prefix, '"0x8DD"', "inbox", "in/a.txt")
    assert short == f"{prefix}/0x8DD/inbox/in/a.txt"  # as the host names it
    names = ["in/" + "n" * 1000 + ".txt", "in/" + "n" * 1000 + ".csv", "n" * 1024]
    paths = [receipt_path(prefix, '"0x8DD"', "inbox", n) for n in names]
    assert all(len(p) <= 1024 for p in paths) and len(set(paths)) == 3, paths
    # Azure's other limit, 254 '/'-separated parts, by the rule result names follow.
    deep = receipt_path(prefix, '"0x8DD"', "inbox", "d/" * 250 + "f.txt")
    assert deep.count("/") < batch.MAX_SEGMENTS, deep
    assert deep == f"{prefix}/0x8DD/inbox/{batch.hashed_name('d/' * 250 + 'f.txt')}"


@pytest.mark.parametrize(
    ("path", "blob", "matches"),
    [
        ("c/{name}", "a/b.csv", True),
        ("c/in/{name}.csv", "in/x.csv", True),
        ("c/in/{name}.csv", "in/x.csv.bak", False),
        ("c/in/{name}.csv", "out/x.csv", False),
        ("c", "anything", True),
    ],
)
def test_trigger_paths_match_as_the_host_reads_them(path: str, blob: str, matches: bool) -> None:
    assert BlobPath(path).matches(blob) is matches


def test_a_renewal_racing_the_end_of_a_run_never_leaves_it_running(azurite: AzuriteInfo) -> None:
    import threading

    from runtime.host.blob_listener import RECEIPTS_CONTAINER
    from runtime.host.storage_accounts import DONE, Receipt

    hosts = ContainerClient.from_connection_string(azurite.connection_string, RECEIPTS_CONTAINER)
    with contextlib.suppress(ResourceExistsError):
        hosts.create_container()
    statuses = []
    for _ in range(15):
        receipt = Receipt(hosts.get_blob_client(f"race/{uuid.uuid4()}"), 30)
        assert receipt.claim() == 1
        both = [threading.Thread(target=receipt.renew), threading.Thread(target=receipt.complete)]
        for t in both:
            t.start()
        for t in both:
            t.join()
        statuses.append(receipt._blob.get_blob_properties().metadata["status"])
    assert statuses == [DONE] * 15


def test_a_blob_trigger_reads_a_content_encoded_blob_as_stored_as_the_functions_host_does(
    azurite: AzuriteInfo, container: str
) -> None:
    # The Functions host hands a function the stored bytes (its SDK never inflates): a gzip
    # bomb of 256 MiB was inflated whole by the local host, and length said the stored size.
    from azure.storage.blob import ContentSettings

    from runtime.host.blob_listener import LazyBlob
    from tests.bombs import MiB, gzip_bomb, peak_growth

    bomb = gzip_bomb(b"a,b\n", 256 * MiB)
    client = ContainerClient.from_connection_string(azurite.connection_string, container)
    blob = client.upload_blob("in/bomb.csv", bomb, content_settings=ContentSettings(
        content_encoding="gzip"))  # fmt: skip
    lazy = LazyBlob(blob, container, "in/bomb.csv", blob.get_blob_properties())
    read, grew = peak_growth(lazy.read)
    assert grew < 64 * MiB, f"peak RSS grew by {grew / MiB:.0f} MiB"
    assert read == bomb and lazy.length == len(bomb)

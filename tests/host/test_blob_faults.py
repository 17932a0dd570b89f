"""A fault of one blob is that blob's warning, not its storage account being down: only an
account that does not answer, or refuses every request (401, 403, 5xx), is an outage."""

from __future__ import annotations

import contextlib
import shutil
import uuid
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.core.rest import HttpRequest
from azure.storage.blob import BlobClient, ContainerClient

from runtime.host.blob_listener import RECEIPTS_CONTAINER, host_id, receipt_path
from runtime.host.outages import StorageOutages
from tests.conftest import AzuriteInfo
from tests.support import ROOT, LocalHost, wait_for

APP = """
import azure.functions as func

app = func.FunctionApp()


@app.blob_trigger(arg_name="blob", path="PREFIX-inbox/{name}", connection="AzureWebJobsStorage")
def on_blob(blob: func.InputStream) -> None:
    pass
"""


def test_a_blob_whose_receipt_another_host_holds_is_its_own_warning_not_an_outage(
    tmp_path: Path, azurite: AzuriteInfo
) -> None:
    prefix = f"p{uuid.uuid4().hex[:10]}"
    conn = azurite.connection_string
    app = tmp_path / "app"
    app.mkdir()
    (app / "function_app.py").write_text(APP.replace("PREFIX", prefix))
    shutil.copy(ROOT / "host.json", app / "host.json")
    inbox = ContainerClient.from_connection_string(conn, f"{prefix}-inbox")
    inbox.create_container()
    etag = inbox.get_blob_client("stuck.txt").upload_blob(b"hi")["etag"]
    # The blob's receipt, due for a retry but leased by someone else: every claim this host
    # makes is refused with 412 (LeaseIdMissing) for this blob alone, scan after scan.
    hosts = ContainerClient.from_connection_string(conn, RECEIPTS_CONTAINER)
    with contextlib.suppress(ResourceExistsError):
        hosts.create_container()
    path = receipt_path(
        f"blobreceipts/{host_id(app)}/Host.Functions.on_blob",
        etag,
        inbox.container_name,
        "stuck.txt",
    )
    receipt: BlobClient = hosts.get_blob_client(path)
    receipt.upload_blob(b"", metadata={"status": "failed", "until": "0", "attempts": "1"})
    lease = receipt.acquire_lease(-1)
    env = {"AzureWebJobsStorage": conn, "MLFN_HOST_BLOB_SCAN_S": "0.2"}
    host = LocalHost(app, env).start()
    said = [f"blob {prefix}-inbox/stuck.txt:", "storage at"]
    try:
        wait_for(
            lambda: sum(host.output().count(s) for s in said) >= 3, 60, "the claim to fail thrice"
        )
    finally:
        host.stop()
        lease.break_lease(0)
        receipt.delete_blob()
        inbox.delete_container()
    output = host.output()
    assert "storage at" not in output and "answers again" not in output, output
    warnings = [line for line in output.splitlines() if said[0] in line]
    assert "LeaseIdMissing" in warnings[0] or "lease" in warnings[0].lower(), warnings[0]


def _refusal(status: int) -> HttpResponseError:
    from azure.core.pipeline.transport import HttpResponse

    class Answer(HttpResponse):
        def body(self) -> bytes:
            return b""

    answer = Answer(HttpRequest("GET", "http://127.0.0.1:1/a/c/b"), None)
    answer.status_code = status
    return HttpResponseError(message=f"status {status}", response=answer)


@pytest.mark.parametrize(
    ("status", "outage"),
    [(401, True), (403, True), (500, True), (503, True), (400, False), (404, False),
     (409, False), (412, False)],
)  # fmt: skip
def test_only_an_account_wide_refusal_is_an_outage(status: int, outage: bool) -> None:
    outages = StorageOutages()
    outages.watch("AzureWebJobsStorage", "blob")
    assert outages.failed("AzureWebJobsStorage", "127.0.0.1:1", _refusal(status)) is outage

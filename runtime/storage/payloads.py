"""Claim-check payloads in the app's storage account: queue inputs too large for a message
(``instances_blob``) and results too large for one (``results/NAME/<id>.json``)."""

from __future__ import annotations

from typing import Any

from runtime.config import STORAGE_SETTING, Settings
from runtime.errors import BadRequest, InputBlobMissing, NotFound, PayloadTooLarge
from runtime.protocol import jobs
from runtime.storage import blob_files, clients


class Payloads:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._results_container_ready = False

    def read_instances(self, ref: str, max_bytes: int) -> list[Any]:
        """The instances in blob ``ref`` (``container/path``), at most ``max_bytes`` of them
        (the endpoint's request limit holds for claim checks too)."""
        container, path = jobs.split_blob_ref(ref)
        self._check_container(container, ref)
        client = self._container(container)
        try:
            with clients.storage_errors(ref, caller_errors=True), client:
                blob = client.get_blob_client(path)
                props = blob.get_blob_properties()
                size = int(props.size)
                encoding = blob_files.encoding_of(props.content_settings.content_encoding)
                if size > max_bytes:  # told before a byte is read
                    raise PayloadTooLarge(size, max_bytes)
                # At most one byte past the limit, in case the blob grew since: never whole.
                # The stored bytes: the SDK would inflate a Content-Encoding whole first.
                data = blob.download_blob(
                    offset=0, length=max_bytes + 1, decompress=False
                ).readall()
        except NotFound:
            raise InputBlobMissing(ref) from None
        if len(data) > max_bytes:
            raise PayloadTooLarge(len(data), max_bytes)
        if encoding is not None:
            # The limit holds on the inflated bytes, checked as they are inflated.
            data = blob_files.inflate_bounded(data, encoding, max_bytes, f"{ref!r}")
        return jobs.parse_instances(data, ref)

    def _check_container(self, container: str, ref: str) -> None:
        """Claim checks are the caller's blobs: never the host's own (its keys, leases and
        receipts live in ``azure-webjobs-*``), a system container, or one outside the
        allow-list when ``MLFN_CLAIM_CHECK_CONTAINERS`` sets one."""
        allowed = self._settings.claim_check_containers
        if not jobs.is_container_name(container):
            why = "is not a valid container name"
        elif jobs.is_host_container(container):
            why = "belongs to the Functions host"
        elif allowed and container not in allowed:
            why = f"is not one of MLFN_CLAIM_CHECK_CONTAINERS ({', '.join(allowed)})"
        else:
            return
        raise BadRequest(
            f'"instances_blob" {ref!r}: container {container!r} {why}',
            detail=[{"field": "instances_blob", "message": f"container {why}"}],
        )

    def write_result(self, name: str, job_id: str, text: str) -> str:
        """Write a result document to its blob (overwriting: a redelivered message rewrites the
        same blob) and return the blob's ``container/path``."""
        ref = jobs.result_blob(name, job_id)
        container, path = jobs.split_blob_ref(ref)
        client = self._container(container)
        with clients.storage_errors(ref), client:
            if not self._results_container_ready:
                clients.create_if_missing(client.create_container)
                self._results_container_ready = True
            blob_files.write_json(client.get_blob_client(path), text.encode())
        return ref

    def _container(self, name: str) -> Any:
        conn = clients.require(self._settings.storage_connection, STORAGE_SETTING)
        return clients.container(conn, name, self._settings)

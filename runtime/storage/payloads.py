"""Claim-check payloads in the app's storage account: queue inputs too large for a message
(``instances_blob``) and results too large for one (``results/NAME/<id>.json``)."""

from __future__ import annotations

from typing import Any

from runtime.config import STORAGE_SETTING, Settings
from runtime.errors import InputBlobMissing
from runtime.protocol import jobs
from runtime.storage import clients


class Payloads:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._results_container_ready = False

    def read_instances(self, ref: str) -> list[Any]:
        """The instances in blob ``ref`` (``container/path``)."""
        container, path = jobs.split_blob_ref(ref)
        client = self._container(container)
        try:
            with clients.storage_errors(ref), client:
                data = client.get_blob_client(path).download_blob().readall()
        except clients.NotFound:
            raise InputBlobMissing(ref) from None
        return jobs.parse_instances(data, ref)

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
            client.get_blob_client(path).upload_blob(
                text.encode(), overwrite=True, content_settings=_json_content()
            )
        return ref

    def _container(self, name: str) -> Any:
        conn = clients.require(self._settings.storage_connection, STORAGE_SETTING)
        return clients.container(conn, name, self._settings, STORAGE_SETTING)


def _json_content() -> Any:
    from azure.storage.blob import ContentSettings

    return ContentSettings(content_type="application/json")

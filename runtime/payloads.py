"""Claim-check payloads in the app's storage account: queue inputs too large for a message
(``instances_blob``) and results too large for one (``results/NAME/<id>.json``)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from runtime.azure_storage import NotFound, container_client, storage_errors
from runtime.config import STORAGE_SETTING, Settings
from runtime.errors import BadRequest, MlfnError

RESULTS_CONTAINER = "results"


class InputBlobMissing(MlfnError):
    """The message names an inputs blob that does not exist: retrying cannot help."""

    status = 404


class Payloads:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._results_container_ready = False

    def read_instances(self, ref: str) -> list[Any]:
        """The instances in blob ``ref`` (``container/path``): a JSON list, or JSON Lines with
        one instance per line."""
        container, _, path = ref.partition("/")
        if not container or not path:
            raise BadRequest(
                f'"instances_blob" must be "container/path", got {ref!r}',
                detail=[{"field": "instances_blob", "message": "expected container/path"}],
            )
        client = container_client(
            self._settings.storage_connection, container, self._settings, STORAGE_SETTING
        )
        try:
            with storage_errors(ref), client:
                data = client.get_blob_client(path).download_blob().readall()
        except NotFound:
            raise InputBlobMissing(
                f"inputs blob {ref} does not exist", detail={"instances_blob": ref}
            ) from None
        return _parse_instances(data, ref)

    def write_result(self, name: str, job_id: str, text: str) -> str:
        """Write a result document to ``results/NAME/<id>.json`` (overwriting: a redelivered
        message rewrites the same blob) and return that path."""
        path = f"{name}/{job_id}.json"
        client = container_client(
            self._settings.storage_connection, RESULTS_CONTAINER, self._settings, STORAGE_SETTING
        )
        with storage_errors(f"{RESULTS_CONTAINER}/{path}"), client:
            if not self._results_container_ready:
                from azure.core.exceptions import ResourceExistsError

                with contextlib.suppress(ResourceExistsError):
                    client.create_container()
                self._results_container_ready = True
            client.get_blob_client(path).upload_blob(
                text.encode(), overwrite=True, content_settings=_json_content()
            )
        return f"{RESULTS_CONTAINER}/{path}"


def _json_content() -> Any:
    from azure.storage.blob import ContentSettings

    return ContentSettings(content_type="application/json")


def _parse_instances(data: bytes, ref: str) -> list[Any]:
    try:
        text = data.decode()
        stripped = text.lstrip()
        if stripped.startswith("["):
            doc = json.loads(text)
            if isinstance(doc, list):
                return doc
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(
            f"inputs blob {ref} is neither a JSON list nor JSON Lines: {exc}",
            detail=[{"field": "instances_blob", "message": "not JSON or JSON Lines"}],
        ) from None

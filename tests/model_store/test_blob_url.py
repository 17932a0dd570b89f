"""Blob URLs with a SAS, generated against Azurite's account key."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runtime.config import Settings
from runtime.endpoint import Model
from runtime.errors import StoreUnavailable
from runtime.model_store import locate
from runtime.models.registry import ModelRegistry
from scripts.azurite import ACCOUNT, KEY
from tests.conftest import AzuriteInfo


def _sas_url(azurite: AzuriteInfo, container: str, blob: str, key: str = KEY) -> str:
    from azure.storage.blob import BlobSasPermissions, generate_blob_sas

    sas = generate_blob_sas(
        ACCOUNT, container, blob, account_key=key,
        permission=BlobSasPermissions(read=True), expiry=datetime.now(UTC) + timedelta(hours=1),
    )  # fmt: skip
    return f"http://127.0.0.1:{azurite.blob_port}/{ACCOUNT}/{container}/{blob}?{sas}"


def test_a_sas_url_loads_and_the_secret_never_reaches_the_report(
    azurite: AzuriteInfo, models_in_blob: str, tmp_path: Path
) -> None:
    url = _sas_url(azurite, models_in_blob, "iris.onnx")
    registry = ModelRegistry(Settings(cache_dir=tmp_path / "cache"), tmp_path)
    model = registry.get("iris", Model(url))
    assert model.report is not None
    assert model.report.cache == "miss"
    assert (
        model.report.source_uri
        == f"http://127.0.0.1:{azurite.blob_port}/{ACCOUNT}/{models_in_blob}/iris.onnx"
    )
    assert [o.name for o in model.outputs] == ["label", "probabilities"]
    again = ModelRegistry(Settings(cache_dir=tmp_path / "cache"), tmp_path).get("iris", Model(url))
    assert again.report is not None and again.report.cache == "revalidated"


def test_a_sas_signed_with_the_wrong_key_is_refused_as_unavailable(
    azurite: AzuriteInfo, models_in_blob: str, tmp_path: Path
) -> None:
    import base64

    forged = _sas_url(
        azurite, models_in_blob, "iris.onnx", key=base64.b64encode(b"x" * 64).decode()
    )
    source = locate(forged, Settings(store_retries=0))
    with pytest.raises(StoreUnavailable) as info:
        source.download(io.BytesIO())
    assert "sig=" not in info.value.message

"""Model stores: turn a model URI into a source of bytes."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from runtime.config import Settings
from runtime.errors import ConfigError
from runtime.model_store.base import ModelSource, StoredObject

__all__ = ["ModelSource", "StoredObject", "locate", "resolve_uri"]

SCHEMES = "a path, file://, az://CONTAINER/PATH, s3://BUCKET/KEY or a blob https:// URL"


def resolve_uri(uri: str, settings: Settings, app_root: Path) -> str:
    """Make a model reference absolute.

    URIs with a scheme and absolute paths stand as they are; ``./x`` and ``../x`` are files
    relative to the app root (so a model can ship inside the app package); any other relative
    path is an object under ``MLFN_MODEL_STORE``.
    """
    if "://" in uri or uri.startswith("/"):
        return uri
    if uri.startswith(("./", "../")):
        return (app_root / uri).resolve().as_uri()
    base = settings.model_store
    if base is None:
        raise ConfigError(
            "MLFN_MODEL_STORE", "", f"a store URI or folder to resolve the model path {uri!r}"
        )
    joined = f"{base.rstrip('/')}/{uri}"
    if "://" not in base and not base.startswith("/"):
        return (app_root / joined).resolve().as_uri()
    return joined


def locate(uri: str, settings: Settings) -> ModelSource:
    """The source for an absolute model URI (see ``resolve_uri``)."""
    parts = urlsplit(uri)
    if uri.startswith("/") or parts.scheme == "file":
        from runtime.model_store.local import LocalFile

        return LocalFile(Path(unquote(parts.path)))
    if parts.scheme == "az":
        from runtime.model_store.azure_blob import AzureBlob

        return AzureBlob.from_az_uri(parts.netloc, parts.path.lstrip("/"), settings)
    if parts.scheme == "s3":
        from runtime.model_store.s3 import S3Object

        return S3Object(parts.netloc, parts.path.lstrip("/"), settings)
    if parts.scheme in ("https", "http"):
        from runtime.model_store.azure_blob import AzureBlob

        return AzureBlob.from_url(uri, settings)
    raise ConfigError("model uri", uri, SCHEMES)
